"""`make repro` on a machine that cannot have every dataset: the rest is reproduced and reported."""

from __future__ import annotations

import sys
from pathlib import Path

from cnnlab_tools.sandbox import smoke_experiment
from conftest import run, run_env


def test_make_repro_ends_with_the_summary_when_a_dataset_cannot_be_had(make_project):
    """No CIFAR-10 on this machine (no mirror, no network): `make repro` fails, but only after the report ran
    over what could be evaluated."""

    def mnist_and_unreachable_cifar(params):
        cifar = params["experiments"]["cifar_lenet"]
        smoke_experiment(params, "mnist_cnn")
        params["datasets"]["cifar10"] = {"kind": "cifar10", "acquire": {"source": "images"},
                                         "prepare": {"permutation_seed": 0}}
        params["experiments"]["cifar_lenet"] = {**cifar, "train": {**cifar["train"], "epochs": 1}}

    root = make_project(mnist_and_unreachable_cifar)
    env = run_env({"CNNLAB_TRACKING": "off"})
    # The virtual environment running these tests stands in for the project's own (`-o setup`: already set up).
    done = run(["make", "-o", "setup", "repro", f"VENV={Path(sys.executable).parents[1]}"], root, env, check=False)
    assert done.returncode != 0, "a dataset that cannot be had fails the pipeline"
    assert "download@cifar10" in done.stdout + done.stderr
    summary = (root / "reports" / "summary.md").read_text()
    assert "mnist_cnn" in summary.split("Not yet evaluated")[0], summary
    assert "Not yet evaluated: cifar_lenet." in summary
