"""An evaluation's outputs (metrics, DVC's confusion records, figures) and their record in MLflow."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab import plots
from cnnlab.config.experiments import EvaluateConfig
from cnnlab.data.prepared import PreparedData
from cnnlab.engine.evaluation import Evaluation
from cnnlab.io import replaced_atomically, write_json
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import dataset_record
from cnnlab.tracking.client import Tracker, registered_model_name


@dataclass(frozen=True)
class EvaluateStageResult:
    metrics: dict[str, Any]  # metrics/NAME.json: only what the model and data determine
    timings: dict[str, float]  # facts of this execution (speed), in MLflow only
    run_id: str | None


def test_metrics(
    evaluation: Evaluation,
    prepared: PreparedData,
    train_info: dict[str, Any],
    *,
    study: str,
    model: str,
    macs_per_image: int,
    model_md5: str,
    **more: Any,
) -> dict[str, Any]:
    """The metrics every evaluation reports (and `more`): what the model scores on the test split, what it
    costs, and what it was trained on and how."""
    return {
        "test_accuracy": evaluation.accuracy,
        "test_loss": evaluation.loss,
        "param_count": train_info["param_count"],
        "macs_per_image": macs_per_image,
        "device": train_info["device"],
        "precision": train_info["precision"],
        "study": study,
        "dataset": prepared.meta.name,
        "data_origin": prepared.meta.origin,
        "model": model,
        "epochs": train_info["epochs"],
        "final_train_accuracy": train_info["final_train_accuracy"],
        "per_class_accuracy": dict(zip(prepared.meta.class_names, evaluation.per_class_accuracy, strict=True)),
        **more,
        "model_md5": model_md5,
    }


def diverged_evaluation(layout: Layout, name: str, train_info: dict[str, Any], **facts: Any) -> EvaluateStageResult:
    """The evaluation of a run whose training diverged (train.json says why; no model was written): metrics
    that say so and hold no accuracy, so that no table or plot can mistake it for a result, an empty
    confusion record and an empty figures directory (DVC's declared outputs). Nothing goes to MLflow: the
    training's run is marked already."""
    with replaced_atomically(layout.figures(name)) as tmp_figures:
        tmp_figures.mkdir(parents=True)
    no_records: list[dict[str, str]] = []
    write_json(layout.confusion_records(name), no_records)
    metrics: dict[str, Any] = {
        "diverged": train_info["diverged"]["reason"],
        **{key: train_info[key] for key in ("param_count", "device", "precision", "epochs") if key in train_info},
        **facts,
    }
    write_json(layout.metrics(name), metrics)
    return EvaluateStageResult(metrics, {}, None)


def publish_evaluation(
    tracker: Tracker,
    layout: Layout,
    stage: str,
    name: str,
    study: str,
    evaluation: Evaluation,
    prepared: PreparedData,
    config: EvaluateConfig,
    metrics: dict[str, Any],
    timings: dict[str, float],
    draw_more: Callable[[Path], None] | None = None,
) -> None:
    """Write the evaluation's files and record them in `tracker`: the run that trained the model, opened by its MD5.

    `draw_more` adds figures of its own to the figures directory before it is published.
    """
    class_names = prepared.meta.class_names
    figures = layout.figures(name)
    with replaced_atomically(figures) as tmp_figures:
        tmp_figures.mkdir(parents=True)
        plots.confusion_png(
            evaluation.confusion,
            class_names,
            f"{name}: test accuracy {evaluation.accuracy:.2%}",
            tmp_figures / "confusion.png",
        )
        if prepared.meta.is_image and config.grid_images:
            _image_grids(prepared, evaluation, config.grid_images, name, tmp_figures)
        if draw_more is not None:
            draw_more(tmp_figures)
    write_json(
        layout.confusion_records(name), confusion_records(evaluation.targets, evaluation.predictions, class_names)
    )
    write_json(layout.metrics(name), metrics)

    tracker.set_tags({"dvc.evaluate_stage": os.environ.get("DVC_STAGE") or stage})
    tracker.log_dataset(dataset_record(layout.prepared(prepared.meta.name), prepared.meta), context="eval")
    numeric = {
        k: v
        for k, v in {**metrics, **timings}.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epochs", "processes")
    }
    tracker.log_metrics({**numeric, **{f"test_accuracy.{c}": a for c, a in metrics["per_class_accuracy"].items()}})
    for figure in sorted(Path(figures).glob("*.png")):
        tracker.log_artifact(figure, "figures")
    tracker.log_artifact(layout.metrics(name))
    tracker.mark_evaluated(
        registered_model_name(study, name), {k: metrics[k] for k in ("test_accuracy", "test_loss") if k in metrics}
    )


def confusion_records(
    targets: torch.Tensor, predictions: torch.Tensor, class_names: tuple[str, ...]
) -> list[dict[str, str]]:
    """One {actual, predicted} row per test sample: the input DVC's confusion template expects."""
    return [
        {"actual": class_names[t], "predicted": class_names[p]}
        for t, p in zip(targets.tolist(), predictions.tolist(), strict=True)
    ]


def _image_grids(prepared: PreparedData, evaluation: Evaluation, count: int, name: str, out: Path) -> None:
    """The first test images, the first correctly classified ones and the most confident mistakes,
    with true and predicted labels.

    Images are shown as stored (before any pixel permutation), so a person can read them.
    """
    names = prepared.meta.class_names
    right = evaluation.predictions == evaluation.targets
    wrong = (~right).nonzero().flatten()
    grids = (
        (torch.arange(min(count, len(evaluation.targets))), "test_images.png", f"{name}: first test images"),
        (right.nonzero().flatten()[:count], "correct.png", f"{name}: first correctly classified"),
        (
            wrong[evaluation.confidences[wrong].argsort(descending=True)][:count],
            "confident_mistakes.png",
            f"{name}: most confident mistakes",
        ),
    )
    for indices, file, title in grids:
        captions = [
            f"true {names[evaluation.targets[i]]}\npred {names[evaluation.predictions[i]]}"
            + (f" ({evaluation.confidences[i]:.0%})" if file == "confident_mistakes.png" else "")
            for i in indices.tolist()
        ]
        plots.image_grid_png(prepared.test_inputs[indices], captions, title, out / file)
