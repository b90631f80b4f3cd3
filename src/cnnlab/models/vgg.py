"""VGG with batch norm, CIFAR-sized: stacks of 3x3 convs, five 2x2 max pools, one linear head.

VGG's point is that a stack of small 3x3 convs sees as far as one large
kernel with fewer weights and more non-linearities, so depth is bought with
a single repeated block. On 32x32 inputs the five pools leave a 1x1x512 map,
so the three 4096-wide ImageNet FC layers shrink to one Linear(512, classes),
as in kuangliu/pytorch-cifar's VGG.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cnnlab.errors import ConfigError

# An int is a Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU with that many
# channels; "M" is a 2x2 max pool.
VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    """A VGG built from a cfg of conv widths and "M" pools, BN after every conv."""

    def __init__(self, cfg: Sequence[int | str], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        pools = sum(1 for item in cfg if item == "M")
        flat_h, flat_w = height >> pools, width >> pools
        if flat_h < 1 or flat_w < 1:
            raise ConfigError(f"this VGG pools {pools} times and needs inputs of at least {2**pools}x{2**pools} pixels")
        layers: list[nn.Module] = []
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out_channels = int(item)
                layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels)]
                layers.append(nn.ReLU(inplace=True))
                channels = out_channels
        # A 1x1 stride-1 average pool is the identity; kept because the course's
        # net has it, so the module list reads like the course's.
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * flat_h * flat_w, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def vgg_course(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The course's "VGG16", which is in fact the 8-conv VGG11 layout (configuration A) with BN.

    9,231,114 parameters for 3x32x32 and 10 classes, as kuangliu's VGG11.
    """
    return VGG(VGG11_CFG, input_shape, num_classes)


def vgg16_bn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The true VGG16 (configuration D): 13 3x3 convs with BN, then the same one-layer head."""
    return VGG(VGG16_CFG, input_shape, num_classes)
