"""What the train and evaluate stages do, end to end, for one experiment.

The train stage saves a self-describing checkpoint (model name and options,
input shape, normalisation, pixel permutation, study) so the evaluate stage
rebuilds exactly what was trained and reads only its own params.

Every file these stages write goes into DVC's cache and is restored from its
run-cache, so it holds only what the stage's inputs determine: the same
inputs give the same bytes. Facts of one execution (seconds, images per
second, latency, the MLflow run id) go to MLflow, which links a run to its
files by the MD5 of the model file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import engine
from cnnlab.config import EvaluateConfig, InputConfig, Params, TrainConfig, parse_dataclass
from cnnlab.data.loader import DeviceSplit, Normalizer, make_normalizer, to_device
from cnnlab.data.prepared import DatasetMeta, PreparedData, load_prepared, load_tensor_file
from cnnlab.distributed import World
from cnnlab.io import check_writable, directory_digest, md5sum, read_json, replaced_atomically, write_json
from cnnlab.models import build_model, count_parameters
from cnnlab.models.complexity import count_macs
from cnnlab.paths import Layout
from cnnlab.tracking import (
    MODEL_DIGEST_TAG, DatasetRecord, NullTracker, Tracker, dvc_tags, environment_tags, new_run_key, open_run,
    registered_model_name,
)

CHECKPOINT = "model.pt"
TRAIN_INFO = "train.json"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and feed a trained model."""

    experiment: str
    study: str
    dataset: str
    model: str
    model_args: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    inputs: InputConfig

    def build(self) -> nn.Module:
        return build_model(self.model, self.input_shape, self.num_classes, **self.model_args)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelSpec":
        inputs = parse_dataclass(InputConfig, data["inputs"], "checkpoint spec.inputs")
        return cls(**{**data, "input_shape": tuple(data["input_shape"]), "inputs": inputs})


def _inputs_on(
    prepared: PreparedData, spec: ModelSpec, device: torch.device
) -> tuple[DeviceSplit, DeviceSplit, Normalizer]:
    """Both splits on the device, permuted if the model was trained so, and the model's normaliser."""
    train, test = to_device(prepared, device, spec.inputs.permute_pixels)
    return train, test, make_normalizer(prepared.meta, spec.inputs.normalize, device)


def dataset_record(prepared_dir: Path, meta: DatasetMeta) -> DatasetRecord:
    """The prepared data as MLflow will show it: generated stand-ins are named so, and the source is the
    DVC output's path in the project (a queued experiment runs in a temporary copy of it)."""
    name = meta.name if meta.origin != "synthetic" else f"{meta.name} (synthetic)"
    return DatasetRecord(name, directory_digest(prepared_dir), prepared_dir, meta.origin, meta.sizes)


@dataclass(frozen=True)
class TrainingRun:
    """What a training stage (train@, head@) tells MLflow and the resumable state about itself."""

    name: str
    study: str
    stage: str  # e.g. train@mnist_cnn
    stage_params: dict[str, Any]  # the params DVC tracks for this stage: logged, and fingerprinted in a tag
    dataset: DatasetRecord
    tags: dict[str, str]
    fingerprint: str  # a resumable state is continued only if it was saved under the same one
    logs_model: bool = False  # whether `publish` logs an MLflow model


@dataclass(frozen=True)
class TrainedModel:
    info: dict[str, Any]  # models/NAME/train.json: only what the inputs determine
    train_seconds: float
    images_per_second: float
    run_id: str | None
    model_md5: str


def train_tracked(
    layout: Layout, run: TrainingRun, model: nn.Module, split: DeviceSplit, normalize: Normalizer,
    config: TrainConfig, runtime: engine.Runtime, checkpoint_every_s: float,
    save: Callable[[nn.Module, Path], None], info: dict[str, Any],
    publish: Callable[[Tracker, nn.Module], None] = lambda tracker, model: None,
    world: World = World(), sync_batchnorm: bool = False,
) -> TrainedModel:
    """Train `model` (resuming a killed run of the same fingerprint), write models/NAME and its history,
    and record the run in MLflow.

    `save` writes the model file into the model directory; `info` holds more deterministic facts for
    train.json, `param_count` among them; `publish` logs more to the run once the outputs exist. Timings and the run id go to
    MLflow and the caller, never into the outputs: DVC caches those by content. With several processes
    (`world`), rank 0 alone logs and writes; the others return what they trained, unsaved.
    """
    checkpoint = engine.EpochCheckpoint(layout.resume_file(run.name), run.fingerprint, every_seconds=checkpoint_every_s)
    resumed = checkpoint.saved
    if resumed and world.is_main:
        print(f"{run.name}: resuming after epoch {len(resumed['history'])} from {checkpoint.path}")
    # A resumed stage continues the run its state is keyed with.
    checkpoint.extra["run_key"] = resumed["extra"]["run_key"] if resumed else new_run_key()
    if world.size > 1 and world.is_main:
        print(f"{run.name}: training as {world.size} processes ({world.backend})")
    tracker = (open_run(run.study, run.name, run_key=checkpoint.extra["run_key"], logs_model=run.logs_model)
               if world.is_main else NullTracker())
    with tracker:
        # Logging the same values again is allowed, so a resumed run needs no special case here.
        tracker.log_params(run.stage_params)
        tracker.set_tags({
            **dvc_tags(run.stage, run.stage_params), "data.prepared_md5": run.dataset.digest,
            "data.origin": run.dataset.origin, "device": engine.describe_device(runtime.device),
            "runtime.precision": runtime.precision, "runtime.channels_last": str(runtime.channels_last).lower(),
            "runtime.compile": str(runtime.compile).lower(), "runtime.deterministic": str(runtime.deterministic).lower(),
            "distributed.processes": str(world.size), "distributed.backend": world.backend or "none",
            "runtime.sync_batchnorm": str(sync_batchnorm and world.size > 1).lower(), **environment_tags(), **run.tags,
        })
        tracker.log_dataset(run.dataset, context="train")
        # Saved epochs are logged again: whatever the killed process had not sent yet is in the state.
        for row in resumed["history"] if resumed else []:
            log_epoch(tracker, engine.EpochRecord(**row))
        try:
            result = engine.train(model, split, normalize, config, runtime, checkpoint=checkpoint,
                                  on_epoch=lambda record: log_epoch(tracker, record), world=world,
                                  sync_batchnorm=sync_batchnorm)
        except engine.NonFiniteLoss as error:
            raise engine.NonFiniteLoss(f"{run.name}: {error}") from None
        model = model.to(memory_format=torch.contiguous_format)  # saved and served in the default layout
        info = {
            "device": engine.describe_device(runtime.device), "precision": runtime.precision, "epochs": config.epochs,
            "processes": world.size, **info, "final_train_loss": result.history[-1].train_loss,
            "final_train_accuracy": result.history[-1].train_accuracy,
        }
        if not world.is_main:
            return TrainedModel(info, result.train_seconds, result.images_per_second, None, "")
        with replaced_atomically(layout.model_dir(run.name)) as out:
            out.mkdir(parents=True)
            save(model, out / CHECKPOINT)
            write_json(out / TRAIN_INFO, info)
        write_json(layout.history(run.name), result.history_rows())
        checkpoint.remove()
        model_md5 = md5sum(layout.model_dir(run.name) / CHECKPOINT)
        tracker.set_tags({MODEL_DIGEST_TAG: model_md5})
        tracker.log_metrics({"train_seconds": result.train_seconds, "train_images_per_second": result.images_per_second,
                             "param_count": info["param_count"]})
        tracker.log_artifact(layout.history(run.name))
        publish(tracker, model)
    return TrainedModel(info, result.train_seconds, result.images_per_second, tracker.run_id, model_md5)


def train_experiment(params: Params, name: str, layout: Layout, world: World = World()) -> TrainedModel:
    config = params.experiment(name)
    check_writable(layout.model_dir(name).parent, layout.history(name).parent, layout.resume_file(name).parent)
    prepared_dir = layout.prepared(config.dataset)
    prepared = load_prepared(prepared_dir)
    spec = ModelSpec(
        experiment=name, study=config.study, dataset=config.dataset, model=config.model,
        model_args=dict(config.model_args), input_shape=prepared.meta.input_shape,
        num_classes=prepared.meta.num_classes, inputs=config.inputs,
    )
    device = engine.select_device()
    train_split, _, normalize = _inputs_on(prepared, spec, device)
    torch.manual_seed(config.train.seed)
    model = spec.build()
    runtime = engine.resolve_runtime(params.runtime, device, count_macs(model, spec.input_shape))
    model = model.to(device)
    dataset = dataset_record(prepared_dir, prepared.meta)
    stage_params = {"experiment": name, **{k: v for k, v in asdict(config).items() if k != "evaluate"},
                    "runtime": {"precision": params.runtime.precision}}
    run = TrainingRun(name, config.study, f"train@{name}", stage_params, dataset, tags={},
                      fingerprint=_run_fingerprint(spec, config.train, runtime.precision, dataset.digest),
                      logs_model=True)

    def save(trained: nn.Module, path: Path) -> None:
        torch.save({"spec": spec.to_json(), "state_dict": trained.state_dict()}, path)

    def publish(tracker: Tracker, trained: nn.Module) -> None:
        if isinstance(tracker, NullTracker):
            return
        from cnnlab import serving

        state = serving.classifier_state(spec.model, spec.model_args, spec.input_shape, spec.num_classes, trained,
                                         normalize, prepared.pixel_permutation if config.inputs.permute_pixels else None)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / serving.CLASSIFIER_FILE)
            tracker.log_model(Path(tmp) / serving.CLASSIFIER_FILE, str(prepared.train_inputs.numpy().dtype),
                              spec.input_shape, serving.pip_requirements(), registered_model_name(config.study, name))

    return train_tracked(layout, run, model, train_split, normalize, config.train, runtime,
                         params.runtime.checkpoint_every_s, save, {"param_count": count_parameters(model)}, publish,
                         world, params.runtime.sync_batchnorm)


def log_epoch(tracker: Tracker, record: engine.EpochRecord) -> None:
    """Buffered: sent in batches, and at the latest when the run closes. The engine saves its resumable state
    before calling this, and a resumed run logs the saved epochs again, so none is lost to a kill."""
    tracker.log_metrics({"train_loss": record.train_loss, "train_accuracy": record.train_accuracy,
                         "train_images_per_second": record.images_per_second}, step=record.epoch)


def _run_fingerprint(spec: ModelSpec, train: TrainConfig, precision: str, data_md5: str) -> str:
    """What a resumable state must match to be continued: model, data, training settings, precision."""
    identity = {"spec": spec.to_json(), "train": asdict(train), "precision": precision, "data": data_md5}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_trained(layout: Layout, name: str) -> tuple[ModelSpec, nn.Module, dict[str, Any]]:
    model_dir = layout.model_dir(name)
    checkpoint = load_tensor_file(model_dir / CHECKPOINT, f"dvc repro train@{name}")
    spec = ModelSpec.from_json(checkpoint["spec"])
    model = spec.build()
    model.load_state_dict(checkpoint["state_dict"])
    return spec, model, read_json(model_dir / TRAIN_INFO)


def confusion_records(targets: torch.Tensor, predictions: torch.Tensor, class_names: tuple[str, ...]) -> list[dict]:
    """One {actual, predicted} row per test sample: the input DVC's confusion template expects."""
    return [{"actual": class_names[t], "predicted": class_names[p]}
            for t, p in zip(targets.tolist(), predictions.tolist())]


def evaluate_experiment(params: Params, name: str, layout: Layout) -> Evaluated:
    from cnnlab import plots

    config = params.experiment(name).evaluate
    check_writable(layout.metrics_dir, layout.figures(name).parent)
    spec, model, train_info = load_trained(layout, name)
    model_md5 = md5sum(layout.model_dir(name) / CHECKPOINT)
    # Opened first: the tracking worker starts MLflow while this process evaluates.
    with open_run(spec.study, run_name=name, model_md5=model_md5) as tracker:
        prepared = load_prepared(layout.prepared(spec.dataset))
        device = engine.select_device()
        _, test_split, normalize = _inputs_on(prepared, spec, device)
        model = model.to(device)
        evaluation = engine.evaluate(model, test_split, normalize, config.batch_size, prepared.meta.num_classes,
                                     flip_tta=config.tta == "flip")
        class_names = prepared.meta.class_names
        metrics = {
            "test_accuracy": evaluation.accuracy,
            "test_loss": evaluation.loss,
            "param_count": train_info["param_count"],
            "macs_per_image": count_macs(model, spec.input_shape),
            "device": train_info["device"],
            "precision": train_info["precision"],
            "study": spec.study,
            "dataset": spec.dataset,
            "data_origin": prepared.meta.origin,
            "model": spec.model,
            "epochs": train_info["epochs"],
            "processes": train_info.get("processes", 1),
            "final_train_accuracy": train_info["final_train_accuracy"],
            "per_class_accuracy": dict(zip(class_names, evaluation.per_class_accuracy)),
            "model_md5": model_md5,
        }
        timings = {"eval_images_per_second": evaluation.images_per_second,
                   "inference_ms_per_image": engine.latency_ms(model, normalize(test_split.inputs[:1]))}
        regions = None
        if not prepared.meta.is_image and prepared.meta.input_shape == (2,):
            def regions(out: Path) -> None:
                plots.decision_regions_png(model, normalize, prepared.test_inputs, prepared.test_targets,
                                           f"{name}: decision regions", out / "decision_regions.png")
        publish_evaluation(tracker, layout, f"evaluate@{name}", name, spec.study, evaluation, prepared, config,
                           metrics, timings, regions)
    return Evaluated(metrics, timings, tracker.run_id)


@dataclass(frozen=True)
class Evaluated:
    metrics: dict[str, Any]  # metrics/NAME.json: only what the model and data determine
    timings: dict[str, float]  # facts of this execution (speed), in MLflow only
    run_id: str | None


def publish_evaluation(
    tracker: Tracker, layout: Layout, stage: str, name: str, study: str, evaluation: engine.Evaluation, prepared: PreparedData,
    config: EvaluateConfig, metrics: dict[str, Any], timings: dict[str, float],
    draw_more: Callable[[Path], None] | None = None,
) -> None:
    """An evaluation's files (metrics, DVC confusion records, figures), and their record in `tracker`: the run
    that trained the model, opened by its MD5.

    `draw_more` adds figures of its own to the figures directory before it is published.
    """
    from cnnlab import plots

    class_names = prepared.meta.class_names
    figures = layout.figures(name)
    with replaced_atomically(figures) as tmp_figures:
        tmp_figures.mkdir(parents=True)
        plots.confusion_png(evaluation.confusion, class_names, f"{name}: test accuracy {evaluation.accuracy:.2%}",
                            tmp_figures / "confusion.png")
        if prepared.meta.is_image and config.grid_images:
            _image_grids(prepared, evaluation, config.grid_images, name, tmp_figures)
        if draw_more is not None:
            draw_more(tmp_figures)
    write_json(layout.confusion_records(name), confusion_records(evaluation.targets, evaluation.predictions, class_names))
    write_json(layout.metrics(name), metrics)

    tracker.set_tags({"dvc.evaluate_stage": os.environ.get("DVC_STAGE") or stage})
    tracker.log_dataset(dataset_record(layout.prepared(prepared.meta.name), prepared.meta), context="eval")
    numeric = {k: v for k, v in {**metrics, **timings}.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epochs", "processes")}
    tracker.log_metrics({**numeric, **{f"test_accuracy.{c}": a for c, a in metrics["per_class_accuracy"].items()}})
    for figure in sorted(Path(figures).glob("*.png")):
        tracker.log_artifact(figure, "figures")
    tracker.log_artifact(layout.metrics(name))
    tracker.mark_evaluated(registered_model_name(study, name),
                           {k: metrics[k] for k in ("test_accuracy", "test_loss") if k in metrics})


def _image_grids(prepared: PreparedData, evaluation: engine.Evaluation, count: int, name: str, out: Path) -> None:
    """The first test images, the first correctly classified ones and the most confident mistakes,
    with true and predicted labels.

    Images are shown as stored (before any pixel permutation), so a person can read them.
    """
    from cnnlab import plots

    names = prepared.meta.class_names
    right = evaluation.predictions == evaluation.targets
    wrong = (~right).nonzero().flatten()
    grids = (
        (torch.arange(min(count, len(evaluation.targets))), "test_images.png", f"{name}: first test images"),
        (right.nonzero().flatten()[:count], "correct.png", f"{name}: first correctly classified"),
        (wrong[evaluation.confidences[wrong].argsort(descending=True)][:count], "confident_mistakes.png",
         f"{name}: most confident mistakes"),
    )
    for indices, file, title in grids:
        captions = [
            f"true {names[evaluation.targets[i]]}\npred {names[evaluation.predictions[i]]}"
            + (f" ({evaluation.confidences[i]:.0%})" if file == "confident_mistakes.png" else "")
            for i in indices.tolist()
        ]
        plots.image_grid_png(prepared.test_inputs[indices], captions, title, out / file)
