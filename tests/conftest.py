"""Shared fixtures: a throwaway git + DVC copy of the project, with params overrides."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cnnlab import sandbox
from cnnlab.sandbox import set_in, smoke_profile, write_image_folder  # noqa: F401  (tests import these from here)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, no telemetry, no stray mirror."""
    env = {k: v for k, v in os.environ.items() if k not in ("CNNLAB_MIRROR", "MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["CNNLAB_DEVICE"] = "cpu"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "cnnlab tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@cnnlab.invalid"
    env.update(extra or {})
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env or run_env(), capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def synthetic_params(params: dict[str, Any], image_folder: Path | None = None) -> dict[str, Any]:
    """The offline smoke profile; with `image_folder`, also an imagefolder dataset `shapes` and an experiment on it,
    and the same folder standing in for cats vs dogs."""
    smoke_profile(params, image_folder)
    if image_folder is not None:
        params["datasets"]["shapes"] = {
            "kind": "imagefolder",
            "acquire": {"source": str(image_folder)},
            "prepare": {"resize": 40, "crop": 32, "test_fraction": 0.25, "split_seed": 0},
        }
        shapes = copy.deepcopy(params["experiments"]["cifar_lenet"])
        shapes.update(study="shapes", dataset="shapes")
        shapes["inputs"] = {"normalize": "train_stats", "permute_pixels": False}
        shapes["train"].update(epochs=3, batch_size=16)
        params["experiments"]["shapes_lenet"] = shapes
    return params


def copy_project(root: Path, edit: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    """Copy this repository's project into `root` as a fresh git repository."""
    return sandbox.copy_project(REPO, root, edit)


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """A factory of fresh project copies under this test's temporary directory."""

    def make(edit: Callable[[dict[str, Any]], Any] | None = None, name: str = "project") -> Path:
        return copy_project(tmp_path / name, edit)

    return make
