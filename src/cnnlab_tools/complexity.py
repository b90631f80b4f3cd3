"""Model cost side by side: parameters, multiply-accumulates per image and CPU training throughput.

    python -m cnnlab_tools.complexity                   # every model of the zoo (params.yaml's zoo study)
    python -m cnnlab_tools.complexity --models lenet resnet18

One Markdown table row per model, all measured in one process so the rows compare.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.config.params import load_params
from cnnlab.models.complexity import count_macs, count_parameters
from cnnlab.models.registry import build_model, model_names
from cnnlab_tools.bench import ZOO_STUDY

CIFAR_SHAPE: tuple[int, int, int] = (3, 32, 32)


def zoo_models(params_file: str = "params.yaml") -> list[str]:
    """The models of the zoo's experiments, in params.yaml's order (the one list of the zoo)."""
    experiments = load_params(params_file).experiments.values()
    return list(dict.fromkeys(e.model for e in experiments if e.study == ZOO_STUDY))


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
        choices=model_names(),
        metavar="NAME",
        help="registered model names (default: the zoo's, from params.yaml)",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps before timing")
    args = parser.parse_args(argv)
    models = args.models or zoo_models(args.params)
    print(
        f"Input 3x32x32, 10 classes; torch {torch.__version__} on CPU with {torch.get_num_threads()} threads; "
        f"batch {args.batch_size}, {args.steps} timed SGD steps after {args.warmup} warmup.\n"
    )
    print("| model | parameters | MACs / image | train images/s |")
    print("|---|---:|---:|---:|")
    # Rows print as they finish: the large models take a while on a CPU.
    for name in models:
        (row,) = profile_models([name], CIFAR_SHAPE, 10, args.batch_size, args.steps, args.warmup)
        print(markdown_row(row), flush=True)


if __name__ == "__main__":
    main()
