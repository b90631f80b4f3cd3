"""MobileNetV2, CIFAR-style as in kuangliu/pytorch-cifar.

MobileNetV2 (Sandler et al., 2018) is built for little compute: a
depthwise 3x3 conv filters each channel on its own and 1x1 convs mix
channels, which costs about 8-9 times fewer MACs than a full 3x3 conv. Its
inverted residual block expands the narrow input t-fold with a 1x1 conv,
filters it depthwise, and projects it back with a *linear* 1x1 conv (no
ReLU: on a narrow bottleneck a ReLU would destroy information); the
identity shortcut joins the narrow ends, when stride is 1 and the channels
match.

For 32x32 inputs the stem conv and the 24-channel stage use stride 1
instead of 2, as kuangliu's MobileNetV2 does, so the last stage works on a
4x4 map instead of 1x1. Unlike kuangliu's, the blocks follow the paper
(and torchvision): a block that changes channels has no shortcut, where
kuangliu adds a 1x1 conv + BN projection to the four stride-1 blocks that
change channels (59,152 parameters), and the t = 1 block has no expansion
conv, where kuangliu keeps a 32->32 one (1,088 parameters). So 2,236,682
parameters here for 10 classes against kuangliu's 2,296,922.
"""

from __future__ import annotations

from torch import Tensor, nn

# (expansion t, output channels c, blocks n, first stride s): the paper's
# Table 2, with the 24-channel stage's stride 2 -> 1 for 32x32 inputs.
CIFAR_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible(channels: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of 8 (never more than 10% down), as the reference code does for width_mult."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1
) -> nn.Sequential:
    # No conv bias: the BN right after it has its own shift.
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
    return nn.Sequential(
        conv,
        nn.BatchNorm2d(out_channels),
        # ReLU6 keeps activations in a range that survives low-precision inference, the paper's reason.
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> linear 1x1 projection, plus the input when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            # With t = 1 the expansion would be a square 1x1 conv that adds nothing; the paper skips it.
            layers.append(_conv_bn_relu6(in_channels, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """3x3 stem, 17 inverted residual blocks, 1x1 conv to 1280, global average pooling, linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width_mult: float = 1.0) -> None:
        super().__init__()
        in_channels = _divisible(32 * width_mult)
        # The paper keeps the last conv at 1280 channels for width_mult <= 1: the classifier needs them.
        last_channels = _divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn_relu6(input_shape[0], in_channels, 3, stride=1)]
        for expansion, channels, blocks, stride in CIFAR_CFG:
            out_channels = _divisible(channels * width_mult)
            for index in range(blocks):
                layers.append(InvertedResidual(in_channels, out_channels, expansion, stride if index == 0 else 1))
                in_channels = out_channels
        layers.append(_conv_bn_relu6(in_channels, last_channels, 1, 1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last_channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def mobilenet_v2(input_shape: tuple[int, ...], num_classes: int, width_mult: float = 1.0) -> nn.Module:
    """CIFAR MobileNetV2; width_mult scales every block's channels (rounded to multiples of 8)."""
    return MobileNetV2(input_shape, num_classes, width_mult=width_mult)
