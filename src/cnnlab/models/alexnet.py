"""AlexNet and ZFNet, sized for 32x32 CIFAR inputs.

AlexNet (Krizhevsky et al., 2012) showed that a deep ReLU conv net, five conv
layers and three dropout-regularised FC layers, wins ImageNet. Its ImageNet
stem (11x11 stride 4 on 224x224) would shrink a 32x32 image to 8x8 at once,
so this follows the well-known CIFAR adaptation of soapisnotfat/pytorch-cifar10
(models/AlexNet.py): first conv 3x3 stride 2 padding 1 with 64 filters, then
torchvision's 192-384-256-256 conv widths with 3x3 kernels and three 2x2 max
pools (32 -> 16 -> 8 -> 4 -> 2), and a 4096-4096-classes head with dropout.
Its single-tower layout drops the two-GPU split and local response
normalisation, as torchvision's AlexNet does.

ZFNet (Zeiler & Fergus, 2013) changed only AlexNet's first layer in the
variant kept here: 11x11 stride 4 became 7x7 stride 2, a smaller kernel and
half the stride, because their visualisations showed the large stride
aliasing first-layer features and leaving dead filters. Scaled to 32x32 the
same change is: half the stride (2 -> 1), and a kernel that cannot shrink
below this AlexNet's 3x3 stays 3x3 (padding 1). The first map is therefore
32x32 instead of 16x16, every later map is twice as wide, and the flattened
features grow from 256*2*2 = 1,024 to 256*4*4 = 4,096.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlab.errors import ConfigError


class AlexNet(nn.Module):
    """Five ReLU convs with three max pools, then Dropout-FC-ReLU, Dropout-FC-ReLU, FC."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, first_stride: int = 2, dropout: float = 0.5
    ) -> None:
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, kernel_size=3, stride=first_stride, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(64, 192, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
        )
        # The flatten size depends on the input size and the first stride; a
        # dry run measures it instead of repeating the pooling arithmetic.
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        if flat == 0:
            raise ConfigError(f"alexnet/zfnet: input {tuple(input_shape)} is too small for three 2x2 max pools")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(flat, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def alexnet(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.5) -> nn.Module:
    """CIFAR AlexNet: first conv 3x3 stride 2 (soapisnotfat/pytorch-cifar10's adaptation)."""
    return AlexNet(input_shape, num_classes, first_stride=2, dropout=dropout)


def zfnet(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.5) -> nn.Module:
    """CIFAR ZFNet: the same AlexNet with the first conv's stride halved to 1 (see the module docstring)."""
    return AlexNet(input_shape, num_classes, first_stride=1, dropout=dropout)
