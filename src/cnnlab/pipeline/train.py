"""train@NAME: one `experiments:` entry trained, its model written to models/NAME and logged to MLflow."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from cnnlab.config.params import Params
from cnnlab.config.replicates import group_digest
from cnnlab.data.loader import Normalizer
from cnnlab.data.prepared import PreparedData, load_prepared
from cnnlab.engine.distributed import World
from cnnlab.engine.runtime import resolve_runtime, select_device
from cnnlab.io import check_writable, json_digest
from cnnlab.models.complexity import count_parameters
from cnnlab.models.registry import check_model_args
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import ModelSpec, dataset_record, save_trained
from cnnlab.pipeline.training import StageRun, TrainStageResult, train_tracked
from cnnlab.serving import CLASSIFIER_FILE, classifier_state, pip_requirements
from cnnlab.tracking.client import NullTracker, Tracker, registered_model_name


def train_experiment(
    params: Params, name: str, layout: Layout, world: World = World(), replicate: str | None = None
) -> TrainStageResult:
    """Train experiment `name`, or with `replicate` its replicate of that name (another seed), into
    models/<the run's name>."""
    config = params.experiment(name)
    run_name = replicate or name
    if replicate is not None:
        seed = params.check_replicate(replicate, name).seed
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    check_model_args(config.model, config.model_args, f"experiments.{name}")
    check_writable(
        layout.model_dir(run_name).parent, layout.history(run_name).parent, layout.resume_file(run_name).parent
    )
    prepared_dir = layout.prepared(config.dataset)
    prepared = load_prepared(prepared_dir)
    spec = ModelSpec(
        experiment=name,
        study=config.study,
        dataset=config.dataset,
        model=config.model,
        model_args=dict(config.model_args),
        input_shape=prepared.meta.input_shape,
        num_classes=prepared.meta.num_classes,
        inputs=config.inputs,
    )
    device = select_device()
    runtime = resolve_runtime(params.runtime, device, config.train.precision)
    train_split, _, normalize = spec.inputs_on(prepared, device)
    torch.manual_seed(config.train.seed)
    model = spec.build().to(device)
    dataset = dataset_record(prepared_dir, prepared.meta)
    stage_params = {"experiment": name, **{k: v for k, v in asdict(config).items() if k != "evaluate"}}
    # What a resumable state must match to be continued: the model, its data and its training settings.
    fingerprint = json_digest({"spec": spec.to_json(), "train": asdict(config.train), "data": dataset.digest})
    seeded = len(params.seeds(name)) > 1  # one of several seeds: a child of their parent run in MLflow
    run = StageRun(
        run_name,
        config.study,
        f"train_replicate@{replicate}" if replicate else f"train@{name}",
        stage_params,
        dataset,
        tags={"cnnlab.seed": str(config.train.seed), **({"cnnlab.replicate_of": name} if seeded else {})},
        fingerprint=fingerprint,
        logs_model=replicate is None,  # the registry keeps the experiment's own seed; replicates are runs
        group=name if seeded else None,
        group_params=group_digest(params.experiment(name)) if seeded else None,
    )

    def publish(tracker: Tracker, trained: nn.Module) -> None:
        if replicate is None and not isinstance(tracker, NullTracker):
            _log_model(tracker, spec, trained, normalize, prepared)

    return train_tracked(
        layout,
        run,
        model,
        train_split,
        normalize,
        config.train,
        runtime,
        params.runtime.checkpoint_every_s,
        lambda trained, path: save_trained(spec, trained, path),
        {"param_count": count_parameters(model), "seed": config.train.seed},
        publish,
        world,
    )


def _log_model(
    tracker: Tracker, spec: ModelSpec, trained: nn.Module, normalize: Normalizer, prepared: PreparedData
) -> None:
    """The trained model as an MLflow model that takes the data as the dataset stores it (cnnlab.serving)."""
    permutation = prepared.pixel_permutation if spec.inputs.permute_pixels else None
    state = classifier_state(
        spec.model, spec.model_args, spec.input_shape, spec.num_classes, trained, normalize, permutation
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CLASSIFIER_FILE)
        tracker.log_model(
            Path(tmp) / CLASSIFIER_FILE,
            str(prepared.train_inputs.numpy().dtype),
            spec.input_shape,
            pip_requirements(),
            registered_model_name(spec.study, spec.experiment),
        )
