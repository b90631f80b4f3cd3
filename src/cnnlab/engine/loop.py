"""The training loop over data that already lives on the device.

Built for speed in the style of airbench: the dataset sits on the training device for the whole run,
an epoch is a permutation of indices drawn there, augmentation works on whole batches, and the host
reads a number back from the device about once a second, not every step. A run given an
`EpochCheckpoint` resumes where a killed one stopped, with the result of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config.experiments import LookaheadConfig, TrainConfig
from cnnlab.data.augment import alternating_flips, augment
from cnnlab.data.loader import DeviceSplit, Normalizer, batch_indices
from cnnlab.engine.checkpoint import EpochCheckpoint, restore_rng_states, rng_states
from cnnlab.engine.distributed import World, max_across, sum_across
from cnnlab.engine.divergence import Divergence, DivergenceWatch
from cnnlab.engine.optim import make_optimizer, make_scheduler
from cnnlab.engine.progress import Progress
from cnnlab.engine.runtime import Runtime, configure_backends, intended_sync, synchronize
from cnnlab.errors import CnnlabError, ConfigError

POSTFIX_EVERY_SECONDS = 1.0  # reading the loss forces a device sync; don't do it every step
DATA_INIT_IMAGES = 5000  # the training images a model with `fit_to_data` (a whitening layer) is fitted on


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    images_per_second: float
    seconds: float


@dataclass(frozen=True)
class TrainingHistory:
    history: list[EpochRecord]
    train_seconds: float
    images_seen: int

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    def history_rows(self) -> list[dict[str, float]]:
        """Per-epoch results without their timings: the same seed and data give the same rows."""
        return [
            {"epoch": r.epoch, "train_loss": r.train_loss, "train_accuracy": r.train_accuracy} for r in self.history
        ]


class Diverged(CnnlabError):
    """Training stopped early: the run diverged (engine.divergence says when), after `history`'s epochs."""

    def __init__(self, divergence: Divergence, history: list[EpochRecord]) -> None:
        super().__init__(divergence.describe())
        self.divergence, self.history = divergence, history


@runtime_checkable
class FitsToData(Protocol):
    """A model with a data-dependent initialisation (models/speedrun.py's whitening layer)."""

    def fit_to_data(self, images: torch.Tensor) -> None: ...


@runtime_checkable
class StartsEpochs(Protocol):
    """A model that changes what trains from epoch to epoch (models/speedrun.py's whitening bias)."""

    def start_epoch(self, epoch: int) -> None: ...


@dataclass
class _Run:
    """What a training run carries from step to step and saves between epochs."""

    model: nn.Module  # the module whose state is saved
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model as it is called: DDP-wrapped, compiled
    inputs: torch.Tensor  # the training images, in the layout batches are gathered in
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    generator: torch.Generator  # shuffling, and augmentation in a single process
    steps_per_epoch: int
    watch: DivergenceWatch
    history: list[EpochRecord] = field(default_factory=list)
    flips: torch.Tensor | None = None  # an alternating flip's choice of images to mirror in odd epochs
    lookahead: Lookahead | None = None

    def state(self) -> dict[str, object]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_states(self.inputs.device, self.generator),
            "history": [asdict(r) for r in self.history],
            "lookahead": self.lookahead.average if self.lookahead is not None else None,
            "divergence_watch": self.watch.state(),
        }


class Lookahead:
    """The moving average of the weights (and BatchNorm's statistics) that `train.lookahead` resets them to."""

    def __init__(self, model: nn.Module, config: LookaheadConfig, total_steps: int) -> None:
        self.config, self.total_steps = config, total_steps
        self.weights = [t for t in model.state_dict().values() if t.is_floating_point()]  # views of the model's
        self.average = [t.detach().clone() for t in self.weights]

    def after_step(self, step: int) -> None:
        """Called after optimizer step `step` (1-based, counted over the whole run)."""
        if step % self.config.every_steps == 0:
            decay = self.config.decay * (step / self.total_steps) ** 3
            torch._foreach_lerp_(self.average, self.weights, 1 - decay)
            torch._foreach_copy_(self.weights, self.average)
        if step == self.total_steps:  # training ends on the average
            torch._foreach_copy_(self.weights, self.average)


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
) -> TrainingHistory:
    """Train `model` in place on `data`, resuming from `checkpoint` if it holds this run's state.

    Shuffling and augmentation draw from one seeded generator on the data's device. With several
    processes (`world`, see cnnlab.engine.distributed) every rank holds the data and draws the same
    shuffle; each trains on its part of every batch under DDP (BatchNorm synchronised across ranks, so
    the result does not depend on their number), augments it from a generator of its own (seeded by
    seed, epoch and rank) and, on rank 0 only, saves state, calls `on_epoch` and shows progress.
    """
    runtime = runtime or Runtime(data.inputs.device, "fp32", channels_last=False)
    configure_backends(runtime)
    run = _start(model, data, normalize, config, runtime, checkpoint, world)
    bar = Progress(
        config.epochs,
        len(data),
        _steps_per_epoch(data, config),
        progress and world.is_main,
        first_epoch=len(run.history) + 1,
    )
    try:
        for epoch in range(len(run.history) + 1, config.epochs + 1):
            record = _train_epoch(run, data, normalize, config, runtime, world, epoch, bar)
            run.history.append(record)
            # The resumable state first: a hook may log over a network that hangs or fails.
            if checkpoint is not None and world.is_main and epoch < config.epochs and checkpoint.due():
                with intended_sync(runtime.device):
                    checkpoint.save(run.state())
            if on_epoch is not None and world.is_main:
                on_epoch(record)
    except Diverged:
        bar.end_epoch()  # the bar's line ends before the caller says why
        raise
    finally:
        bar.close()
    return TrainingHistory(run.history, sum(r.seconds for r in run.history), len(data) * len(run.history))


def _steps_per_epoch(data: DeviceSplit, config: TrainConfig) -> int:
    return -(-len(data) // (config.batch_size or len(data)))


def _start(
    model: nn.Module,
    data: DeviceSplit,
    normalize: Normalizer,
    config: TrainConfig,
    runtime: Runtime,
    checkpoint: EpochCheckpoint | None,
    world: World,
) -> _Run:
    """The run's model, optimizer, schedule and generator: restored from `checkpoint` if it holds this run's
    state, else fresh (and a model with `fit_to_data` fitted to the data)."""
    device = runtime.device
    inputs = data.inputs
    if world.backend:
        model = _synchronised_batchnorm(model, device, world)
    if runtime.channels_last and inputs.dim() == 4:
        model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)  # once, so batches gather in NHWC
    optimizer = make_optimizer(model, config.optimizer)
    steps_per_epoch = _steps_per_epoch(data, config)
    scheduler = make_scheduler(optimizer, config.schedule, config.epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    run = _Run(model, model, inputs, optimizer, scheduler, generator, steps_per_epoch, DivergenceWatch(device))
    if config.augment.flip == "alternate":
        run.flips = alternating_flips(len(data), _derived_seed(config.seed, "flips"), device)
    if checkpoint is not None and checkpoint.saved is not None:
        state = checkpoint.saved
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"], device, generator)
        run.history = [EpochRecord(**row) for row in state["history"]]
        if "divergence_watch" in state:  # absent from states saved before the watch existed
            run.watch.restore(state["divergence_watch"])
    elif isinstance(model, FitsToData):  # fresh runs only: a resumed one restores what the fit set
        with intended_sync(device):  # an eigendecomposition, once
            model.fit_to_data(normalize(inputs[:DATA_INIT_IMAGES]))
    if config.lookahead.every_steps:
        run.lookahead = Lookahead(model, config.lookahead, config.epochs * steps_per_epoch)
        if checkpoint is not None and checkpoint.saved is not None:
            torch._foreach_copy_(run.lookahead.average, checkpoint.saved["lookahead"])
    # After restoring or fitting: DDP starts from rank 0's weights.
    run.forward = _parallel(model, world, device)
    if runtime.compile:
        run.forward = torch.compile(run.forward)
    return run


def _train_epoch(
    run: _Run,
    data: DeviceSplit,
    normalize: Normalizer,
    config: TrainConfig,
    runtime: Runtime,
    world: World,
    epoch: int,
    bar: Progress,
) -> EpochRecord:
    device = runtime.device
    run.model.train()
    if isinstance(run.model, StartsEpochs):
        run.model.start_epoch(epoch)
    bar.start_epoch(epoch)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    augment_generator = run.generator if world.size == 1 else _rank_generator(config.seed, epoch, world, device)
    flipped_this_epoch = None if run.flips is None else run.flips ^ (epoch % 2 == 0)
    started = last_shown = time.perf_counter()
    for step, whole in enumerate(batch_indices(len(data), config.batch_size, device, run.generator), start=1):
        index = whole.tensor_split(world.size)[world.rank] if world.size > 1 else whole
        targets = data.targets[index]
        # DDP averages the ranks' gradients: weighting each rank's mean loss by its share of the batch
        # makes that average the gradient of the whole batch's mean loss, also for a short last batch.
        share = len(index) * world.size / len(whole) if world.size > 1 else None
        flips = None if flipped_this_epoch is None else flipped_this_epoch[index]
        loss, outputs = _step(
            run, run.inputs[index], targets, share, normalize, config, runtime, augment_generator, flips
        )
        run_step = (epoch - 1) * run.steps_per_epoch + step
        if run.lookahead is not None:
            run.lookahead.after_step(run_step)
        loss_sum += loss * len(index)
        correct += (outputs.argmax(dim=1) == targets).sum()
        run.watch.observe(loss, run_step)
        seen += len(index)
        bar.step(len(whole))
        if time.perf_counter() - last_shown > POSTFIX_EVERY_SECONDS:
            last_shown = time.perf_counter()
            if runtime.cores is not None:  # another stage may have started or ended
                runtime.cores.rebalance()
            with intended_sync(device):
                _stop_if_diverged(run, run.watch.tripped_at)
                bar.estimate(epoch, seen * world.size)
                if bar.enabled:  # this rank's loss and accuracy; the rate of all ranks (they keep the same pace)
                    bar.show(loss_sum.item() / seen, correct.item() / seen, seen * world.size / (last_shown - started))
    with intended_sync(device):
        loss_sum, correct = sum_across(world, loss_sum, correct)
        tripped_at = max_across(world, run.watch.tripped_at)  # every rank stops at the same epoch
        synchronize(device)
        _stop_if_diverged(run, tripped_at)
        seconds = time.perf_counter() - started
        record = EpochRecord(
            epoch, loss_sum.item() / len(data), correct.item() / len(data), len(data) / seconds, seconds
        )
    bar.show(record.train_loss, record.train_accuracy, record.images_per_second)
    bar.estimate(epoch, len(data))  # epochs shorter than the postfix interval count too
    bar.end_epoch()
    return record


def _step(
    run: _Run,
    batch: torch.Tensor,
    targets: torch.Tensor,
    share: float | None,
    normalize: Normalizer,
    config: TrainConfig,
    runtime: Runtime,
    augment_generator: torch.Generator,
    flips: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch (this rank's part of it); the batch's mean loss and outputs, detached."""
    if config.augment.active:
        batch = augment(batch, config.augment, augment_generator, flips)
    batch = normalize(batch)
    if runtime.channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with runtime.autocast():
        outputs = run.forward(batch)
        loss = F.cross_entropy(outputs, targets, label_smoothing=config.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    (loss * share if share is not None else loss).backward()
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    return loss.detach(), outputs.detach()


def _synchronised_batchnorm(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """BatchNorm over the whole batch, not each rank's part, so that N processes train what one would."""
    if not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return model
    if device.type != "cuda" and world.size == 1:
        return model  # one CPU process normalises its whole batch already
    if device.type != "cuda":
        raise ConfigError(
            "this model has BatchNorm, whose statistics several processes share only on GPUs "
            "(torch's SyncBatchNorm); unset CNNLAB_NPROC to train it as one CPU process"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.backend:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _rank_generator(seed: int, epoch: int, world: World, device: torch.device) -> torch.Generator:
    """A rank's augmentation draws for one epoch: seeded by (seed, epoch, rank), so that they need no saved
    state and a resumed run draws what an uninterrupted one would."""
    return torch.Generator(device=device).manual_seed(_derived_seed(seed, f"{epoch}/{world.rank}"))


def _derived_seed(seed: int, purpose: str) -> int:
    """A seed of its own for each use of the run's seed, so that draws for one use never mirror another's."""
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _stop_if_diverged(run: _Run, tripped_at: torch.Tensor) -> None:
    divergence = run.watch.divergence(tripped_at, run.steps_per_epoch)
    if divergence is not None:
        raise Diverged(divergence, list(run.history))
