"""Per-image random augmentation done to a whole batch at once, on its device.

Equivalent to torchvision's RandomCrop(size, padding=p) followed by
RandomHorizontalFlip() applied image by image, but as two tensor ops per
batch: a gather of shifted windows out of the batch, and a masked flip.
Works on uint8 images, before normalisation. Beyond the edge a window shows
black (`zeros`, as RandomCrop pads the PIL image) or the image mirrored at
its edge (`reflect`, as airbench pads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.config.experiments import AugmentConfig


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "zeros") -> torch.Tensor:
    """Each image shifted by its own random offset in [-padding, padding] in both axes."""
    n, channels, height, width = images.shape
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    rows = top + torch.arange(height, device=images.device)  # (n, H), in padded coordinates
    cols = left + torch.arange(width, device=images.device)  # (n, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    if mode == "reflect":  # the source pixel of each padded coordinate, mirrored at the edges (no copy padded)
        rows, cols = _reflect(rows - padding, height), _reflect(cols - padding, width)
        return images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    padded = F.pad(images, (padding, padding, padding, padding))
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored back inside without repeating the edge, as F.pad's 'reflect'."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return flip_where(images, flip)


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """The images whose entry of the boolean `flip` is true, mirrored left-right."""
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def alternating_flips(count: int, seed: int, device: torch.device) -> torch.Tensor:
    """Which of `count` images an alternating flip mirrors in odd epochs (even epochs: the others), drawn once
    from `seed`: every image is seen both ways, one after the other (airbench's derandomised flip)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(count, device=device, generator=generator) < 0.5


def augment(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator, flips: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop (if configured) and flip a batch; `flips` says which images to mirror when the flip alternates."""
    if config.crop_padding:
        images = random_crop(images, config.crop_padding, generator, config.padding_mode)
    if config.flip == "alternate":
        assert flips is not None, "an alternating flip needs the epoch's flips"
        images = flip_where(images, flips)
    elif config.flip:
        images = random_flip(images, generator)
    return images
