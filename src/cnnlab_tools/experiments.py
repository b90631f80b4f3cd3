"""DVC experiments side by side in a terminal: `python -m cnnlab_tools.experiments` (`make exps`).

`dvc exp show` gives every metric of every model a column of its own, named after its file
(`metrics/mnist_cnn.json:test_accuracy`), and every param one more: three models already
overflow a terminal. This reads the same data (`dvc exp show --json`) and prints a line
per model instead: for the workspace, each commit shown and each experiment, the params
that differ from the workspace, then the test accuracy of each model that has one (for
commits and experiments, of each model whose accuracy differs from the workspace's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnlab.tracking.protocol import flatten

METRICS_DIR = "metrics/"
METRICS_SUFFIX = ".json"


@dataclass(frozen=True)
class Revision:
    label: str  # "workspace", a branch and its commit, or an experiment's name and commit
    state: str  # an experiment's: Success, Failed, Queued, Running; "" for commits
    params: dict[str, str]  # flattened params.yaml, as in MLflow
    accuracy: dict[str, float] = field(default_factory=dict)  # model -> test accuracy


def _revision(entry: Mapping[str, Any], label: str, state: str) -> Revision:
    data = entry.get("data") or {}
    params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    accuracy = {}
    for path, content in (data.get("metrics") or {}).items():
        value = (content.get("data") or {}).get("test_accuracy") if isinstance(content, Mapping) else None
        if path.startswith(METRICS_DIR) and path.endswith(METRICS_SUFFIX) and isinstance(value, (int, float)):
            accuracy[path[len(METRICS_DIR) : -len(METRICS_SUFFIX)]] = float(value)
    return Revision(label, state, params, accuracy)


def revisions(shown: list[Mapping[str, Any]]) -> list[Revision]:
    """The workspace, each commit and each experiment of `dvc exp show --json`, in its order."""
    found = []
    for baseline in shown:
        rev = baseline.get("rev", "")
        label = "workspace" if rev == "workspace" else f"{baseline.get('name') or 'commit'} {rev[:7]}"
        found.append(_revision(baseline, label, ""))
        for experiment in baseline.get("experiments") or []:
            state = ((experiment.get("executor") or {}).get("state") or "").capitalize()
            for run in experiment.get("revs") or []:
                name = experiment.get("name") or run.get("name") or "experiment"
                found.append(_revision(run, f"{name} {run.get('rev', '')[:7]}", state))
    return found


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
        models = {
            model: accuracy
            for model, accuracy in revision.accuracy.items()
            if revision is workspace or workspace.accuracy.get(model) != accuracy
        }
        lines.append("  ".join(part for part in (revision.label, revision.state, ", ".join(changed)) if part))
        lines += [f"    {model:28s} test accuracy {accuracy:7.2%}" for model, accuracy in models.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    done = subprocess.run(
        ["dvc", "exp", "show", "--json", *(argv if argv is not None else sys.argv[1:])], capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stderr.strip() or "dvc exp show failed", file=sys.stderr)
        return done.returncode
    print(table(revisions(json.loads(done.stdout))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
