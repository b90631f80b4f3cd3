"""Side-by-side comparison of every experiment, and the course's questions answered from the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config import Comparison, Params

TABLE_COLUMNS = (
    ("experiment", "experiment", "{}"),
    ("study", "study", "{}"),
    ("model", "model", "{}"),
    ("test accuracy", "test_accuracy", "{:.2%}"),
    ("test loss", "test_loss", "{:.4f}"),
    ("parameters", "param_count", "{:,}"),
    ("MACs/image", "macs_per_image", "{:,}"),
    ("train s", "train_seconds", "{:.1f}"),
    ("train img/s", "train_images_per_second", "{:,.0f}"),
    ("latency ms", "inference_ms_per_image", "{:.2f}"),
    ("device", "device", "{}"),
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


def summarize(params: Params, metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every experiment's metrics plus the findings whose two experiments both have metrics."""
    findings = [
        answer(c, metrics, params.report.tolerance_points)
        for c in params.report.comparisons
        if c.baseline in metrics and c.candidate in metrics
    ]
    names = [*params.experiments, *params.transfer]
    return {
        "experiments": {name: dict(metrics[name]) for name in names if name in metrics},
        "findings": [finding.__dict__ | {"sentence": finding.sentence()} for finding in findings],
        "missing": [name for name in names if name not in metrics],
    }


def figures(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Per study (accuracies compare only within one dataset): accuracy against parameters and
    against training throughput, for every study with at least two experiments."""
    from cnnlab.plots import scatter_png

    out_dir.mkdir(parents=True, exist_ok=True)
    by_study: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, values in summary["experiments"].items():
        by_study.setdefault(values["study"], []).append((name, values))
    written = []
    for study, members in by_study.items():
        if len(members) < 2:
            continue
        for key, label, suffix in (("param_count", "parameters", "params"),
                                   ("train_images_per_second", "training images/s", "throughput")):
            path = out_dir / f"{study}_accuracy_vs_{suffix}.png"
            scatter_png([(name, values[key], values["test_accuracy"]) for name, values in members],
                        f"{study}: test accuracy against {label}", label, path)
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
    lines = ["# Experiments side by side", "", header, rule, *rows, ""]
    if summary["findings"]:
        lines += ["## The course's questions, answered from these numbers", ""]
        lines += [f"- {finding['sentence']}" for finding in summary["findings"]]
        lines.append("")
    if summary["missing"]:
        lines.append(f"Not yet evaluated: {', '.join(summary['missing'])}.")
        lines.append("")
    return "\n".join(lines)
