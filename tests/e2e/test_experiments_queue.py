"""Queued DVC experiments, two at a time: each gets its MLflow run, linked to its experiment, and the
workspace stays as it was."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from conftest import copy_project, run, run_env, smoke_profile

LEARNING_RATES = {"lr-low": 0.005, "lr-mid": 0.01, "lr-high": 0.05}


def queue_is_busy(status: str) -> bool:
    return any(line.rstrip().endswith(("Queued", "Running")) for line in status.splitlines())


@pytest.fixture(scope="module")
def queued(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = copy_project(tmp_path_factory.mktemp("queue") / "project", smoke_profile)
    env = run_env()
    # The data once, in the workspace: every queued experiment checks it out from the cache instead of preparing it.
    run(["dvc", "repro", "prepare@mnist"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "prepared mnist"], root, env)
    params_before = (root / "params.yaml").read_text()
    baseline = run(["git", "rev-parse", "HEAD"], root, env).stdout.strip()
    for name, lr in LEARNING_RATES.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"experiments.mnist_fc.train.optimizer.lr={lr}",
             "evaluate@mnist_fc"], root, env)
    # Started, not waited for: the queue's workers run on as daemons, holding whatever output they were given.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800  # a hang guard only: three tiny experiments take well under a minute
    status = run(["dvc", "queue", "status"], root, env).stdout
    while queue_is_busy(status) and time.monotonic() < deadline:
        time.sleep(5)  # each `dvc queue status` costs a CPU-second the experiments could use
        status = run(["dvc", "queue", "status"], root, env).stdout
    run(["dvc", "queue", "stop"], root, env)  # a worker that missed its own idle shutdown (it happens) goes too
    view = run([sys.executable, "-m", "cnnlab_tools.experiments"], root, env).stdout  # `make exps`
    return {"root": root, "env": env, "status": status, "baseline": baseline, "params_before": params_before,
            "view": view}


def test_every_queued_experiment_succeeds(queued):
    assert not queue_is_busy(queued["status"]), queued["status"]
    for name in LEARNING_RATES:
        assert any(name in line and line.rstrip().endswith("Success") for line in queued["status"].splitlines()), (
            name, queued["status"])


def test_the_view_shows_each_experiments_changed_param_and_accuracy_a_line_each(queued):
    lines = queued["view"].splitlines()
    assert lines[0] == "workspace"
    for name, lr in LEARNING_RATES.items():
        (header,) = [i for i, line in enumerate(lines) if line.startswith(f"{name} ")]
        changed = "" if lr == 0.01 else f"  experiments.mnist_fc.train.optimizer.lr={lr}"  # 0.01: the workspace's
        assert lines[header].endswith(f"Success{changed}"), lines[header]
        assert re.fullmatch(r"    mnist_fc +test accuracy +\d+\.\d\d%", lines[header + 1]), lines[header + 1]
    assert max(len(line) for line in lines) < 100, "fits a terminal"


def test_the_workspace_is_left_as_it_was(queued):
    root = queued["root"]
    assert (root / "params.yaml").read_text() == queued["params_before"]
    assert run(["git", "status", "--porcelain"], root, queued["env"]).stdout == ""
    assert not (root / "models" / "mnist_fc").exists(), "results live in the experiments until `dvc exp apply`"


def test_one_mlflow_run_per_experiment_tagged_with_its_name_and_baseline(queued):
    from mlflow import MlflowClient

    root = queued["root"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    study = client.get_experiment_by_name("mnist")
    runs = client.search_runs([study.experiment_id], "attributes.run_name = 'mnist_fc'")
    by_experiment = {r.data.tags.get("dvc.exp_name"): r for r in runs}
    assert len(runs) == 3 and set(by_experiment) == set(LEARNING_RATES), "one run each, none lost"
    for name, found in by_experiment.items():
        assert found.info.status == "FINISHED"
        assert found.data.tags["dvc.exp_baseline_rev"] == queued["baseline"]
        assert found.data.tags["git.commit"] == queued["baseline"], "the code's commit, not DVC's temporary one"
        assert found.data.tags["git.dirty"] == "false", "only params.yaml differs from the baseline"
        assert float(found.data.params["train.optimizer.lr"]) == LEARNING_RATES[name]
        assert found.data.tags["dvc.evaluate_stage"] == "evaluate@mnist_fc", "evaluation continued the same run"
        assert "test_accuracy" in found.data.metrics
    assert len({r.data.tags["dvc.params_hash"] for r in runs}) == 3
