"""Optimizers and learning-rate schedules, as params.yaml's `train.optimizer` and `train.schedule` describe them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cnnlab.config.experiments import OptimizerConfig, ScheduleConfig


def make_optimizer(model: nn.Module, config: OptimizerConfig, fused: bool = True) -> torch.optim.Optimizer:
    """`config`'s optimizer over the model's trainable parameters (frozen ones are left out).

    fused: one kernel per step for all parameters instead of a few per tensor, same update
    rule; used where the parameters' device supports it. False gives torch's defaults.
    """
    groups = parameter_groups(model, config)
    fused = fused and _fusable(model)
    if config.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def parameter_groups(model: nn.Module, config: OptimizerConfig) -> list[dict[str, Any]]:
    """The trainable parameters as the optimizer's groups: one; or, with `norm_bias_lr_scale`, BatchNorm's
    shifts apart, at that many times the rate and as much less weight decay (so they decay as much per step)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.norm_bias_lr_scale == 1:
        return [{"params": trainable}]
    norm_biases = {
        id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
    }
    scale = config.norm_bias_lr_scale
    return [
        {
            "params": [p for p in trainable if id(p) in norm_biases],
            "lr": config.lr * scale,
            "weight_decay": config.weight_decay / scale,
        },
        {"params": [p for p in trainable if id(p) not in norm_biases]},
    ]


def _fusable(model: nn.Module) -> bool:
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


def lr_factor(config: ScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based); never above 1."""
    progress = step / max(total_steps, 1)
    warmup = config.warmup_fraction
    if warmup and progress < warmup:
        # A warm-up shorter than one step would otherwise start above the peak.
        climbed = min(1.0, (step + 1) / (warmup * total_steps))
        return config.initial_factor + (1 - config.initial_factor) * climbed
    if config.name == "constant":
        return 1.0
    remaining = (progress - warmup) / (1 - warmup)
    final = config.final_factor
    if config.name == "cosine":
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * remaining))
    return final + (1 - final) * max(0.0, 1 - remaining)  # onecycle: linear up (warm-up), linear down


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The schedule as a LambdaLR; None for a constant rate without warm-up (nothing to step)."""
    if config.name == "constant" and not config.warmup_fraction:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, total_steps))
