"""Offline stand-ins for image datasets, with real spatial structure.

Each class is a fixed drawing of a few thick strokes (a colour per stroke
when there are several channels). Each image is its class's drawing shifted
by a few pixels, dimmed at random, with pixel noise on top. Translation
makes the task easy for a small CNN and harder for a fully connected net;
a fixed pixel permutation takes locality away and so hurts the CNN. Tests
and the offline demo rely on both properties.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.config.datasets import SyntheticSizes
from cnnlab.data.tensorfiles import load_tensor_file, save_tensors

STROKES_PER_CLASS = 3
MAX_SHIFT = 3
STROKE_WIDTH = 1.2
NOISE_STD = 0.25
CHUNK = 8192


def _segment_distance(ys: torch.Tensor, xs: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
    """Distance of every grid point to the segment p0-p1 (points as (y, x))."""
    direction = p1 - p0
    length2 = direction.pow(2).sum().clamp_min(1e-6)
    t = (((ys - p0[0]) * direction[0] + (xs - p0[1]) * direction[1]) / length2).clamp(0, 1)
    return ((ys - (p0[0] + t * direction[0])) ** 2 + (xs - (p0[1] + t * direction[1])) ** 2).sqrt()


def class_drawings(num_classes: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(num_classes, channels, size + 2*MAX_SHIFT, same) float drawings in [0, 1]."""
    canvas = size + 2 * MAX_SHIFT
    grid = torch.arange(canvas, dtype=torch.float32)
    ys, xs = grid[:, None], grid[None, :]
    margin = MAX_SHIFT + 3
    drawings = torch.zeros(num_classes, channels, canvas, canvas)
    for c in range(num_classes):
        for _ in range(STROKES_PER_CLASS):
            ends = margin + torch.rand(2, 2, generator=generator) * (canvas - 2 * margin)
            stroke = torch.exp(-0.5 * (_segment_distance(ys, xs, ends[0], ends[1]) / STROKE_WIDTH) ** 2)
            colour = torch.rand(channels, generator=generator) * 0.7 + 0.3 if channels > 1 else torch.ones(1)
            drawings[c] = torch.maximum(drawings[c], colour[:, None, None] * stroke)
    return drawings


def make_images(
    count: int, drawings: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` uint8 images (N,C,size,size) with balanced-at-random labels."""
    num_classes, channels = drawings.shape[:2]
    labels = torch.randint(num_classes, (count,), generator=generator)
    images = torch.empty(count, channels, size, size, dtype=torch.uint8)
    offsets = torch.arange(size)
    for start in range(0, count, CHUNK):
        chunk_labels = labels[start : start + CHUNK]
        n = len(chunk_labels)
        dy = torch.randint(2 * MAX_SHIFT + 1, (n, 1, 1), generator=generator)
        dx = torch.randint(2 * MAX_SHIFT + 1, (n, 1, 1), generator=generator)
        rows = (dy + offsets[None, :, None]).expand(n, size, size)
        cols = (dx + offsets[None, None, :]).expand(n, size, size)
        # Advanced indexing crops a differently shifted window for every image at once.
        crops = drawings[chunk_labels[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
        brightness = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
        noisy = crops * brightness + NOISE_STD * torch.randn(crops.shape, generator=generator)
        images[start : start + n] = (noisy.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels


def make_dataset(
    sizes: SyntheticSizes, num_classes: int, channels: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test images from the same class drawings."""
    generator = torch.Generator().manual_seed(sizes.seed)
    drawings = class_drawings(num_classes, channels, size, generator)
    train_x, train_y = make_images(sizes.train_size, drawings, size, generator)
    test_x, test_y = make_images(sizes.test_size, drawings, size, generator)
    return train_x, train_y, test_x, test_y


SYNTHETIC_FILE = "synthetic.pt"


def write_synthetic(raw_dir: Path, sizes: SyntheticSizes, num_classes: int, channels: int, size: int) -> list[str]:
    train_x, train_y, test_x, test_y = make_dataset(sizes, num_classes, channels, size)
    save_tensors(
        raw_dir / SYNTHETIC_FILE,
        {"train_inputs": train_x, "train_targets": train_y, "test_inputs": test_x, "test_targets": test_y},
    )
    return [f"{SYNTHETIC_FILE}: generated with seed {sizes.seed}"]


def read_synthetic(raw_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    raw = load_tensor_file(raw_dir / SYNTHETIC_FILE, f"dvc repro download@{raw_dir.name}")
    return raw["train_inputs"], raw["train_targets"], raw["test_inputs"], raw["test_targets"]
