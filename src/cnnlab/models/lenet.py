"""LeNet: the course's small CIFAR-10 CNN, a LeNet-5 with ReLU and max pooling."""

from __future__ import annotations

from torch import Tensor, nn

from cnnlab.errors import ConfigError


class LeNet(nn.Module):
    """Conv5(6)-ReLU-Pool2, Conv5(16)-ReLU-Pool2, then 120-84-classes fully connected.

    LeNet-5's layout kept as the course's CIFAR-10 tutorial has it: ReLU and max
    pooling instead of LeCun's tanh and subsampling, which train faster and
    better. 62,006 parameters for 3x32x32 and 10 classes. It returns logits,
    not probabilities: cross-entropy applies the softmax.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        # Each unpadded 5x5 conv trims 4 pixels and each pool halves (flooring),
        # so 32x32 ends at 5x5 and MNIST's 28x28 at 4x4.
        flat_h, flat_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        if flat_h < 1 or flat_w < 1:
            raise ConfigError(f"lenet needs inputs of at least 12x12 pixels, got {height}x{width}")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * flat_h * flat_w, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
