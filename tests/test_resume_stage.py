"""A `dvc repro` killed mid-training resumes the train stage and ends as an uninterrupted run would."""

from __future__ import annotations

import fcntl
import json
import time

import torch

from conftest import kill_repro_after_first_checkpoint, run, run_env
from cnnlab_tools.sandbox import set_in, smoke_profile


def long_mnist_cnn(params):
    smoke_profile(params)
    # Epochs of about a second, so the kill lands mid-run.
    set_in(params, "datasets.mnist.acquire.synthetic", {"train_size": 16000, "test_size": 500, "seed": 0})
    set_in(params, "experiments.mnist_cnn.train.epochs", 6)
    set_in(params, "runtime.checkpoint_every_s", 0)


def store_client(root):
    """A client on the project's store, opened under the lock the stages use: a tracking worker may be
    creating the store at this moment, and two processes creating one at once collide."""
    from mlflow import MlflowClient

    with open(root / "mlflow.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        client.search_experiments(max_results=1)
    return client


def statuses_within(root, seconds: float) -> list[str]:
    """The statuses of the project's MLflow runs once none is RUNNING, or as they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        client = store_client(root) if (root / "mlflow.db").exists() else None
        experiment = client.get_experiment_by_name("mnist") if client else None
        statuses = [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []
        if (statuses and "RUNNING" not in statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def test_killed_repro_resumes_the_train_stage(make_project):
    root = make_project(long_mnist_cnn)
    env = run_env()
    run(["dvc", "repro", "prepare@mnist"], root, env)
    resume_file = kill_repro_after_first_checkpoint(root, "train@mnist_cnn", env)
    assert not (root / "models" / "mnist_cnn" / "model.pt").exists()
    # The stage's tracking worker outlives the kill: it sees the stage gone and closes the run as KILLED.
    assert statuses_within(root, 60) == ["KILLED"]

    resumed = run(["dvc", "repro", "train@mnist_cnn"], root, env)
    assert "resuming after epoch" in resumed.stdout
    assert not resume_file.exists(), "a completed run removes its resumable state"
    resumed_state = torch.load(root / "models" / "mnist_cnn" / "model.pt", weights_only=True)["state_dict"]
    resumed_history = json.loads((root / "reports" / "mnist_cnn" / "history.json").read_text())

    run(["dvc", "repro", "--force", "train@mnist_cnn"], root, env)
    state = torch.load(root / "models" / "mnist_cnn" / "model.pt", weights_only=True)["state_dict"]
    history = json.loads((root / "reports" / "mnist_cnn" / "history.json").read_text())
    assert [row["train_loss"] for row in resumed_history] == [row["train_loss"] for row in history]
    for name, tensor in state.items():
        assert torch.equal(tensor, resumed_state[name]), name

    client = store_client(root)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert len(runs) == 2, "the resumed stage continued the killed run's MLflow run; --force made one more"
    assert all(r.info.status == "FINISHED" for r in runs)
    killed_and_resumed = min(runs, key=lambda r: r.info.start_time)
    steps = [m.step for m in client.get_metric_history(killed_and_resumed.info.run_id, "train_loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6], "epochs logged before the kill were flushed with the checkpoint"
