"""A throwaway copy of the project as its own git repository, for tests and the benchmark.

The copy is built from what git tracks, never from what a user's runs left
behind: no DVC cache or run-cache, no outputs, no dvc.lock, and params.yaml
as staged in git's index, not as `dvc exp run` or a hand edit left it in the
working tree. Code files are taken from the working tree, so tests see the
change under development.

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

PROJECT_FILES = (
    "params.yaml",
    "dvc.yaml",
    "stages",
    "src",
    "pyproject.toml",
    "constraints.txt",
    "Makefile",
    ".gitignore",
    ".dvc",
    ".dvcignore",
)
PARAMS = "params.yaml"

# Small enough for CI, big enough that the CNN learns the synthetic strokes.
SMOKE_MNIST = {"train_size": 3000, "test_size": 1000, "seed": 0}
SMOKE_CIFAR10 = {"train_size": 256, "test_size": 128, "seed": 0}
SMOKE_GRID_IMAGES = 4  # a figure of images per grid is what takes an evaluate stage's time on these sizes


def set_in(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def smoke_profile(params: dict[str, Any], image_folder: Path | None = None) -> dict[str, Any]:
    """Edit raw params in place: synthetic MNIST and CIFAR-10, a smaller spiral, 1-2 epochs, small image grids,
    one seed per experiment (no `replicates:`; a test that needs seeds adds its own).

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
    params["replicates"] = {}
    for name, experiment in params["experiments"].items():
        if experiment["evaluate"].get("grid_images"):
            experiment["evaluate"]["grid_images"] = SMOKE_GRID_IMAGES
        train = experiment["train"]
        if name.startswith("spiral"):
            train["epochs"] = 300
        elif name.startswith("mnist"):
            train["epochs"] = 2
        else:
            train["epochs"], train["batch_size"] = 1, 64
    return params


def smoke_experiment(params: dict[str, Any], experiment: str) -> dict[str, Any]:
    """The smoke profile cut down to one experiment and its dataset (no transfer, no comparisons)."""
    smoke_profile(params)
    dataset = params["experiments"][experiment]["dataset"]
    params["datasets"] = {dataset: params["datasets"][dataset]}
    params["experiments"] = {experiment: params["experiments"][experiment]}
    params["transfer"] = {}
    params["report"]["comparisons"] = []
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


def git(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "cnnlab",
        "GIT_COMMITTER_NAME": "cnnlab",
        "GIT_AUTHOR_EMAIL": "cnnlab@localhost",
        "GIT_COMMITTER_EMAIL": "cnnlab@localhost",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd} failed: {done.stderr.strip()}")
    return done.stdout


def committed_params(source: Path) -> dict[str, Any]:
    """params.yaml as git's index holds it (what the next commit would hold), whatever the working tree says."""
    return yaml.safe_load(git(["show", f":{PARAMS}"], source))


def copy_project(source: Path, root: Path, edit: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    """Copy the git-tracked project files of `source` into `root` as a fresh git repository;
    `edit` may change params first."""
    tracked = git(["ls-files", "-z", "--", *PROJECT_FILES], source).split("\0")
    root.mkdir(parents=True)
    for name in filter(None, tracked):
        if name == PARAMS or not (source / name).is_file():  # deleted in the working tree: left out
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, root / name)
    params = committed_params(source)
    if edit is not None:
        edit(params)
    if params.get("replicates"):  # seeds of experiments the edit removed go with them
        experiments = params.get("experiments") or {}
        params["replicates"] = {key: r for key, r in params["replicates"].items() if r["experiment"] in experiments}
    (root / PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    git(["init", "-q"], root)
    git(["add", "-A"], root)
    git(["commit", "-qm", "cnnlab sandbox"], root)
    return root
