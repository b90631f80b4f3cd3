"""Train and evaluate loops over data that already lives on the device.

Importable without DVC or MLflow: per-epoch hooks (`on_epoch`) are how a
tracker hears about progress.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.config import OptimizerConfig
from cnnlab.data.loader import DeviceSplit, Normalizer, batch_indices
from cnnlab.errors import ConfigError

DEVICE_ENV = "CNNLAB_DEVICE"
POSTFIX_EVERY_STEPS = 50  # reading the loss forces a device sync; don't do it every step


def select_device() -> torch.device:
    """CUDA when there is one, else CPU; CNNLAB_DEVICE overrides (e.g. cpu, cuda:1).

    Deliberately not a param: a CPU user must not invalidate a GPU user's cache.
    """
    requested = os.environ.get(DEVICE_ENV)
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise ConfigError(f"{DEVICE_ENV}={requested!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{DEVICE_ENV}={requested!r} but CUDA is not available here; unset it or use cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def make_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    images_per_second: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochRecord]
    train_seconds: float
    images_seen: int

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    def history_rows(self) -> list[dict[str, float]]:
        return [asdict(record) for record in self.history]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Progress:
    """A tqdm bar per epoch; for one-batch epochs (full-batch training) one bar for the run."""

    def __init__(self, epochs: int, images_per_epoch: int, steps_per_epoch: int, enabled: bool) -> None:
        self.per_run = steps_per_epoch == 1
        self.epochs, self.images, self.enabled = epochs, images_per_epoch, enabled
        self.bar: tqdm | None = None
        if self.per_run:
            self.bar = tqdm(total=epochs, unit="epoch", desc="train", disable=not enabled, dynamic_ncols=True)

    def start_epoch(self, epoch: int) -> None:
        if not self.per_run:
            self.bar = tqdm(total=self.images, unit="img", desc=f"epoch {epoch}/{self.epochs}",
                            disable=not self.enabled, dynamic_ncols=True)

    def step(self, images: int) -> None:
        if not self.per_run and self.bar is not None:
            self.bar.update(images)

    def show(self, loss: float, accuracy: float, images_per_second: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", img_s=f"{images_per_second:,.0f}")

    def end_epoch(self) -> None:
        if self.per_run and self.bar is not None:
            self.bar.update(1)
        elif self.bar is not None:
            self.bar.close()

    def close(self) -> None:
        if self.per_run and self.bar is not None:
            self.bar.close()


def train(
    model: nn.Module,
    data: DeviceSplit,
    normalize: Normalizer,
    *,
    optimizer_config: OptimizerConfig,
    epochs: int,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train in place. Shuffling draws from its own seeded generator on the data's device."""
    device = data.inputs.device
    optimizer = make_optimizer(model, optimizer_config)
    generator = torch.Generator(device=device).manual_seed(seed)
    steps_per_epoch = -(-len(data) // (batch_size or len(data)))
    bar = _Progress(epochs, len(data), steps_per_epoch, progress)
    history: list[EpochRecord] = []
    for epoch in range(1, epochs + 1):
        model.train()
        bar.start_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        started = time.perf_counter()
        for step, index in enumerate(batch_indices(len(data), batch_size, device, generator), start=1):
            inputs, targets = normalize(data.inputs[index]), data.targets[index]
            outputs = model(inputs)
            loss = F.cross_entropy(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            correct += (outputs.detach().argmax(dim=1) == targets).sum()
            seen += len(index)
            bar.step(len(index))
            if step % POSTFIX_EVERY_STEPS == 0:
                bar.show(loss_sum.item() / seen, correct.item() / seen, seen / (time.perf_counter() - started))
        _synchronize(device)
        seconds = time.perf_counter() - started
        record = EpochRecord(epoch, loss_sum.item() / seen, correct.item() / seen, seen / seconds, seconds)
        bar.show(record.train_loss, record.train_accuracy, record.images_per_second)
        bar.end_epoch()
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    bar.close()
    return TrainResult(history, sum(r.seconds for r in history), len(data) * epochs)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # confusion[true][predicted]
    predictions: torch.Tensor  # on CPU
    targets: torch.Tensor  # on CPU
    confidences: torch.Tensor  # softmax probability of the predicted class, on CPU


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, normalize: Normalizer, batch_size: int) -> torch.Tensor:
    """Model outputs for `inputs` in eval mode, batch by batch, concatenated on the device."""
    model.eval()
    batches = inputs.split(batch_size or len(inputs))
    return torch.cat([model(normalize(batch)).float() for batch in batches])


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DeviceSplit, normalize: Normalizer, batch_size: int, num_classes: int
) -> Evaluation:
    outputs = predict(model, data.inputs, normalize, batch_size)
    loss = F.cross_entropy(outputs, data.targets).item()
    probabilities = outputs.softmax(dim=1)
    confidences, predictions = probabilities.max(dim=1)
    confusion = torch.bincount(
        data.targets * num_classes + predictions, minlength=num_classes * num_classes
    ).view(num_classes, num_classes).cpu()
    per_class = confusion.diag().double() / confusion.sum(dim=1).clamp_min(1).double()
    return Evaluation(
        loss=loss,
        accuracy=(predictions == data.targets).double().mean().item(),
        per_class_accuracy=per_class.tolist(),
        confusion=confusion.tolist(),
        predictions=predictions.cpu(),
        targets=data.targets.cpu(),
        confidences=confidences.cpu(),
    )
