"""Shared fixtures: a throwaway git + DVC copy of the project, with params overrides."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PROJECT_FILES = ("params.yaml", "dvc.yaml", "stages", "src", "pyproject.toml", ".gitignore", ".dvc", ".dvcignore")

# Small enough for CI, big enough that the CNN learns the synthetic strokes.
SMALL_SYNTHETIC = {"train_size": 3000, "test_size": 1000, "seed": 0}


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


def set_in(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def write_image_folder(root: Path, classes: tuple[str, ...] = ("circles", "squares"), per_class: int = 24) -> Path:
    """A small real image folder: PNG files of class-specific shapes at varied sizes and places."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = int(torch.randint(40, 72, (1,), generator=generator))
            image = torch.full((3, size, size), 30, dtype=torch.uint8)
            centre = size // 2 + int(torch.randint(-4, 5, (1,), generator=generator))
            radius = size // 4
            ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            if label == 0:
                mask = (ys - centre) ** 2 + (xs - centre) ** 2 <= radius**2
            else:
                mask = ((ys - centre).abs() <= radius) & ((xs - centre).abs() <= radius)
            image[:, mask] = torch.tensor([200, 60 + 100 * label, 90], dtype=torch.uint8)[:, None]
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name / f"{name}_{i}.png")
    return root


def synthetic_params(params: dict[str, Any], image_folder: Path | None = None) -> dict[str, Any]:
    """The offline test profile: small synthetic MNIST and CIFAR, a smaller spiral, short training.

    With `image_folder`, also an imagefolder dataset `shapes` and an experiment on it.
    """
    for dataset in ("mnist", "cifar10"):
        set_in(params, f"datasets.{dataset}.acquire.source", "synthetic")
    set_in(params, "datasets.mnist.acquire.synthetic", dict(SMALL_SYNTHETIC))
    set_in(params, "datasets.cifar10.acquire.synthetic", {"train_size": 256, "test_size": 128, "seed": 0})
    set_in(params, "datasets.spiral.acquire.points_per_class", 300)
    for name, experiment in params["experiments"].items():
        train = experiment["train"]
        if name.startswith("spiral"):
            train["epochs"] = 300
        elif name.startswith("mnist"):
            train["epochs"] = 2
        else:
            train["epochs"], train["batch_size"] = 1, 64
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
    """Copy the project into `root` as a fresh git repository; `edit` may change params before the commit."""
    root.mkdir(parents=True)
    for item in PROJECT_FILES:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__", "tmp", "*.egg-info"))
        elif source.exists():
            shutil.copy2(source, root / item)
    params = yaml.safe_load((root / "params.yaml").read_text())
    if edit is not None:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "test project"], root)
    return root


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """A factory of fresh project copies under this test's temporary directory."""

    def make(edit: Callable[[dict[str, Any]], Any] | None = None, name: str = "project") -> Path:
        return copy_project(tmp_path / name, edit)

    return make
