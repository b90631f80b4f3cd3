"""The test project is built from git-tracked files only, and the toolchain is the pinned one."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import yaml

from cnnlab_tools.sandbox import copy_project, git
from conftest import REPO


def test_the_test_project_holds_tracked_files_only_and_the_committed_params(tmp_path: Path):
    user = tmp_path / "user"
    for name, text in {"params.yaml": "answer: 1\n", "dvc.yaml": "stages: {}\n", "src/code.py": "VERSION = 1\n",
                       ".dvc/config": "[core]\n", ".dvc/.gitignore": "/cache\n/tmp\n"}.items():
        (user / name).parent.mkdir(parents=True, exist_ok=True)
        (user / name).write_text(text)
    git(["init", "-q"], user)
    git(["add", "-A"], user)
    git(["commit", "-qm", "project"], user)
    # What a user's work leaves behind: runs, caches, an experiment's params, code under development.
    (user / "params.yaml").write_text("answer: 2\n")  # e.g. left by `dvc exp run` or a hand edit
    (user / "src/code.py").write_text("VERSION = 2\n")
    (user / "src/scratch.py").write_text("untracked\n")
    (user / ".dvc/cache/runs/ab").mkdir(parents=True)
    (user / ".dvc/cache/runs/ab/entry").write_text("a run-cache entry of the user's own runs\n")
    (user / "dvc.lock").write_text("schema: '2.0'\n")
    (user / "models").mkdir()
    (user / "models/model.pt").write_text("weights\n")

    sandbox = copy_project(user, tmp_path / "sandbox", lambda params: params.update(edited=True))
    files = sorted(str(p.relative_to(sandbox)) for p in sandbox.rglob("*") if p.is_file() and ".git/" not in str(p))
    assert files == [".dvc/.gitignore", ".dvc/config", "dvc.yaml", "params.yaml", "src/code.py"]
    assert yaml.safe_load((sandbox / "params.yaml").read_text()) == {"answer": 1, "edited": True}
    assert (sandbox / "src/code.py").read_text() == "VERSION = 2\n", "the code under development is tested"
    assert git(["status", "--porcelain"], sandbox) == "", "a fresh repository with everything committed"


def test_the_environment_is_the_pinned_toolchain():
    """`make` installs with --constraint constraints.txt: every pinned package that is installed has its pin."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE))
    assert {"dvc", "mlflow", "dvc-s3", "torch", "pytest"} <= set(pins)
    wrong = {}
    for name, pinned in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. a platform-specific dependency this machine does not need
        if installed.split("+")[0] != pinned.split("+")[0]:
            wrong[name] = (installed, pinned)
    assert not wrong, f"installed vs pinned: {wrong}; run `make setup`, or `make lock` to move the pins"
