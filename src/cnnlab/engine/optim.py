"""Optimizers and learning-rate schedules, as params.yaml's `train.optimizer` and `train.schedule` describe them."""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.config.experiments import OptimizerConfig, ScheduleConfig


def make_optimizer(model: nn.Module, config: OptimizerConfig, fused: bool = True) -> torch.optim.Optimizer:
    """`config`'s optimizer over the model's trainable parameters (frozen ones are left out).

    fused: one kernel per step for all parameters instead of a few per tensor, same update
    rule; used where the parameters' device supports it. False gives torch's defaults.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = fused and _fusable(model)
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _fusable(model: nn.Module) -> bool:
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


def lr_factor(config: ScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based)."""
    progress = step / max(total_steps, 1)
    warmup = config.warmup_fraction
    if warmup and progress < warmup:
        return (step + 1) / (warmup * total_steps)
    if config.name == "constant":
        return 1.0
    remaining = (progress - warmup) / (1 - warmup)
    if config.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * remaining))
    return max(0.0, 1 - remaining)  # onecycle: linear up (warm-up), linear down


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The schedule as a LambdaLR; None for a constant rate without warm-up (nothing to step)."""
    if config.name == "constant" and not config.warmup_fraction:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, total_steps))
