"""Model cost: parameters, multiply-accumulates per image, and CPU training throughput.

`python -m cnnlab.models.complexity` prints one Markdown table row per zoo
model, all measured side by side in one process so the rows compare.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cnnlab.models import build_model, count_parameters, model_names

# The CIFAR-sized zoo, smallest first; the course's MNIST and spiral models are left out.
ZOO: tuple[str, ...] = (
    "lenet",
    "alexnet",
    "zfnet",
    "vgg_course",
    "vgg16_bn",
    "googlenet",
    "resnet18",
    "mobilenet_v2",
)
CIFAR_SHAPE: tuple[int, int, int] = (3, 32, 32)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass for one image of `input_shape`.

    Counts Conv2d (output elements x in_channels/groups x kernel height x
    kernel width, so depthwise convs count what they compute) and Linear
    (in x out per sample). Biases, BatchNorm, activations, pooling, dropout
    and the additions of residual shortcuts are ignored: they are a few
    percent at most of a CNN's cost and not multiply-accumulates of weights.
    The model runs once in eval mode under no_grad on a zero image; every
    module's training flag is restored and the hooks are removed.
    """
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kernel_h, kernel_w = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kernel_h * kernel_w

    def linear_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        # output.numel() is out_features per sample times the (one) sample.
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    # Saved per module, not just the root's flag: a caller may have frozen parts (e.g. BN) in eval mode.
    modes = {module: module.training for module in model.modules()}
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return total


def _training_images_per_s(
    model: nn.Module, input_shape: tuple[int, ...], num_classes: int, batch_size: int, steps: int, warmup: int
) -> float:
    images = torch.randn(batch_size, *input_shape)
    labels = torch.randint(0, num_classes, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    # Warmup steps pay for first-call allocations and kernel selection, which a long run would not see.
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


def profile_models(
    names: Sequence[str],
    input_shape: tuple[int, ...] = CIFAR_SHAPE,
    num_classes: int = 10,
    batch_size: int = 128,
    steps: int = 5,
    warmup: int = 1,
) -> list[dict[str, object]]:
    """Parameters, MACs per image and training images/s (SGD, momentum 0.9) for each named model."""
    rows: list[dict[str, object]] = []
    for name in names:
        # Seeded per model, so each row's weights and data do not depend on which models ran before.
        torch.manual_seed(0)
        model = build_model(name, input_shape, num_classes)
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(model),
                "macs": count_macs(model, input_shape),
                "images_per_s": _training_images_per_s(model, input_shape, num_classes, batch_size, steps, warmup),
            }
        )
    return rows


def markdown_row(row: dict[str, object]) -> str:
    return f"| {row['name']} | {row['parameters']:,} | {row['macs']:,} | {row['images_per_s']:.1f} |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(ZOO),
        choices=model_names(),
        metavar="NAME",
        help="registered model names (default: the CIFAR zoo)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps before timing")
    args = parser.parse_args(argv)
    print(
        f"Input 3x32x32, 10 classes; torch {torch.__version__} on CPU with {torch.get_num_threads()} threads; "
        f"batch {args.batch_size}, {args.steps} timed SGD steps after {args.warmup} warmup.\n"
    )
    print("| model | parameters | MACs / image | train images/s |")
    print("|---|---:|---:|---:|")
    # Rows print as they finish: the large models take a while on a CPU.
    for name in args.models:
        (row,) = profile_models([name], CIFAR_SHAPE, 10, args.batch_size, args.steps, args.warmup)
        print(markdown_row(row), flush=True)


if __name__ == "__main__":
    main()
