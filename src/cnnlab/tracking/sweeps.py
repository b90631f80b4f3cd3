"""Which sweep a run belongs to, so that MLflow and `make exps` group the runs of one.

DVC runs each value of `dvc exp run --queue -S 'key=a,b,c'` (and each point of a grid over several keys)
as an experiment of its own, started from the same baseline commit with params.yaml changed at the swept
keys. So a sweep is: the experiments from one baseline commit that change the same keys. Its id is a digest
of the baseline and those keys; DVC tells a stage its baseline (DVC_EXP_BASELINE_REV) and the project it
came from (DVC_ROOT), and the swept values are params.yaml's differences from the baseline's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cnnlab.tracking.protocol import flatten

SWEEP_TAG = "cnnlab.sweep"  # the sweep's id: the same for every run of one sweep
SWEPT_TAG = "cnnlab.swept"  # this run's values of the swept params, "key=value, ..."
PARAMS_FILE = "params.yaml"
TAG_VALUE_LIMIT = 5000


def sweep_id(baseline_rev: str, keys: Iterable[str]) -> str:
    text = "\n".join([baseline_rev, *sorted(keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def swept_params(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, str]:
    """The flattened params whose value `current` changes from `baseline` (added ones included)."""
    before, after = flatten(baseline), flatten(current)
    return {key: value for key, value in after.items() if before.get(key) != value}


def sweep_tags(workspace: Path = Path(".")) -> dict[str, str]:
    """The sweep tags of a run in a DVC experiment (none outside one, or when its baseline cannot be read)."""
    baseline_rev = os.environ.get("DVC_EXP_BASELINE_REV")
    if not baseline_rev:
        return {}
    try:
        shown = subprocess.run(
            ["git", "show", f"{baseline_rev}:{PARAMS_FILE}"],
            cwd=os.environ.get("DVC_ROOT") or workspace,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        baseline = yaml.safe_load(shown.stdout) or {}
        current = yaml.safe_load((workspace / PARAMS_FILE).read_text()) or {}
    except (OSError, subprocess.SubprocessError, yaml.YAMLError):
        return {}
    swept = swept_params(baseline, current)
    if not swept:
        return {}
    values = ", ".join(f"{key}={value}" for key, value in sorted(swept.items()))
    return {SWEEP_TAG: sweep_id(baseline_rev, swept), SWEPT_TAG: values[:TAG_VALUE_LIMIT]}
