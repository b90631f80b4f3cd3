"""Side-by-side comparison of every experiment, and the course's questions answered from the numbers.

Results (accuracy, parameters, MACs) come from the metrics files, which DVC caches and restores by
content. How long and how fast each model trained is a fact of one execution, so it lives in
MLflow: the report looks it up there, in the run tagged with the model file's MD5, and leaves the
cells empty where this machine's store has no such run (a model restored from a teammate's
run-cache into a private store, or tracking off).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config.params import Params
from cnnlab.config.report import Comparison
from cnnlab.plots import scatter_png
from cnnlab.tracking.backend import execution_facts as runs_of

# Facts of the execution that made each model, read from its MLflow run.
EXECUTION_FACTS = ("train_seconds", "train_images_per_second", "inference_ms_per_image")

TABLE_COLUMNS = (
    ("experiment", "experiment", "{}"),
    ("study", "study", "{}"),
    ("data", "data", "{}"),
    ("model", "model", "{}"),
    ("test accuracy", "test_accuracy", "{:.2%}"),
    ("test loss", "test_loss", "{:.4f}"),
    ("parameters", "param_count", "{:,}"),
    ("MACs/image", "macs_per_image", "{:,}"),
    ("train s", "train_seconds", "{:.1f}"),
    ("train img/s", "train_images_per_second", "{:,.0f}"),
    ("latency ms", "inference_ms_per_image", "{:.2f}"),
    ("device", "device", "{}"),
    ("MLflow run", "run_id", "{:.8}"),
)


@dataclass(frozen=True)
class Finding:
    question: str
    baseline: str
    candidate: str
    baseline_accuracy: float
    candidate_accuracy: float
    difference_points: float
    verdict: str  # "higher", "lower" or "about the same"

    def sentence(self) -> str:
        gap = f"{self.difference_points:+.1f} points"
        if self.verdict == "about the same":
            outcome = f"about the same ({gap})"
        else:
            outcome = f"{self.verdict} by {abs(self.difference_points):.1f} points"
        return (
            f"{self.question} {self.candidate} reaches {self.candidate_accuracy:.2%} against "
            f"{self.baseline}'s {self.baseline_accuracy:.2%}: {outcome}."
        )


def answer(comparison: Comparison, metrics: Mapping[str, Mapping[str, Any]], tolerance_points: float) -> Finding:
    base = metrics[comparison.baseline]["test_accuracy"]
    cand = metrics[comparison.candidate]["test_accuracy"]
    difference = 100 * (cand - base)
    if abs(difference) < tolerance_points:
        verdict = "about the same"
    else:
        verdict = "higher" if difference > 0 else "lower"
    return Finding(comparison.question, comparison.baseline, comparison.candidate, base, cand, difference, verdict)


def execution_facts(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per experiment, the MLflow run that trained its model (by the model file's MD5) and its timings."""
    return runs_of(
        {name: (values["study"], values["model_md5"]) for name, values in metrics.items() if "model_md5" in values},
        EXECUTION_FACTS,
    )


def summarize(
    params: Params, metrics: Mapping[str, Mapping[str, Any]], executions: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Every experiment's metrics (with its execution's facts where known), and the findings whose two
    experiments both have metrics."""
    findings = [
        answer(c, metrics, params.report.tolerance_points)
        for c in params.report.comparisons
        if c.baseline in metrics and c.candidate in metrics
    ]
    names = [*params.experiments, *params.transfer]
    executions = executions or {}
    experiments = {}
    for name in names:
        if name in metrics:
            values = dict(metrics[name])
            synthetic = values.get("data_origin") == "synthetic"  # a stand-in: say so next to every number
            values["data"] = f"{values['dataset']} (synthetic)" if synthetic else values["dataset"]
            experiments[name] = values | dict(executions.get(name, {}))
    return {
        "experiments": experiments,
        "findings": [finding.__dict__ | {"sentence": finding.sentence()} for finding in findings],
        "missing": [name for name in names if name not in metrics],
        "synthetic_data": sorted({v["dataset"] for v in experiments.values() if v.get("data_origin") == "synthetic"}),
    }


def figures(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Per study (accuracies compare only within one dataset): accuracy against parameters and
    against training throughput, for every study with at least two experiments."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_study: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, values in summary["experiments"].items():
        by_study.setdefault(values["study"], []).append((name, values))
    written = []
    for study, members in by_study.items():
        if len(members) < 2:
            continue
        for key, label, suffix in (
            ("param_count", "parameters", "params"),
            ("train_images_per_second", "training images/s", "throughput"),
        ):
            points = [(name, values[key], values["test_accuracy"]) for name, values in members if key in values]
            if len(points) < 2:  # throughput is known only for models whose MLflow run this store holds
                continue
            path = out_dir / f"{study}_accuracy_vs_{suffix}.png"
            scatter_png(points, f"{study}: test accuracy against {label}", label, path)
            written.append(path)
    return written


def markdown(summary: Mapping[str, Any]) -> str:
    header = "| " + " | ".join(title for title, _, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    rows = []
    for name, values in summary["experiments"].items():
        cells = []
        for _, key, fmt in TABLE_COLUMNS:
            value = name if key == "experiment" else values.get(key)
            cells.append("" if value is None else fmt.format(value))
        rows.append("| " + " | ".join(cells) + " |")
    lines = ["# Experiments side by side", ""]
    if summary.get("synthetic_data"):
        lines += [
            f"**Generated data**: {', '.join(summary['synthetic_data'])} are synthetic stand-ins "
            "(`acquire.source: synthetic`), not the real datasets: these numbers are not the course's.",
            "",
        ]
    lines += [
        header,
        rule,
        *rows,
        "",
        "Train time, images/s and latency come from each model's MLflow run (found by the model file's MD5); "
        "they are empty where this store has no run that trained the model, e.g. one restored from a "
        "teammate's DVC run-cache.",
        "",
    ]
    if summary["findings"]:
        lines += ["## The course's questions, answered from these numbers", ""]
        lines += [f"- {finding['sentence']}" for finding in summary["findings"]]
        lines.append("")
    if summary["missing"]:
        lines.append(f"Not yet evaluated: {', '.join(summary['missing'])}.")
        lines.append("")
    return "\n".join(lines)
