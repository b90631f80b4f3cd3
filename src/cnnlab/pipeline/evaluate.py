"""evaluate@NAME: the model train@NAME wrote, tested; metrics, figures, and their MLflow record.
evaluate_replicate@KEY does the same for one more seed of an experiment (params.yaml `replicates:`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab import plots
from cnnlab.config.params import Params
from cnnlab.data.loader import Normalizer
from cnnlab.data.prepared import PreparedData, load_prepared
from cnnlab.engine.cores import cores_shared
from cnnlab.engine.evaluation import evaluate, latency_ms, predict
from cnnlab.engine.runtime import select_device
from cnnlab.io import check_writable, md5sum
from cnnlab.models.complexity import count_macs
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import CHECKPOINT, diverged_info, load_trained
from cnnlab.pipeline.evaluation import EvaluateStageResult, diverged_evaluation, publish_evaluation, test_metrics
from cnnlab.tracking.client import open_run


def evaluate_experiment(params: Params, name: str, layout: Layout, replicate: str | None = None) -> EvaluateStageResult:
    """Evaluate experiment `name`'s model, or with `replicate` that replicate's (models/<replicate>)."""
    config = params.experiment(name).evaluate
    run_name = replicate or name
    if replicate is not None:
        params.check_replicate(replicate, name)
    check_writable(layout.metrics_dir, layout.figures(run_name).parent)
    if (diverged := diverged_info(layout, run_name)) is not None:
        experiment = params.experiment(name)
        facts = {"study": experiment.study, "dataset": experiment.dataset, "model": experiment.model}
        return diverged_evaluation(layout, run_name, diverged, **facts, experiment=name, seed=diverged["seed"])
    spec, model, train_info = load_trained(layout, run_name)
    model_md5 = md5sum(layout.model_dir(run_name) / CHECKPOINT)
    device = select_device()
    # Opened first: the tracking worker starts MLflow while this process evaluates.
    with open_run(spec.study, run_name=run_name, model_md5=model_md5) as tracker, cores_shared(device):
        prepared = load_prepared(layout.prepared(spec.dataset))
        _, test_split, normalize = spec.inputs_on(prepared, device)
        model = model.to(device)
        evaluation = evaluate(
            model, test_split, normalize, config.batch_size, prepared.meta.num_classes, tta=config.tta
        )
        metrics = test_metrics(
            evaluation,
            prepared,
            train_info,
            study=spec.study,
            model=spec.model,
            macs_per_image=count_macs(model, spec.input_shape),
            model_md5=model_md5,
            processes=train_info.get("processes", 1),
            experiment=name,
            seed=train_info["seed"],
        )
        timings = {
            "eval_images_per_second": evaluation.images_per_second,
            "inference_ms_per_image": latency_ms(model, normalize(test_split.inputs[:1])),
        }
        regions = None
        if not prepared.meta.is_image and prepared.meta.input_shape == (2,):

            def regions(out: Path) -> None:
                title = f"{run_name}: decision regions"
                _decision_regions(model, normalize, prepared, title, out / "decision_regions.png")

        publish_evaluation(
            tracker,
            layout,
            f"evaluate_replicate@{replicate}" if replicate else f"evaluate@{name}",
            run_name,
            spec.study,
            evaluation,
            prepared,
            config,
            metrics,
            timings,
            regions,
        )
    return EvaluateStageResult(metrics, timings, tracker.run_id)


def _decision_regions(model: nn.Module, normalize: Normalizer, prepared: PreparedData, title: str, path: Path) -> None:
    grid_x, grid_y = plots.region_grid(prepared.test_inputs)
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1).to(normalize.offset.device)
    regions = predict(model, points, normalize, 0).argmax(dim=1).view(grid_x.shape).cpu()
    plots.decision_regions_png(grid_x, grid_y, regions, prepared.test_inputs, prepared.test_targets, title, path)
