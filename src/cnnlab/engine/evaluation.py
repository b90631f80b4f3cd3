"""A trained model on a test split: predictions, loss, accuracy, confusion, and batch-1 latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.loader import DeviceSplit, Normalizer
from cnnlab.engine.runtime import synchronize


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # confusion[true][predicted]
    predictions: torch.Tensor  # on CPU
    targets: torch.Tensor  # on CPU
    confidences: torch.Tensor  # softmax probability of the predicted class, on CPU
    images_per_second: float  # of the evaluation pass, at its batch size


@torch.no_grad()
def predict(
    model: nn.Module, inputs: torch.Tensor, normalize: Normalizer, batch_size: int, tta: str = "none"
) -> torch.Tensor:
    """Model outputs for `inputs` in eval mode, batch by batch, concatenated on the device.

    tta (test-time augmentation): "flip" averages the outputs for each image and its mirror image;
    "flip_translate" averages that, with equal weight, with the same for the image shifted one pixel up-left
    and one pixel down-right (edges reflected), as airbench's level 2.
    """
    model.eval()

    def mirrored(batch: torch.Tensor) -> torch.Tensor:
        return (model(batch).float() + model(batch.flip(-1)).float()) / 2

    def outputs(batch: torch.Tensor) -> torch.Tensor:
        batch = normalize(batch)
        if tta == "none":
            return model(batch).float()
        if tta == "flip":
            return mirrored(batch)
        height, width = batch.shape[-2:]
        padded = F.pad(batch, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]
        return (mirrored(batch) + (mirrored(shifted[0]) + mirrored(shifted[1])) / 2) / 2

    return torch.cat([outputs(batch) for batch in inputs.split(batch_size or len(inputs))])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DeviceSplit,
    normalize: Normalizer,
    batch_size: int,
    num_classes: int,
    tta: str = "none",
) -> Evaluation:
    started = time.perf_counter()
    outputs = predict(model, data.inputs, normalize, batch_size, tta)
    synchronize(outputs.device)
    seconds = time.perf_counter() - started
    loss = F.cross_entropy(outputs, data.targets).item()
    probabilities = outputs.softmax(dim=1)
    confidences, predictions = probabilities.max(dim=1)
    confusion = (
        torch.bincount(data.targets * num_classes + predictions, minlength=num_classes * num_classes)
        .view(num_classes, num_classes)
        .cpu()
    )
    per_class = confusion.diag().double() / confusion.sum(dim=1).clamp_min(1).double()
    return Evaluation(
        loss=loss,
        accuracy=(predictions == data.targets).double().mean().item(),
        per_class_accuracy=per_class.tolist(),
        confusion=confusion.tolist(),
        predictions=predictions.cpu(),
        targets=data.targets.cpu(),
        confidences=confidences.cpu(),
        images_per_second=len(data) / seconds if seconds > 0 else 0.0,
    )


@torch.no_grad()
def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass on `example` (a batch of one), in milliseconds."""
    model.eval()
    times = []
    for i in range(warmup + repeats):
        synchronize(example.device)
        started = time.perf_counter()
        model(example)
        synchronize(example.device)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]
