"""`make repro` on a fresh clone, on a CPU-only machine without network: its plan, what it can run, one line per
missing download, and the report at the end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from cnnlab.data.kinds import cifar10
from conftest import SHARED_DATA, run, run_env

COURSE = ("spiral_mlp", "mnist_cnn", "cifar_lenet")
GPU_SIZED = "zoo_lenet"


def course_and_one_zoo_model(params: dict) -> None:
    """The course's spiral, MNIST and CIFAR-10 experiments at their params (the spiral smaller), and one zoo model."""
    params["experiments"] = {name: params["experiments"][name] for name in (*COURSE, GPU_SIZED)}
    params["experiments"]["spiral_mlp"]["train"]["epochs"] = 300
    params["datasets"]["spiral"]["acquire"]["points_per_class"] = 300
    del params["datasets"]["catsdogs"]
    params["replicates"], params["transfer"], params["report"]["comparisons"] = {}, {}, []


def test_make_repro_on_a_fresh_clone_offline_runs_the_course_and_names_each_missing_download(make_project, tmp_path):
    origin = make_project(course_and_one_zoo_model)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    mirror = tmp_path / "mirror"  # MNIST here; CIFAR-10's archive nowhere
    shutil.copytree(SHARED_DATA / "mnist", mirror / "mnist")
    dead_proxy = "http://127.0.0.1:9"  # every download fails at once, with or without a network
    env = run_env({"CNNLAB_TRACKING": "off", "CNNLAB_MIRROR": str(mirror), "CNNLAB_DEVICE": "cpu",
                   "http_proxy": dead_proxy, "https_proxy": dead_proxy, "no_proxy": ""})
    # The virtual environment running these tests stands in for the project's own (`-o setup`: already set up).
    done = run(["make", "-o", "setup", "repro", f"VENV={Path(sys.executable).parents[1]}"], clone, env, check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0, "a download that cannot be had fails the pipeline"

    plan = done.stdout[: done.stdout.index("left out")]
    assert "make repro on this machine (CPU only" in plan and "the course's experiments" in plan
    for name in COURSE:
        assert f"evaluate@{name}" in plan
    assert "estimate: about" in plan and GPU_SIZED not in plan
    assert "left out, sized for a GPU: 1 experiment(s) of study cifar10_zoo" in out and "make repro-all" in out

    errors = [line for line in out.splitlines() if line.startswith("error: dataset 'cifar10'")]
    assert len(errors) == 1, out
    assert f"{cifar10.OFFICIAL_BASES[0]}{cifar10.ARCHIVE.name}" in errors[0]
    assert "Fix: connect to the internet, or set CNNLAB_MIRROR" in errors[0]
    assert "-S datasets.cifar10.acquire.source=images" in errors[0]
    assert done.stderr.splitlines()[-2].endswith("reports/summary.md covers what ran and lists the rest")  # then make's own
    assert "Running stage 'train@mnist_cnn'" in out and f"Running stage 'train@{GPU_SIZED}'" not in out

    summary = (clone / "reports" / "summary.md").read_text()
    evaluated, missing = summary.split("Not yet evaluated")
    assert "spiral_mlp" in evaluated and "mnist_cnn" in evaluated and "| mnist_cnn | mnist | mnist |" in evaluated
    assert "cifar_lenet" in missing and GPU_SIZED in missing
