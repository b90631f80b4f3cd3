"""evaluate@NAME: the model train@NAME wrote, tested; metrics, figures, and their MLflow record."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab import plots
from cnnlab.config.params import Params
from cnnlab.data.loader import Normalizer
from cnnlab.data.prepared import PreparedData, load_prepared
from cnnlab.engine.evaluation import evaluate, latency_ms, predict
from cnnlab.engine.runtime import select_device
from cnnlab.io import check_writable, md5sum
from cnnlab.models.complexity import count_macs
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import CHECKPOINT, load_trained
from cnnlab.pipeline.evaluation import EvaluateStageResult, publish_evaluation, test_metrics
from cnnlab.tracking.client import open_run


def evaluate_experiment(params: Params, name: str, layout: Layout) -> EvaluateStageResult:
    config = params.experiment(name).evaluate
    check_writable(layout.metrics_dir, layout.figures(name).parent)
    spec, model, train_info = load_trained(layout, name)
    model_md5 = md5sum(layout.model_dir(name) / CHECKPOINT)
    # Opened first: the tracking worker starts MLflow while this process evaluates.
    with open_run(spec.study, run_name=name, model_md5=model_md5) as tracker:
        prepared = load_prepared(layout.prepared(spec.dataset))
        device = select_device()
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
        )
        timings = {
            "eval_images_per_second": evaluation.images_per_second,
            "inference_ms_per_image": latency_ms(model, normalize(test_split.inputs[:1])),
        }
        regions = None
        if not prepared.meta.is_image and prepared.meta.input_shape == (2,):

            def regions(out: Path) -> None:
                _decision_regions(model, normalize, prepared, f"{name}: decision regions", out / "decision_regions.png")

        publish_evaluation(
            tracker,
            layout,
            f"evaluate@{name}",
            name,
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
