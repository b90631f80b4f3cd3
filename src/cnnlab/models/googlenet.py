"""GoogLeNet (Inception v1), CIFAR-sized as in kuangliu/pytorch-cifar.

An Inception block runs 1x1, 3x3 and 5x5 convs and a 3x3 max pool side by
side and concatenates them, so each layer can pick the scale of its
features; 1x1 "reduce" convs in front of the 3x3 and 5x5 (and after the
pool) cut the channels first, which keeps the wide block cheap. The widths
are the paper's nine blocks (3a..5b). For 32x32 inputs the ImageNet stem
(7x7 stride 2, max pools, LRN) is replaced by one 3x3 conv with 192 filters
and no downsampling, as kuangliu's CIFAR GoogLeNet does; two stride-2 max
pools take 32x32 to 8x8 before global average pooling, dropout and one
linear head.

Differences from the paper, on purpose: BatchNorm after every conv (an
Inception v2 addition that lets it train from scratch without the paper's
schedule), and no auxiliary classifiers. The paper added those to push
gradient into the middle of a 22-layer net trained without BN and found
they barely help; with BN they are not needed, and CIFAR variants
(kuangliu's included) drop them. The third branch is the paper's single 5x5
conv, where kuangliu stacks two 3x3 convs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    # Padding kernel_size // 2 keeps every branch at the input's size, so they concatenate.
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->5x5; maxpool->1x1) concatenated on channels."""

    def __init__(
        self, in_channels: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(*_conv_bn_relu(in_channels, n1x1, 1))
        self.branch2 = nn.Sequential(*_conv_bn_relu(in_channels, n3x3red, 1), *_conv_bn_relu(n3x3red, n3x3, 3))
        self.branch3 = nn.Sequential(*_conv_bn_relu(in_channels, n5x5red, 1), *_conv_bn_relu(n5x5red, n5x5, 5))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1), *_conv_bn_relu(in_channels, pool_proj, 1)
        )
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class GoogLeNet(nn.Module):
    """3x3 stem, Inception 3a-3b, pool, 4a-4e, pool, 5a-5b, global average pool, dropout, linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.4) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(input_shape[0], 192, 3))
        # (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection): the paper's Table 1.
        self.inception3 = nn.Sequential(
            Inception(192, 64, 96, 128, 16, 32, 32),
            Inception(256, 128, 128, 192, 32, 96, 64),
        )
        self.inception4 = nn.Sequential(
            Inception(480, 192, 96, 208, 16, 48, 64),
            Inception(512, 160, 112, 224, 24, 64, 64),
            Inception(512, 128, 128, 256, 24, 64, 64),
            Inception(512, 112, 144, 288, 32, 64, 64),
            Inception(528, 256, 160, 320, 32, 128, 128),
        )
        self.inception5 = nn.Sequential(
            Inception(832, 256, 160, 320, 32, 128, 128),
            Inception(832, 384, 192, 384, 48, 128, 128),
        )
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(1024, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.inception3(self.stem(x))
        x = self.inception4(self.pool(x))
        x = self.inception5(self.pool(x))
        return self.head(x)


def googlenet(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.4) -> nn.Module:
    """CIFAR GoogLeNet; dropout 0.4 before the head, as in the paper."""
    return GoogLeNet(input_shape, num_classes, dropout=dropout)
