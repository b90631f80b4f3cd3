"""A fast CIFAR-10 network in the spirit of airbench (Keller Jordan, 2024), written for this engine.

The ideas taken from airbench's paper: a frozen first layer that whitens 2x2
patches (its filters are the eigenvectors of the training patches' covariance,
with their negatives), three conv groups of conv-pool-BN-GELU-conv-BN-GELU,
BatchNorm without a learnt scale, global max pooling and a down-scaled linear
head. With a high-momentum Nesterov SGD, label smoothing, flips and small
translations, and flip test-time augmentation (all set in params.yaml), it
reaches high accuracy in few epochs.

The whitening needs the training images: the engine calls `fit_to_data` with
a normalised sample of them before the first step of a fresh run (a resumed
run restores the filters with the other weights).
"""

from __future__ import annotations

import torch
from torch import nn


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed unit scale and a learnt shift: the scale is redundant before GELU + conv."""

    def __init__(self, channels: int, momentum: float = 0.6, eps: float = 1e-12) -> None:
        super().__init__(channels, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)


class _ConvGroup(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False),
            nn.MaxPool2d(2),
            _BatchNorm(channels_out),
            nn.GELU(),
            nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False),
            _BatchNorm(channels_out),
            nn.GELU(),
        )


class SpeedrunNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        widths: tuple[int, int, int],
        output_scale: float,
        whiten_bias_epochs: int = 0,
    ) -> None:
        super().__init__()
        channels = input_shape[0]
        patch_dims = channels * 2 * 2
        self.whiten = nn.Conv2d(channels, 2 * patch_dims, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fitted to the data, then fixed
        assert self.whiten.bias is not None  # built with bias=True
        self.whiten.bias.requires_grad_(whiten_bias_epochs > 0)  # trains in the first epochs only
        self.whiten_bias_epochs = whiten_bias_epochs
        self.groups = nn.Sequential(
            _ConvGroup(2 * patch_dims, widths[0]), _ConvGroup(widths[0], widths[1]), _ConvGroup(widths[1], widths[2])
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.output_scale = output_scale
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.whiten:
                torch.nn.init.dirac_(module.weight[: module.in_channels])  # start close to identity: trains faster

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalised training images (N, C, H, W)."""
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H-1, W-1, 2, 2
        patches = patches.transpose(1, 3).reshape(-1, images.shape[1] * 4)
        patches = patches - patches.mean(dim=0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).float()
        filters = filters.view(-1, images.shape[1], 2, 2)  # patch layout was (C, 2, 2) per row: same order
        weight = torch.cat([filters, -filters])
        self.whiten.weight.copy_(weight.to(self.whiten.weight))
        assert self.whiten.bias is not None  # built with bias=True
        self.whiten.bias.zero_()

    def start_epoch(self, epoch: int) -> None:
        """The whitening layer's bias trains for the first `whiten_bias_epochs` epochs (1-based), then stays."""
        assert self.whiten.bias is not None
        self.whiten.bias.requires_grad_(epoch <= self.whiten_bias_epochs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.groups(nn.functional.gelu(self.whiten(inputs)))
        pooled = features.amax(dim=(2, 3))
        return self.head(pooled) * self.output_scale


def speedrun_net(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 64,
    output_scale: float = 1 / 9,
    whiten_bias_epochs: int = 0,
) -> SpeedrunNet:
    """Widths (width, 4 x width, 4 x width): airbench94's 64/256/256 at the default. `whiten_bias_epochs`:
    how many epochs the whitening layer's bias trains before it is fixed (airbench94: 3; 0: never)."""
    return SpeedrunNet(input_shape, num_classes, (width, 4 * width, 4 * width), output_scale, whiten_bias_epochs)
