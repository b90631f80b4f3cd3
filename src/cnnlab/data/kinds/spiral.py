"""The course's 2-D spiral: generated, never downloaded."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cnnlab.config.datasets import PrepareOptions, SpiralOptions
from cnnlab.data.splits import Splits
from cnnlab.data.tensorfiles import load_tensor_file, save_tensors


def make_spiral(options: SpiralOptions, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c, point i of N: radius i/(N-1), angle spread over 2/3 of a turn plus noise."""
    n, c_total = options.points_per_class, options.classes
    radius = torch.linspace(0, 1, n)
    points, labels = [], []
    for c in range(c_total):
        angle = torch.linspace(2 * math.pi * c / c_total, 2 * math.pi * (2 + c) / c_total, n)
        angle = angle + torch.randn(n, generator=generator) * options.noise
        points.append(torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1))
        labels.append(torch.full((n,), c, dtype=torch.int64))
    return torch.cat(points), torch.cat(labels)


RAW_FILE = "spiral.pt"


def acquire(dataset: str, options: SpiralOptions, raw_dir: Path) -> list[str]:
    # The test split is a second, independent draw from the same distribution.
    generator = torch.Generator().manual_seed(options.seed)
    train_x, train_y = make_spiral(options, generator)
    test_x, test_y = make_spiral(options, generator)
    save_tensors(
        raw_dir / RAW_FILE,
        {"train_inputs": train_x, "train_targets": train_y, "test_inputs": test_x, "test_targets": test_y},
    )
    return [f"{RAW_FILE}: generated with seed {options.seed}"]


def read(options: SpiralOptions, prepare: PrepareOptions, raw_dir: Path) -> Splits:
    raw = load_tensor_file(raw_dir / RAW_FILE, f"dvc repro download@{raw_dir.name}")
    return Splits(
        train_inputs=raw["train_inputs"],
        train_targets=raw["train_targets"],
        test_inputs=raw["test_inputs"],
        test_targets=raw["test_targets"],
        class_names=tuple(f"arm{c}" for c in range(options.classes)),
        origin="generated",
    )
