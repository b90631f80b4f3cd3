"""Train and evaluate loops over data that already lives on the device.

Importable without DVC or MLflow: per-epoch hooks (`on_epoch`) are how a
tracker hears about progress.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.config import OptimizerConfig, ScheduleConfig, TrainConfig
from cnnlab.data.augment import augment, is_active
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
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: ScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based)."""
    progress = step / max(total_steps, 1)
    warmup = config.warmup_fraction
    if warmup and progress < warmup:
        return (step + 1) / (warmup * total_steps)
    if config.name == "constant":
        return 1.0
    remaining = (progress - warmup) / (1 - warmup)
    if config.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * remaining))
    return max(0.0, 1 - remaining)  # onecycle: linear up (warm-up), linear down


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, total_steps))


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
    config: TrainConfig,
    *,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train in place. Shuffling and augmentation draw from one seeded generator on the data's device."""
    device = data.inputs.device
    epochs, batch_size = config.epochs, config.batch_size
    optimizer = make_optimizer(model, config.optimizer)
    steps_per_epoch = -(-len(data) // (batch_size or len(data)))
    scheduler = make_scheduler(optimizer, config.schedule, epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    augmenting = is_active(config.augment)
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
            inputs, targets = data.inputs[index], data.targets[index]
            if augmenting:
                inputs = augment(inputs, config.augment, generator)
            outputs = model(normalize(inputs))
            loss = F.cross_entropy(outputs, targets, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
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
    images_per_second: float  # of the evaluation pass, at its batch size


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
    started = time.perf_counter()
    outputs = predict(model, data.inputs, normalize, batch_size)
    _synchronize(outputs.device)
    seconds = time.perf_counter() - started
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
        images_per_second=len(data) / seconds if seconds > 0 else 0.0,
    )


@torch.no_grad()
def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass on `example` (a batch of one), in milliseconds."""
    model.eval()
    times = []
    for i in range(warmup + repeats):
        _synchronize(example.device)
        started = time.perf_counter()
        model(example)
        _synchronize(example.device)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]
