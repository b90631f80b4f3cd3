"""Every stage depends on the code it runs, and nothing else: dvc.yaml's code deps against the import closures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cnnlab_tools.stage_deps import check
from conftest import REPO, copy_project, run_env


def test_dvc_yaml_lists_exactly_the_code_each_stage_runs():
    assert check(REPO) == []


def stage_deps(root: Path) -> subprocess.CompletedProcess:
    """The checker run on a copy of the project, its own src first on the path."""
    return subprocess.run([sys.executable, "-m", "cnnlab_tools.stage_deps"], cwd=root, capture_output=True, text=True,
                          env=run_env({"PYTHONPATH": str(root / "src")}))


def test_a_new_import_missing_from_dvc_yaml_fails_the_check_naming_the_file_and_stage(tmp_path):
    root = copy_project(tmp_path / "project")
    report = root / "src" / "cnnlab" / "report.py"
    report.write_text(report.read_text().replace("from cnnlab.plots import scatter_png",
                                                 "from cnnlab.models.complexity import count_macs  # noqa: F401\n"
                                                 "from cnnlab.plots import scatter_png"))
    done = stage_deps(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "dvc.yaml: stage report runs src/cnnlab/models/complexity.py; add it to the stage's deps"]


def test_a_dependency_no_entry_imports_fails_the_check(tmp_path):
    root = copy_project(tmp_path / "project")
    dvc_yaml = root / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("      - src/cnnlab/report.py\n",
                                                     "      - src/cnnlab/report.py\n      - src/cnnlab/engine/loop.py\n"))
    done = stage_deps(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "dvc.yaml: stage report lists src/cnnlab/engine/loop.py, which none of its entries imports; remove it"]
