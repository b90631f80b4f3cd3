"""ResNet-18, CIFAR-style as in kuangliu/pytorch-cifar.

Residual blocks learn a correction F(x) added to their input, so a deeper
net can always fall back to the identity; that is what lets ResNets train
at depths where plain conv stacks get worse. ResNet-18 is four stages of
two BasicBlocks (two 3x3 convs each) at 64, 128, 256 and 512 channels. For
32x32 inputs the ImageNet stem (7x7 stride 2 conv and a 3x3 stride 2 max
pool) becomes one 3x3 stride 1 conv, so the stages work on 32, 16, 8 and
4 pixel maps instead of starting at 8x8. 11,173,962 parameters for 10 classes.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # No conv bias: the BN right after each conv has its own shift.
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            # The input must match the residual's shape to be added: a 1x1
            # projection (the paper's option B) changes channels and stride.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, four stages of BasicBlocks, global average pooling, linear head."""

    def __init__(self, blocks: tuple[int, ...], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_channels = 64
        for index, count in enumerate(blocks):
            out_channels = 64 * 2**index
            # The first block of every stage but the first halves the map as it doubles the channels.
            strides = [1 if index == 0 else 2] + [1] * (count - 1)
            for stride in strides:
                stages.append(BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


def resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2]."""
    return ResNet((2, 2, 2, 2), input_shape, num_classes)
