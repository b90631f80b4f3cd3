"""Per-image random augmentation done to a whole batch at once, on its device.

Equivalent to torchvision's RandomCrop(size, padding=p) followed by
RandomHorizontalFlip() applied image by image, but as two tensor ops per
batch: a gather of shifted windows out of a zero-padded batch, and a masked
flip. Works on uint8 images, before normalisation (zero padding is black, as
RandomCrop pads the PIL image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.config.experiments import AugmentConfig


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by its own random offset in [-padding, padding] in both axes."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    rows = top + torch.arange(height, device=images.device)  # (n, H)
    cols = left + torch.arange(width, device=images.device)  # (n, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    if config.crop_padding:
        images = random_crop(images, config.crop_padding, generator)
    if config.flip:
        images = random_flip(images, generator)
    return images
