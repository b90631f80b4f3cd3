"""A throwaway copy of the project as its own git repository, for tests and the benchmark.

`smoke_profile` shrinks params.yaml to generated data and short training, so
the whole DAG builds offline in minutes while keeping every stage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILES = ("params.yaml", "dvc.yaml", "stages", "src", "pyproject.toml", ".gitignore", ".dvc", ".dvcignore")

# Small enough for CI, big enough that the CNN learns the synthetic strokes.
SMOKE_MNIST = {"train_size": 3000, "test_size": 1000, "seed": 0}
SMOKE_CIFAR10 = {"train_size": 256, "test_size": 128, "seed": 0}


def set_in(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def smoke_profile(params: dict[str, Any], image_folder: Path | None = None) -> dict[str, Any]:
    """Edit raw params in place: synthetic MNIST and CIFAR-10, a smaller spiral, 1-2 epochs.

    The cats-vs-dogs folder becomes `image_folder` (see `write_image_folder`) with small crops, and
    ImageNet weights random ones (none can be had offline); without a folder, catsdogs and its
    transfer experiments are left out.
    """
    _smoke_catsdogs(params, image_folder)
    for dataset in ("mnist", "cifar10"):
        set_in(params, f"datasets.{dataset}.acquire.source", "synthetic")
    set_in(params, "datasets.mnist.acquire.synthetic", dict(SMOKE_MNIST))
    set_in(params, "datasets.cifar10.acquire.synthetic", dict(SMOKE_CIFAR10))
    set_in(params, "datasets.spiral.acquire.points_per_class", 300)
    for name, experiment in params["experiments"].items():
        train = experiment["train"]
        if name.startswith("spiral"):
            train["epochs"] = 300
        elif name.startswith("mnist"):
            train["epochs"] = 2
        else:
            train["epochs"], train["batch_size"] = 1, 64
    return params


def _smoke_catsdogs(params: dict[str, Any], image_folder: Path | None) -> None:
    if "catsdogs" not in params.get("datasets", {}):
        return
    if image_folder is None:
        del params["datasets"]["catsdogs"]
        params["transfer"] = {k: v for k, v in (params.get("transfer") or {}).items() if v["dataset"] != "catsdogs"}
        return
    set_in(params, "datasets.catsdogs.acquire.source", str(image_folder))
    params["datasets"]["catsdogs"]["prepare"].update(resize=0, crop=32, test_fraction=0.25)
    for transfer in (params.get("transfer") or {}).values():
        if transfer["backbone"]["weights"] == "imagenet":
            transfer["backbone"].update(weights="none", weights_file="")
        transfer["evaluate"]["batch_size"] = 0


def write_image_folder(root: Path, classes: tuple[str, ...] = ("circles", "squares"), per_class: int = 24) -> Path:
    """A small real image folder: PNG files of class-specific shapes at varied sizes and places."""
    import torch
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


def git(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "cnnlab", "GIT_COMMITTER_NAME": "cnnlab",
           "GIT_AUTHOR_EMAIL": "cnnlab@localhost", "GIT_COMMITTER_EMAIL": "cnnlab@localhost"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def copy_project(source: Path, root: Path, edit: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    """Copy the project at `source` into `root` as a fresh git repository; `edit` may change params first."""
    root.mkdir(parents=True)
    for item in PROJECT_FILES:
        path = source / item
        if path.is_dir():
            shutil.copytree(path, root / item, ignore=shutil.ignore_patterns("__pycache__", "tmp", "*.egg-info"))
        elif path.exists():
            shutil.copy2(path, root / item)
    params = yaml.safe_load((root / "params.yaml").read_text())
    if edit is not None:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(["init", "-q"], root)
    git(["add", "-A"], root)
    git(["commit", "-qm", "cnnlab sandbox"], root)
    return root
