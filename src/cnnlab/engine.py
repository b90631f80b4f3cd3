"""Train and evaluate loops over data that already lives on the device.

The loop is built for speed in the style of airbench: the dataset sits on
the training device for the whole run, an epoch is a permutation of indices
drawn there, augmentation works on whole batches, and the host reads a
number back from the device about once a second, not every step. `Runtime`
adds bf16 autocast, channels_last, fused optimizers and, on request,
torch.compile and deterministic kernels. `EpochCheckpoint` makes a killed
run resume where it stopped, with the same result as an uninterrupted one.

Importable without DVC or MLflow: per-epoch hooks (`on_epoch`) are how a
tracker hears about progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.config import OptimizerConfig, RuntimeConfig, ScheduleConfig, TrainConfig
from cnnlab.data.augment import augment
from cnnlab.data.loader import DeviceSplit, Normalizer, batch_indices
from cnnlab.distributed import World, max_across, sum_across
from cnnlab.errors import CnnlabError, ConfigError

DEVICE_ENV = "CNNLAB_DEVICE"
POSTFIX_EVERY_SECONDS = 1.0  # reading the loss forces a device sync; don't do it every step
DATA_INIT_IMAGES = 5000  # the training images a model with `fit_to_data` (a whitening layer) is fitted on
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # CPUs with native bf16 dot products
# Below this a training step is bound by per-op overhead, not arithmetic: autocast's casts only add
# to it. Measured on a 2-core AVX512-BF16 CPU: bf16 was a third slower for the MNIST FC net (6.4k MACs),
# no faster for the MNIST CNN (149k) and LeNet (652k), and 1.55x faster for the course's VGG (153M).
BF16_MIN_MACS_PER_IMAGE = 10_000_000


def flush_subnormals() -> bool:
    """Make this process's CPU threads treat subnormal floats as zero (x86 FTZ/DAZ); True if supported.

    Trained weights and activations drift into the subnormal range (below 1.2e-38), where x86 cores
    take microcode assists: on some Intel CPUs a batch-1 forward pass of the course CNN took 47-91 ms
    instead of 0.28 ms. The flag is per thread and new threads copy their creator's, so it must be set
    before torch starts its OpenMP threads (the first parallel op): hence at import of this module.
    Values that small carry no information for these models; results stay deterministic.
    """
    return torch.set_flush_denormal(True)


flush_subnormals()


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


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU as Linux lists them (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@dataclass(frozen=True)
class Runtime:
    """The resolved `runtime:` settings for one device."""

    device: torch.device
    precision: str  # "bf16" or "fp32"
    channels_last: bool
    compile: bool = False
    deterministic: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def resolve_precision(requested: str, device: torch.device, flags: frozenset[str], macs_per_image: int) -> str:
    if requested != "auto":
        return requested
    if macs_per_image < BF16_MIN_MACS_PER_IMAGE:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and flags & CPU_BF16_FLAGS:
        return "bf16"
    return "fp32"


def resolve_runtime(
    config: RuntimeConfig, device: torch.device, macs_per_image: int, flags: frozenset[str] | None = None
) -> Runtime:
    """Turn `auto` settings into choices for `device` and a model of `macs_per_image`.

    `flags` defaults to this CPU's.
    """
    precision = resolve_precision(config.precision, device, cpu_flags() if flags is None else flags, macs_per_image)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"runtime.precision: bf16 is not supported by {describe_device(device)}; use auto or fp32")
    channels_last = True if config.channels_last == "auto" else bool(config.channels_last)
    return Runtime(device, precision, channels_last, config.compile, config.deterministic)


def configure_backends(runtime: Runtime) -> None:
    """Process-wide torch switches for this run (a stage is one process, one run)."""
    if runtime.deterministic:
        # cuBLAS needs this set before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel warns, naming itself, instead of failing the run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = runtime.device.type == "cuda"


def make_optimizer(model: nn.Module, config: OptimizerConfig, fused: bool = True) -> torch.optim.Optimizer:
    """`config`'s optimizer over the model's trainable parameters (frozen ones are left out).

    fused: one kernel per step for all parameters instead of a few per tensor, same update
    rule; used where the parameters' device supports it. False gives torch's defaults.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = fused and _fusable(model)
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay, fused=fused)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _fusable(model: nn.Module) -> bool:
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


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
        """Per-epoch results without their timings: the same seed and data give the same rows."""
        return [{"epoch": r.epoch, "train_loss": r.train_loss, "train_accuracy": r.train_accuracy} for r in self.history]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def intended_sync(device: torch.device) -> Iterator[None]:
    """Marks a host-device synchronisation the engine makes on purpose (reading a number back, saving).

    torch.cuda.set_sync_debug_mode("error") then flags every other one: the GPU tests train
    under it, so a stray .item() or data-dependent shape in the hot loop fails them.
    """
    if device.type != "cuda":
        yield
        return
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


class _Progress:
    """A tqdm bar per epoch; for one-batch epochs (full-batch training) one bar for the run."""

    def __init__(
        self, epochs: int, images_per_epoch: int, steps_per_epoch: int, enabled: bool, first_epoch: int = 1
    ) -> None:
        self.per_run = steps_per_epoch == 1
        self.epochs, self.images, self.enabled = epochs, images_per_epoch, enabled
        self.bar: tqdm | None = None
        if self.per_run:
            self.bar = tqdm(total=epochs, initial=first_epoch - 1, unit="epoch", desc="train",
                            disable=not enabled, dynamic_ncols=True)

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


class EpochCheckpoint:
    """Resumable training state in one file, saved after epochs, removed when the run completes.

    `key` fingerprints what is trained (model, data, settings): a file left by
    a run with another key is stale and ignored. `extra` travels with the state
    (the workflow keeps its MLflow run id there, so a resumed run continues it).
    """

    def __init__(self, path: Path, key: str, every_seconds: float = 0.0, extra: dict[str, Any] | None = None):
        self.path, self.key, self.every_seconds = Path(path), key, every_seconds
        self.extra = dict(extra or {})
        self._saved: dict[str, Any] | None = None
        self._loaded = False
        self._last_save = time.monotonic()

    @property
    def saved(self) -> dict[str, Any] | None:
        """The state a previous run of the same key left, if any (read once)."""
        if not self._loaded:
            self._loaded = True
            if self.path.is_file():
                try:
                    state = torch.load(self.path, map_location="cpu", weights_only=True)
                except Exception:  # a file cut short by the kill it is meant to survive
                    state = None
                if isinstance(state, dict) and state.get("key") == self.key:
                    self._saved = state
        return self._saved

    def due(self) -> bool:
        """Whether the epoch that just ended is to be saved."""
        return time.monotonic() - self._last_save >= self.every_seconds

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save({**state, "key": self.key, "extra": self.extra}, partial)
        os.replace(partial, self.path)  # a kill mid-save leaves the previous checkpoint intact
        self._last_save = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _rng_states(device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    # Dropout draws from the global generators, shuffling and augmentation from `generator`.
    states = {"generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def _restore_rng_states(states: dict[str, torch.Tensor], device: torch.device, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch_rng"])
    if "cuda_rng" in states:
        torch.cuda.set_rng_state(states["cuda_rng"], device)


def train(
    model: nn.Module,
    data: DeviceSplit,
    normalize: Normalizer,
    config: TrainConfig,
    runtime: Runtime | None = None,
    *,
    checkpoint: EpochCheckpoint | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    world: World = World(),
    sync_batchnorm: bool = False,
) -> TrainResult:
    """Train `model` in place on `data`, resuming from `checkpoint` if it holds this run's state.

    Shuffling and augmentation draw from one seeded generator on the data's device. With several
    processes (`world`, see cnnlab.distributed) every rank holds the data and draws the same shuffle;
    each trains on its part of every batch under DDP, augments it from a generator of its own (seeded
    by seed, epoch and rank) and, on rank 0 only, saves state, calls `on_epoch` and shows progress.
    `sync_batchnorm`: BatchNorm statistics over the whole batch instead of each rank's part.
    """
    device = data.inputs.device
    runtime = runtime or Runtime(device, "fp32", channels_last=False)
    configure_backends(runtime)
    progress = progress and world.is_main
    inputs = data.inputs
    if world.size > 1 and sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if runtime.channels_last and inputs.dim() == 4:
        model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)  # once, so batches gather in NHWC
    epochs, batch_size = config.epochs, config.batch_size
    optimizer = make_optimizer(model, config.optimizer)
    steps_per_epoch = -(-len(data) // (batch_size or len(data)))
    scheduler = None
    if config.schedule.name != "constant" or config.schedule.warmup_fraction:
        scheduler = make_scheduler(optimizer, config.schedule, epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    augmenting = config.augment.active
    history: list[EpochRecord] = []
    if checkpoint is not None and checkpoint.saved is not None:
        state = checkpoint.saved
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        _restore_rng_states(state["rng"], device, generator)
        history = [EpochRecord(**row) for row in state["history"]]
    elif hasattr(model, "fit_to_data"):  # data-dependent initialisation (models/speedrun.py), fresh runs only
        with intended_sync(device):  # an eigendecomposition, once
            model.fit_to_data(normalize(inputs[:DATA_INIT_IMAGES]))
    forward = _parallel(model, world, device)  # after restoring or fitting: DDP starts from rank 0's weights
    forward = torch.compile(forward) if runtime.compile else forward
    bar = _Progress(epochs, len(data), steps_per_epoch, progress, first_epoch=len(history) + 1)
    try:
        for epoch in range(len(history) + 1, epochs + 1):
            model.train()
            bar.start_epoch(epoch)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            first_nonfinite = torch.full((), -1, dtype=torch.long, device=device)  # a step index, read ~once a second
            seen = 0
            augment_generator = generator if world.size == 1 else _rank_generator(config.seed, epoch, world, device)
            started = last_shown = time.perf_counter()
            for step, whole in enumerate(batch_indices(len(data), batch_size, device, generator), start=1):
                index = whole.tensor_split(world.size)[world.rank] if world.size > 1 else whole
                batch, targets = inputs[index], data.targets[index]
                if augmenting:
                    batch = augment(batch, config.augment, augment_generator)
                batch = normalize(batch)
                if runtime.channels_last and batch.dim() == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                with runtime.autocast():
                    outputs = forward(batch)
                    loss = F.cross_entropy(outputs, targets, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                # DDP averages the ranks' gradients: weighting each rank's mean loss by its share of the batch
                # makes that average the gradient of the whole batch's mean loss, also for a short last batch.
                (loss * (len(index) * world.size / len(whole)) if world.size > 1 else loss).backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.detach() * len(index)
                correct += (outputs.detach().argmax(dim=1) == targets).sum()
                first_nonfinite = torch.where((first_nonfinite < 0) & ~torch.isfinite(loss.detach()), step, first_nonfinite)
                seen += len(index)
                bar.step(len(whole))
                if time.perf_counter() - last_shown > POSTFIX_EVERY_SECONDS:
                    last_shown = time.perf_counter()
                    with intended_sync(device):
                        _stop_if_nonfinite(first_nonfinite, epoch, config)
                        if progress:
                            # This rank's loss and accuracy; the rate of all ranks (they keep the same pace).
                            bar.show(loss_sum.item() / seen, correct.item() / seen,
                                     seen * world.size / (last_shown - started))
            with intended_sync(device):
                loss_sum, correct = sum_across(world, loss_sum, correct)
                first_nonfinite = max_across(world, first_nonfinite)  # every rank stops at the same epoch
                _synchronize(device)
                _stop_if_nonfinite(first_nonfinite, epoch, config)
                seconds = time.perf_counter() - started
                seen = len(data)
                record = EpochRecord(epoch, loss_sum.item() / seen, correct.item() / seen, seen / seconds, seconds)
            bar.show(record.train_loss, record.train_accuracy, record.images_per_second)
            bar.end_epoch()
            history.append(record)
            # The resumable state first: a hook may log over a network that hangs or fails.
            if checkpoint is not None and world.is_main and epoch < epochs and checkpoint.due():
                with intended_sync(device):
                    checkpoint.save({
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "rng": _rng_states(device, generator),
                        "history": [asdict(r) for r in history],
                    })
            if on_epoch is not None and world.is_main:
                on_epoch(record)
    except NonFiniteLoss:
        bar.end_epoch()  # the bar's line ends before the error is printed
        raise
    finally:
        bar.close()
    return TrainResult(history, sum(r.seconds for r in history), len(data) * len(history))


def _parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _rank_generator(seed: int, epoch: int, world: World, device: torch.device) -> torch.Generator:
    """A rank's augmentation draws for one epoch: seeded by (seed, epoch, rank), so that they need no saved
    state and a resumed run draws what an uninterrupted one would."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{world.rank}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class NonFiniteLoss(CnnlabError):
    """The training loss became NaN or infinite: training stops at once instead of running on garbage."""


def _stop_if_nonfinite(first_nonfinite: torch.Tensor, epoch: int, config: TrainConfig) -> None:
    step = int(first_nonfinite.item())
    if step >= 0:
        raise NonFiniteLoss(
            f"the training loss became NaN or infinite at epoch {epoch}, step {step}; likely cause: "
            f"a learning rate too high for this model (train.optimizer.lr is {config.optimizer.lr:g}), "
            f"or non-finite values in the inputs; lower the rate or check the data")


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
    model: nn.Module, inputs: torch.Tensor, normalize: Normalizer, batch_size: int, flip_tta: bool = False
) -> torch.Tensor:
    """Model outputs for `inputs` in eval mode, batch by batch, concatenated on the device.

    flip_tta: average the outputs for each image and its mirror image (test-time augmentation).
    """
    model.eval()

    def outputs(batch: torch.Tensor) -> torch.Tensor:
        batch = normalize(batch)
        if flip_tta:
            return (model(batch).float() + model(batch.flip(-1)).float()) / 2
        return model(batch).float()

    return torch.cat([outputs(batch) for batch in inputs.split(batch_size or len(inputs))])


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DeviceSplit, normalize: Normalizer, batch_size: int, num_classes: int,
    flip_tta: bool = False,
) -> Evaluation:
    started = time.perf_counter()
    outputs = predict(model, data.inputs, normalize, batch_size, flip_tta)
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
