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
from cnnlab.plots import scatter_png, seeds_png
from cnnlab.tracking.backend import execution_facts as runs_of
from cnnlab.uncertainty import Difference, Spread, welch

# Facts of the execution that made each model, read from its MLflow run.
EXECUTION_FACTS = ("train_seconds", "train_images_per_second", "inference_ms_per_image")

TABLE_COLUMNS = (
    ("experiment", "experiment", "{}"),
    ("study", "study", "{}"),
    ("data", "data", "{}"),
    ("model", "model", "{}"),
    ("test accuracy", "test_accuracy", "{:.2%}"),
    ("+- sd", "test_accuracy_sd", "{:.2%}"),
    ("seeds", "seed_count", "{}"),
    ("diverged seeds", "diverged_seeds", "{}"),
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
    baseline_accuracy: Spread
    candidate_accuracy: Spread
    difference: Difference  # of accuracies (fractions); the sentence says points
    verdict: str  # "higher", "lower", "no significant difference" or "no interval"
    significance: float

    def sentence(self) -> str:
        base, cand, diff = self.baseline_accuracy, self.candidate_accuracy, self.difference
        points = 100 * diff.difference
        if diff.low is None or diff.high is None or diff.p_value is None:
            single = " and ".join(name for name, s in ((self.baseline, base), (self.candidate, cand)) if s.n < 2)
            return (
                f"{self.question} {self.candidate} reaches {cand.mean:.2%} against {self.baseline}'s {base.mean:.2%} "
                f"({points:+.1f} points), but {single} has one seed: no interval can be given "
                f"(`python -m cnnlab_tools.replicates --seeds 5 {self.baseline} {self.candidate}` adds seeds)."
            )
        interval = f"95% CI {100 * diff.low:+.1f} to {100 * diff.high:+.1f}"
        evidence = f"{_seeds(base.n, cand.n)}, Welch's t-test {_p(diff.p_value)}"
        if self.verdict == "no significant difference":
            return (
                f"{self.question} No significant difference: {self.candidate} {cand.mean:.2%} against "
                f"{self.baseline} {base.mean:.2%}, {points:+.1f} points ({interval}; {evidence})."
            )
        half = 100 * (diff.high - diff.low) / 2
        direction = "beats" if self.verdict == "higher" else "falls below"
        return (
            f"{self.question} {self.candidate} {direction} {self.baseline} by {abs(points):.1f} +- {half:.1f} points "
            f"({cand.mean:.2%} against {base.mean:.2%}; {interval}; {evidence})."
        )

    def to_json(self) -> dict[str, Any]:
        diff = self.difference
        return {
            "question": self.question,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "baseline_accuracy": self.baseline_accuracy.mean,
            "candidate_accuracy": self.candidate_accuracy.mean,
            "seeds": [self.baseline_accuracy.n, self.candidate_accuracy.n],
            "difference_points": 100 * diff.difference,
            "ci95_points": None if diff.low is None else [100 * diff.low, 100 * (diff.high or 0.0)],
            "p_value": diff.p_value,
            "test": "Welch's t-test, two-sided",
            "significance": self.significance,
            "verdict": self.verdict,
            "sentence": self.sentence(),
        }


def _seeds(baseline: int, candidate: int) -> str:
    return f"{baseline} seeds each" if baseline == candidate else f"{baseline} and {candidate} seeds"


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def answer(comparison: Comparison, accuracies: Mapping[str, Spread], significance: float) -> Finding:
    base, cand = accuracies[comparison.baseline], accuracies[comparison.candidate]
    difference = welch(base, cand)
    significant = difference.significant(significance)
    if significant is None:
        verdict = "no interval"
    elif not significant:
        verdict = "no significant difference"
    else:
        verdict = "higher" if difference.difference > 0 else "lower"
    return Finding(
        comparison.question, comparison.baseline, comparison.candidate, base, cand, difference, verdict, significance
    )


def execution_facts(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run, the MLflow run that trained its model (by the model file's MD5) and its timings."""
    return runs_of(
        {name: (values["study"], values["model_md5"]) for name, values in metrics.items() if "model_md5" in values},
        EXECUTION_FACTS,
    )


def runs_of_each(params: Params) -> dict[str, list[str]]:
    """Each experiment's runs as params.yaml lists them now (its own, then its replicates): a metrics file
    left by a replicate since removed is never counted."""
    return {name: list(params.seeds(name)) for name in params.experiments} | {name: [name] for name in params.transfer}


def summarize(
    params: Params, metrics: Mapping[str, Mapping[str, Any]], executions: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Every experiment's metrics (its own run's, with its execution's facts where known) and its accuracy
    over all its seeds, and the findings whose two experiments both have accuracies. A diverged seed
    (train.json says so) has no accuracy: it is listed, never averaged."""
    executions = executions or {}
    experiments, accuracies, missing = {}, {}, []
    for name, wanted in runs_of_each(params).items():
        missing += [run for run in wanted if run not in metrics]
        runs = {run: metrics[run] for run in wanted if run in metrics}
        if not runs:
            continue
        scored = {run: values for run, values in runs.items() if not values.get("diverged")}
        own = runs.get(name) or next(iter(runs.values()))
        values = dict(own) | dict(executions.get(name, {}))
        synthetic = values.get("data_origin") == "synthetic"  # a stand-in: say so next to every number
        values["data"] = f"{values['dataset']} (synthetic)" if synthetic else values["dataset"]
        values["diverged_seeds"] = [v.get("seed", run) for run, v in runs.items() if v.get("diverged")]
        values["seeds"] = {str(v.get("seed", run)): v["test_accuracy"] for run, v in scored.items()}
        values["seed_count"] = len(scored)
        if scored:
            accuracy = accuracies[name] = Spread(tuple(v["test_accuracy"] for v in scored.values()))
            values["test_accuracy"] = accuracy.mean
            values["test_accuracy_sd"] = accuracy.sd
            values["test_accuracy_ci95"] = accuracy.interval()
            values["test_loss"] = Spread(tuple(v["test_loss"] for v in scored.values())).mean
        experiments[name] = values
    findings = [
        answer(c, accuracies, params.report.significance)
        for c in params.report.comparisons
        if c.baseline in accuracies and c.candidate in accuracies
    ]
    return {
        "experiments": experiments,
        "findings": [finding.to_json() for finding in findings],
        "missing": missing,
        "significance": params.report.significance,
        "synthetic_data": sorted({v["dataset"] for v in experiments.values() if v.get("data_origin") == "synthetic"}),
    }


def figures(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Per study (accuracies compare only within one dataset): each experiment's seeds with their mean and
    interval, where one has several; accuracy against parameters and against training throughput, for
    every study with at least two experiments."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_study: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, values in summary["experiments"].items():
        if "test_accuracy" in values:  # not when every seed diverged
            by_study.setdefault(values["study"], []).append((name, values))
    written = []
    for study, members in by_study.items():
        if any(values["seed_count"] > 1 for _, values in members):
            path = out_dir / f"{study}_seeds.png"
            seeds_png(
                [(name, list(values["seeds"].values()), values["test_accuracy_ci95"]) for name, values in members],
                f"{study}: test accuracy of each seed, mean and its 95% interval",
                path,
            )
            written.append(path)
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
            cells.append("" if value is None or value == [] else fmt.format(value))
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
        "Test accuracy and loss are means over the experiment's seeds (+- their standard deviation); the other "
        "columns are of the experiment's own seed. "
        "Train time, images/s and latency come from each model's MLflow run (found by the model file's MD5); "
        "they are empty where this store has no run that trained the model, e.g. one restored from a "
        "teammate's DVC run-cache.",
        "",
    ]
    if summary["findings"]:
        lines += [
            "## The course's questions, answered from these numbers",
            "",
            "Each difference comes with its 95% confidence interval and Welch's t-test over the seeds; it is called "
            f"significant when p < {summary['significance']}.",
            "",
        ]
        lines += [f"- {finding['sentence']}" for finding in summary["findings"]]
        lines.append("")
    if summary["missing"]:
        lines.append(f"Not yet evaluated: {', '.join(summary['missing'])}.")
        lines.append("")
    return "\n".join(lines)
