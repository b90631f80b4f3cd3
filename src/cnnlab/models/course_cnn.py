"""The course's small MNIST CNN (a two-conv LeNet-like net)."""

from __future__ import annotations

from torch import Tensor, nn


class CourseCNN(nn.Module):
    """Conv5-ReLU-Pool2 twice, then 50 hidden units; 6,422 parameters for n_feature=6 on 1x28x28."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, n_feature: int = 6) -> None:
        super().__init__()
        channels, height, width = input_shape
        flat_h, flat_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, n_feature, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(n_feature, n_feature, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_feature * flat_h * flat_w, 50),
            nn.ReLU(),
            nn.Linear(50, num_classes),
            nn.LogSoftmax(dim=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
