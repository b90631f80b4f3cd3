"""A sweep in DVC's own syntax, queued and run two at a time: each value gets its experiment and MLflow run,
all tagged with one sweep id and grouped by `make exps`, and the workspace stays as it was."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from cnnlab.tracking.sweeps import sweep_id
from conftest import copy_project, run, run_env, smoke_profile

LR_KEY = "experiments.mnist_fc.train.optimizer.lr"
LEARNING_RATES = (0.005, 0.02, 0.05)  # none is the baseline's 0.01: a run at the baseline's value is the baseline


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
    # The README's sweep: one command queues an experiment per value (Hydra's sweep syntax, which DVC speaks).
    sweep = f"{LR_KEY}={','.join(map(str, LEARNING_RATES))}"
    run(["dvc", "exp", "run", "--queue", "-S", sweep, "evaluate@mnist_fc"], root, env)
    # Started, not waited for: the queue's workers run on as daemons, holding whatever output they were given.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800  # a hang guard only: three tiny experiments take well under a minute
    status = run(["dvc", "queue", "status"], root, env).stdout
    while queue_is_busy(status) and time.monotonic() < deadline:
        time.sleep(5)  # each `dvc queue status` costs a CPU-second the experiments could use
        status = run(["dvc", "queue", "status"], root, env).stdout
    run(["dvc", "queue", "stop"], root, env)  # a worker that missed its own idle shutdown (it happens) goes too
    view = run([sys.executable, "-m", "cnnlab_tools.experiments", "--plots", str(root.parent / "sweeps")], root, env).stdout
    return {"root": root, "env": env, "status": status, "baseline": baseline, "params_before": params_before,
            "view": view}


def test_every_queued_experiment_succeeds(queued):
    assert not queue_is_busy(queued["status"]), queued["status"]
    finished = [line for line in queued["status"].splitlines() if line.rstrip().endswith("Success")]
    assert len(finished) == len(LEARNING_RATES), queued["status"]


def test_make_exps_shows_each_value_a_line_and_groups_the_sweep_by_value(queued):
    lines = queued["view"].splitlines()
    assert lines[0] == "workspace"
    for lr in LEARNING_RATES:
        (header,) = [i for i, line in enumerate(lines) if line.endswith(f"Success  {LR_KEY}={lr}")]
        assert re.fullmatch(r"    mnist_fc +test accuracy +\d+\.\d\d%", lines[header + 1]), lines[header + 1]
    (start,) = [i for i, line in enumerate(lines) if line.startswith("sweep ")]
    sweep = sweep_id(queued["baseline"], [LR_KEY])
    assert lines[start].startswith(f"sweep {sweep}: 3 runs from ")
    assert lines[start].endswith(f"{queued['baseline'][:7]} over {LR_KEY}"), lines[start]
    values = [line.split()[0] for line in lines[start + 1 :] if line.startswith("  lr=")]
    assert values == [f"lr={lr}" for lr in LEARNING_RATES], "ordered by the swept value"
    assert max(len(line) for line in lines) < 100, "fits a terminal"
    assert (queued["root"].parent / "sweeps" / f"sweep-{sweep}.png").stat().st_size > 1000


def test_the_workspace_is_left_as_it_was(queued):
    root = queued["root"]
    assert (root / "params.yaml").read_text() == queued["params_before"]
    assert run(["git", "status", "--porcelain"], root, queued["env"]).stdout == ""
    assert not (root / "models" / "mnist_fc").exists(), "results live in the experiments until `dvc exp apply`"


def test_one_mlflow_run_per_value_all_tagged_with_the_sweep(queued):
    from mlflow import MlflowClient

    root = queued["root"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    study = client.get_experiment_by_name("mnist")
    runs = client.search_runs([study.experiment_id], "attributes.run_name = 'mnist_fc'")
    by_lr = {float(r.data.params["train.optimizer.lr"]): r for r in runs}
    assert len(runs) == 3 and set(by_lr) == set(LEARNING_RATES), "one run per value, none lost"
    assert len({r.data.tags["dvc.exp_name"] for r in runs}) == 3
    (sweep,) = {r.data.tags["cnnlab.sweep"] for r in runs}
    assert sweep == sweep_id(queued["baseline"], [LR_KEY]), "the id `make exps` shows"
    tagged = client.search_runs([study.experiment_id], f"tags.`cnnlab.sweep` = '{sweep}'")
    assert len(tagged) == 3, "MLflow's search finds the whole sweep by its tag"
    for lr, found in by_lr.items():
        assert found.data.tags["cnnlab.swept"] == f"{LR_KEY}={lr}"
        assert found.info.status == "FINISHED"
        assert found.data.tags["dvc.exp_baseline_rev"] == queued["baseline"]
        assert found.data.tags["git.commit"] == queued["baseline"], "the code's commit, not DVC's temporary one"
        assert found.data.tags["git.dirty"] == "false", "only params.yaml differs from the baseline"
        assert found.data.tags["dvc.evaluate_stage"] == "evaluate@mnist_fc", "evaluation continued the same run"
        assert "test_accuracy" in found.data.metrics
    assert len({r.data.tags["dvc.params_hash"] for r in runs}) == 3
