"""Fully connected models of the course: the spiral nets and MNIST's FC2Layer."""

from __future__ import annotations

import math

from torch import Tensor, nn


def linear(input_shape: tuple[int, ...], num_classes: int, hidden: int = 100) -> nn.Module:
    """Linear(D, H) -> Linear(H, C) with no activation between: a linear model."""
    features = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.Linear(hidden, num_classes))


def two_layer(input_shape: tuple[int, ...], num_classes: int, hidden: int = 100) -> nn.Module:
    """Linear(D, H) -> ReLU -> Linear(H, C): the spiral's two-layer net."""
    features = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class FC2Layer(nn.Module):
    """The course's MNIST fully connected net: 784 -> 8 -> 8 -> 10, 6,442 parameters."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 8) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
            nn.LogSoftmax(dim=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)
