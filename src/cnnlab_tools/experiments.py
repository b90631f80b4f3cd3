"""DVC experiments side by side in a terminal: `python -m cnnlab_tools.experiments` (`make exps`).

`dvc exp show` gives every metric of every model a column of its own, named after its file
(`metrics/mnist_cnn.json:test_accuracy`), and every param one more: three models already
overflow a terminal, and an experiment's five seeds are five models to it. This reads the same data
(`dvc exp show --json`) and prints a line per model instead: for the workspace, each commit shown and each
experiment, the params that differ from the workspace, then each model's test accuracy (for commits and
experiments, of each model whose accuracy differs from the workspace's), an experiment's seeds (params.yaml
`replicates:`) folded into one line, mean +- sd. Then the sweeps: the experiments from one commit that
change the same params (what `dvc exp run --queue -S 'key=a,b,c'` queues), a line per run, ordered by the
swept value, under the sweep id their MLflow runs are tagged with (`cnnlab.sweep`).

    python -m cnnlab_tools.experiments                 # the table, then the sweeps
    python -m cnnlab_tools.experiments --plots DIR     # and per sweep, DIR/sweep-<id>.png: accuracy against the value
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.plots import scatter_png
from cnnlab.tracking.protocol import flatten
from cnnlab.tracking.sweeps import sweep_id, swept_params

METRICS_DIR = "metrics/"
METRICS_SUFFIX = ".json"


@dataclass(frozen=True)
class Revision:
    label: str  # "workspace", a branch and its commit, or an experiment's name and commit
    state: str  # an experiment's: Success, Failed, Queued, Running; "" for commits
    params: dict[str, str]  # flattened params.yaml, as in MLflow
    accuracy: dict[str, float] = field(default_factory=dict)  # model -> test accuracy
    seeds: dict[str, list[float]] = field(default_factory=dict)  # experiment -> every seed's test accuracy
    rev: str = ""
    baseline: Revision | None = None  # an experiment's: the commit it started from


def _revision(entry: Mapping[str, Any], label: str, state: str, baseline: Revision | None = None) -> Revision:
    data = entry.get("data") or {}
    raw_params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    accuracy: dict[str, float] = {}
    seeds: dict[str, list[float]] = {}
    for path, content in (data.get("metrics") or {}).items():
        values = (content.get("data") or {}) if isinstance(content, Mapping) else {}
        value = values.get("test_accuracy")
        if path.startswith(METRICS_DIR) and path.endswith(METRICS_SUFFIX) and isinstance(value, (int, float)):
            model = path[len(METRICS_DIR) : -len(METRICS_SUFFIX)]
            accuracy[model] = float(value)
            seeds.setdefault(str(values.get("experiment") or model), []).append(float(value))
    return Revision(label, state, flatten(raw_params), accuracy, seeds, entry.get("rev", ""), baseline)


def revisions(shown: list[Mapping[str, Any]]) -> list[Revision]:
    """The workspace, each commit and each experiment of `dvc exp show --json`, in its order."""
    found = []
    for entry in shown:
        rev = entry.get("rev", "")
        label = "workspace" if rev == "workspace" else f"{entry.get('name') or 'commit'} {rev[:7]}"
        commit = _revision(entry, label, "")
        found.append(commit)
        for experiment in entry.get("experiments") or []:
            state = ((experiment.get("executor") or {}).get("state") or "").capitalize()
            for run in experiment.get("revs") or []:
                name = experiment.get("name") or run.get("name") or "experiment"
                found.append(_revision(run, f"{name} {run.get('rev', '')[:7]}", state, commit))
    return found


def _accuracy_lines(revision: Revision, workspace: Revision, shown: set[str] | None = None) -> list[str]:
    """Each experiment's accuracy (mean +- sd of its seeds): those in `shown`, else those that differ from the
    workspace's (all of them for the workspace itself)."""
    lines = []
    for experiment, values in revision.seeds.items():
        if shown is not None and experiment not in shown:
            continue
        if shown is None and revision is not workspace and workspace.seeds.get(experiment) == values:
            continue
        if len(values) == 1:
            lines.append(f"    {experiment:28s} test accuracy {values[0]:7.2%}")
        else:
            sd = 100 * statistics.stdev(values)
            lines.append(
                f"    {experiment:28s} test accuracy {statistics.fmean(values):7.2%} +- {sd:.2f} ({len(values)} seeds)"
            )
    return lines


def table(found: list[Revision]) -> str:
    if not found:
        return "no experiments"
    workspace = found[0]
    lines = []
    for revision in found:
        changed = [
            f"{key}={value}" for key, value in sorted(revision.params.items()) if workspace.params.get(key) != value
        ]
        changed += [f"{key} (gone)" for key in sorted(set(workspace.params) - set(revision.params))]
        lines.append("  ".join(part for part in (revision.label, revision.state, ", ".join(changed)) if part))
        lines += _accuracy_lines(revision, workspace)
    return "\n".join(lines)


@dataclass(frozen=True)
class Sweep:
    id: str  # as the runs' MLflow tag cnnlab.sweep
    baseline: Revision
    keys: tuple[str, ...]  # the swept params
    runs: tuple[tuple[dict[str, str], Revision], ...]  # each run's swept values, ordered by them

    @property
    def models(self) -> set[str]:
        """The experiments whose accuracy some run of the sweep changed (a point equal to the baseline too)."""
        return {
            experiment
            for _, revision in self.runs
            for experiment, values in revision.seeds.items()
            if self.baseline.seeds.get(experiment) != values
        }


def sweeps(found: list[Revision]) -> list[Sweep]:
    """The experiments of one baseline commit that change the same params, where two or more do. An
    experiment that changes nothing is the point at the baseline's own value (DVC cannot tell which keys
    `-S` set when it set them to the value they had): it joins every sweep of its baseline."""
    groups: dict[tuple[str, tuple[str, ...]], tuple[Revision, list[tuple[dict[str, str], Revision]]]] = {}
    for revision in found:
        if revision.baseline is None:
            continue
        changed = swept_params(revision.baseline.params, revision.params)
        key = (revision.baseline.rev, tuple(sorted(changed)))
        groups.setdefault(key, (revision.baseline, []))[1].append((changed, revision))
    found_sweeps = []
    for (baseline_rev, keys), (baseline, runs) in groups.items():
        if len(runs) < 2 or not keys:
            continue
        unchanged = groups.get((baseline_rev, ()), (baseline, []))[1]
        runs = runs + [({key: baseline.params.get(key, "") for key in keys}, revision) for _, revision in unchanged]
        runs.sort(key=lambda item: [_sortable(item[0][key]) for key in keys])
        found_sweeps.append(Sweep(sweep_id(baseline_rev, keys), baseline, keys, tuple(runs)))
    return found_sweeps


def _sortable(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def sweeps_text(found: list[Sweep]) -> str:
    lines = []
    for sweep in found:
        lines.append(
            f"sweep {sweep.id}: {len(sweep.runs)} runs from {sweep.baseline.label} over {', '.join(sweep.keys)}"
        )
        for values, revision in sweep.runs:
            shown = ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items())
            lines.append(f"  {shown}  ({revision.label} {revision.state})".rstrip())
            lines += ["  " + line for line in _accuracy_lines(revision, sweep.baseline, sweep.models)]
    return "\n".join(lines)


def plot_sweeps(found: list[Sweep], out_dir: Path) -> list[Path]:
    """Per sweep over one numeric param: the test accuracy of each model it changed against the swept value."""
    written = []
    for sweep in found:
        key = sweep.keys[0]
        if len(sweep.keys) != 1 or any(_sortable(values[key])[0] != 0 for values, _ in sweep.runs):
            continue
        points = [
            (f"{experiment} {values[key]}", float(values[key]), statistics.fmean(accuracies))
            for values, revision in sweep.runs
            for experiment, accuracies in revision.seeds.items()
            if experiment in sweep.models
        ]
        if points:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"sweep-{sweep.id}.png"
            scatter_png(points, f"sweep {sweep.id}: test accuracy against {key}", key, path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plots", type=Path, help="write each sweep's accuracy-against-value figure here")
    args, dvc_args = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    done = subprocess.run(["dvc", "exp", "show", "--json", *dvc_args], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr.strip() or "dvc exp show failed", file=sys.stderr)
        return done.returncode
    found = revisions(json.loads(done.stdout))
    print(table(found))
    grouped = sweeps(found)
    if grouped:
        print("\n" + sweeps_text(grouped))
    if args.plots is not None:
        for path in plot_sweeps(grouped, args.plots):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
