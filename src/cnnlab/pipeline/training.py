"""A training stage's run: resumable, tracked in MLflow, its outputs written once, whole or not at all."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.config.experiments import TrainConfig
from cnnlab.data.loader import DeviceSplit, Normalizer
from cnnlab.engine.checkpoint import EpochCheckpoint
from cnnlab.engine.distributed import World
from cnnlab.engine.loop import Diverged, EpochRecord, TrainingHistory, train
from cnnlab.engine.runtime import Runtime, bf16_is_native, describe_device
from cnnlab.io import json_digest, md5sum, replaced_atomically, write_json
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import CHECKPOINT, TRAIN_INFO
from cnnlab.tracking.client import (
    DIVERGED_TAG,
    MODEL_DIGEST_TAG,
    DatasetRecord,
    NullTracker,
    Tracker,
    dvc_tags,
    new_run_key,
    open_run,
)


@dataclass(frozen=True)
class StageRun:
    """What a training stage (train@, head@) tells MLflow and the resumable state about itself."""

    name: str
    study: str
    stage: str  # e.g. train@mnist_cnn
    stage_params: dict[str, Any]  # the params DVC tracks for this stage: logged, and fingerprinted in a tag
    dataset: DatasetRecord
    tags: dict[str, str]
    fingerprint: str  # a resumable state is continued only if it was saved under the same one
    logs_model: bool = False  # whether `publish` logs an MLflow model
    group: str | None = None  # the experiment whose seeds this run is one of, if it has several
    group_params: str | None = None  # what the seeds share (config.replicates.group_digest)


@dataclass(frozen=True)
class TrainStageResult:
    info: dict[str, Any]  # models/NAME/train.json: only what the inputs determine
    train_seconds: float
    images_per_second: float
    run_id: str | None
    model_md5: str  # "" when training diverged: no model was written

    @property
    def diverged(self) -> str | None:
        """Why training stopped early, if it diverged (engine.divergence)."""
        return self.info.get("diverged", {}).get("reason")


def train_tracked(
    layout: Layout,
    run: StageRun,
    model: nn.Module,
    split: DeviceSplit,
    normalize: Normalizer,
    config: TrainConfig,
    runtime: Runtime,
    checkpoint_every_s: float,
    save: Callable[[nn.Module, Path], None],
    info: dict[str, Any],
    publish: Callable[[Tracker, nn.Module], None] = lambda tracker, model: None,
    world: World = World(),
) -> TrainStageResult:
    """Train `model` (resuming a killed run of the same fingerprint), write models/NAME and its history,
    and record the run in MLflow.

    `save` writes the model file into the model directory; `info` holds more deterministic facts for
    train.json, `param_count` among them; `publish` logs more to the run once the outputs exist. Timings and
    the run id go to MLflow and the caller, never into the outputs: DVC caches those by content. With several
    processes (`world`), rank 0 alone logs and writes; the others return what they trained, unsaved.
    """
    # The device type is part of the key: a state saved on the CPU is not continued on CUDA, or back.
    key = json_digest({"run": run.fingerprint, "device": runtime.device.type})
    checkpoint = EpochCheckpoint(layout.resume_file(run.name), key, every_seconds=checkpoint_every_s)
    resumed = checkpoint.saved
    # A resumed stage continues the run its state is keyed with.
    checkpoint.extra["run_key"] = resumed["extra"]["run_key"] if resumed else new_run_key()
    checkpoint.extra["device"] = runtime.device.type
    if world.is_main:
        _say_how(run, runtime, world, resumed, checkpoint)
    tracker = (
        open_run(
            run.study,
            run.name,
            run_key=checkpoint.extra["run_key"],
            logs_model=run.logs_model,
            group=run.group,
            group_params=run.group_params,
        )
        if world.is_main
        else NullTracker()
    )
    info = {
        "device": describe_device(runtime.device),
        "precision": runtime.precision,
        "epochs": config.epochs,
        "processes": world.size,
        **info,
    }
    try:
        with tracker:
            # Logging the same values again is allowed, so a resumed run needs no special case here.
            tracker.log_params(run.stage_params)
            tracker.set_tags(_run_tags(run, runtime, world))
            tracker.log_dataset(run.dataset, context="train")
            # Saved epochs are logged again: whatever the killed process had not sent yet is in the state.
            for row in resumed["history"] if resumed else []:
                log_epoch(tracker, EpochRecord(**row))
            try:
                result = train(
                    model,
                    split,
                    normalize,
                    config,
                    runtime,
                    checkpoint=checkpoint,
                    on_epoch=lambda record: log_epoch(tracker, record),
                    world=world,
                )
            except Diverged as diverged:
                # A result, not a crash: the same settings diverge again, so DVC caches the outcome. No model
                # is written; the MLflow run ends FAILED, tagged with the reason.
                info["diverged"] = {"reason": str(diverged), **diverged.divergence.to_json()}
                if world.is_main:
                    _write_diverged(layout, run.name, info, diverged.history)
                    checkpoint.remove()
                    tracker.set_tags({DIVERGED_TAG: str(diverged)})
                raise
            model = model.to(memory_format=torch.contiguous_format)  # saved and served in the default layout
            info |= {
                "final_train_loss": result.history[-1].train_loss,
                "final_train_accuracy": result.history[-1].train_accuracy,
            }
            if not world.is_main:
                return TrainStageResult(info, result.train_seconds, result.images_per_second, None, "")
            model_md5 = _write_outputs(layout, run.name, model, save, info, result)
            checkpoint.remove()
            tracker.set_tags({MODEL_DIGEST_TAG: model_md5})
            tracker.log_metrics(
                {
                    "train_seconds": result.train_seconds,
                    "train_images_per_second": result.images_per_second,
                    "param_count": info["param_count"],
                }
            )
            tracker.log_artifact(layout.history(run.name))
            publish(tracker, model)
    except Diverged as diverged:
        seconds = sum(record.seconds for record in diverged.history)
        return TrainStageResult(info, seconds, 0.0, tracker.run_id, "")
    return TrainStageResult(info, result.train_seconds, result.images_per_second, tracker.run_id, model_md5)


def _say_how(
    run: StageRun, runtime: Runtime, world: World, resumed: dict[str, Any] | None, checkpoint: EpochCheckpoint
) -> None:
    if resumed:
        print(f"{run.name}: resuming after epoch {len(resumed['history'])} from {checkpoint.path}")
    elif checkpoint.other_run is not None:
        saved_on = checkpoint.other_run.get("device")
        why = (
            f"it was saved on {saved_on}, this run is on {runtime.device.type}"
            if saved_on and saved_on != runtime.device.type
            else "it was saved with other settings or data"
        )
        print(f"{run.name}: not resuming from {checkpoint.path}: {why}; training from the first epoch")
    if world.backend:
        print(f"{run.name}: training as {world.size} process{'es' if world.size > 1 else ''} ({world.backend})")
    if runtime.precision == "bf16" and not bf16_is_native(runtime.device):
        print(
            f"cnnlab: warning: {run.name} trains in bf16, which {describe_device(runtime.device)} only emulates "
            "(slower than fp32); set its train.precision to fp32 to trade the result's precision for speed "
            "(that re-runs it)",
            file=sys.stderr,
        )


def _run_tags(run: StageRun, runtime: Runtime, world: World) -> dict[str, str]:
    return {
        **dvc_tags(run.stage, run.stage_params),
        "data.prepared_md5": run.dataset.digest,
        "data.origin": run.dataset.origin,
        "device": describe_device(runtime.device),
        "runtime.precision": runtime.precision,
        "runtime.channels_last": str(runtime.channels_last).lower(),
        "runtime.compile": str(runtime.compile).lower(),
        "runtime.deterministic": str(runtime.deterministic).lower(),
        "distributed.processes": str(world.size),
        "distributed.backend": world.backend or "none",
        "torch.version": torch.__version__,
        "python.version": platform.python_version(),
        **run.tags,
    }


def _write_outputs(
    layout: Layout,
    name: str,
    model: nn.Module,
    save: Callable[[nn.Module, Path], None],
    info: dict[str, Any],
    result: TrainingHistory,
) -> str:
    """models/NAME (the model file and train.json, replaced together) and the history; the model file's MD5."""
    with replaced_atomically(layout.model_dir(name)) as out:
        out.mkdir(parents=True)
        save(model, out / CHECKPOINT)
        write_json(out / TRAIN_INFO, info)
    write_json(layout.history(name), result.history_rows())
    return md5sum(layout.model_dir(name) / CHECKPOINT)


def _write_diverged(layout: Layout, name: str, info: dict[str, Any], history: list[EpochRecord]) -> None:
    """models/NAME holding train.json alone (the reason under "diverged"), and the epochs done before."""
    with replaced_atomically(layout.model_dir(name)) as out:
        out.mkdir(parents=True)
        write_json(out / TRAIN_INFO, info)
    write_json(layout.history(name), TrainingHistory(history, 0.0, 0).history_rows())


def log_epoch(tracker: Tracker, record: EpochRecord) -> None:
    """Buffered: sent in batches, and at the latest when the run closes. The engine saves its resumable state
    before calling this, and a resumed run logs the saved epochs again, so none is lost to a kill."""
    tracker.log_metrics(
        {
            "train_loss": record.train_loss,
            "train_accuracy": record.train_accuracy,
            "train_images_per_second": record.images_per_second,
        },
        step=record.epoch,
    )
