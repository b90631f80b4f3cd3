"""Prepared data as tensors on the training device, batched by index.

The whole dataset lives on the device for the run (MNIST is 47 MB as uint8);
a batch is a gather by shuffled indices, and normalisation happens on the
batch, on the device. No DataLoader, no worker processes, no per-image work.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cnnlab.config.experiments import NormalizeConstants, NormalizeMode
from cnnlab.data.prepared import DatasetMeta, PreparedData
from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class DeviceSplit:
    inputs: torch.Tensor  # uint8 images or float features, on the device
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Normalizer:
    """x -> (x * scale - mean) / std, per channel, as one fused multiply-add."""

    multiplier: torch.Tensor
    offset: torch.Tensor

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.offset, batch.float(), self.multiplier)


def make_normalizer(meta: DatasetMeta, mode: NormalizeMode | NormalizeConstants, device: torch.device) -> Normalizer:
    """The normaliser an experiment's `inputs.normalize` asks for, for this dataset."""
    channels = meta.input_shape[0]
    if isinstance(mode, NormalizeConstants):
        if len(mode.mean) != channels:
            raise ConfigError(f"normalize: {len(mode.mean)} mean/std values for {channels} channels of {meta.name!r}")
        mean, std = mode.mean, mode.std
    elif mode == "none":
        mean, std = (0.0,) * channels, (1.0,) * channels
    elif mode == "course":
        if meta.course_mean is None or meta.course_std is None:
            raise ConfigError(
                f"normalize: 'course' has no constants for dataset {meta.name!r}; use 'train_stats' or 'none'"
            )
        mean, std = meta.course_mean, meta.course_std
    else:
        mean, std = meta.train_mean, meta.train_std
    return constant_normalizer(mean, std, meta.is_image, device)


def constant_normalizer(
    mean: tuple[float, ...], std: tuple[float, ...], is_image: bool, device: torch.device
) -> Normalizer:
    """(x - mean) / std per channel; uint8 images are first scaled to [0, 1], as torchvision's ToTensor does."""
    scale = 1.0 / 255.0 if is_image else 1.0
    shape = (1, len(mean), 1, 1) if is_image else (1, len(mean))
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return Normalizer(multiplier=scale / std_t, offset=-mean_t / std_t)


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Apply one fixed pixel permutation to every image (all channels alike)."""
    flat = images.flatten(2)
    return flat[:, :, permutation.to(images.device)].reshape(images.shape)


def to_device(prepared: PreparedData, device: torch.device, permute: bool) -> tuple[DeviceSplit, DeviceSplit]:
    train_x, test_x = prepared.train_inputs.to(device), prepared.test_inputs.to(device)
    if permute:
        if prepared.pixel_permutation is None:
            raise ConfigError(
                f"permute_pixels: dataset {prepared.meta.name!r} has no pixel permutation (not an image dataset)"
            )
        train_x = permute_pixels(train_x, prepared.pixel_permutation)
        test_x = permute_pixels(test_x, prepared.pixel_permutation)
    return (
        DeviceSplit(train_x, prepared.train_targets.to(device)),
        DeviceSplit(test_x, prepared.test_targets.to(device)),
    )


def batch_indices(
    size: int, batch_size: int, device: torch.device, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index tensors covering range(size); shuffled when a generator is given.

    batch_size 0 means one batch of everything. The last batch may be short,
    as with a DataLoader without drop_last.
    """
    batch_size = batch_size or size
    if generator is None:
        order = torch.arange(size, device=device)
    else:
        order = torch.randperm(size, device=device, generator=generator)
    yield from order.split(batch_size)
