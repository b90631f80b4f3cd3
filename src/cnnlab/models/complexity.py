"""A model's cost: multiply-accumulates per image.

Counted by hooks on the layers that do the arithmetic, not by torch.utils.flop_counter.FlopCounterMode:
the two agree on every model of the registry (tests/unit/models/test_complexity.py checks each), but
FlopCounterMode imports torch._dynamo on first use, 2.5-2.7 s of every train and evaluate stage on our
2-core CPU (measured), for a number these hooks give in milliseconds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
