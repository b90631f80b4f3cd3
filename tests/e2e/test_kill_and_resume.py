"""A `dvc repro` killed mid-training resumes and ends as an uninterrupted run would: with two data-parallel
processes (torch.distributed's launcher, gloo on CPU as in CI), and its MLflow run continued, not doubled.

Two processes train as one does. They compute the same global batches, but each batch's gradient is the
weighted average of two part-batch gradients where one process takes the mean over the whole batch; float32
sums in another order differ in the last bits (~1e-7 relative) and SGD carries that along. Measured over 2
epochs of 47 steps: per-epoch losses 1.4e-7 and 2.2e-7 relative apart, so the test allows 1e-5. Leaving out
the ranks' weighting of the short last batch moved them 3.1e-4; a rank seeing other images or a missing
all-reduce moves them further."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pytest
import torch

from cnnlab_tools.sandbox import set_in, smoke_experiment
from conftest import kill_repro_after_first_checkpoint, run, run_env

LOSS_RTOL = 1e-5


def long_mnist_cnn(params):
    """Epochs long enough (half a second or more) for the kill, which follows the first saved state within
    tens of milliseconds, to land before the last. 2,947 images in batches of 64 end with a batch of 3: the
    ranks take 2 and 1 of it, and their losses must be weighted 2:1 for the step to be one process's."""
    smoke_experiment(params, "mnist_cnn")
    set_in(params, "datasets.mnist.acquire.synthetic", {"train_size": 2947, "test_size": 200, "seed": 0})
    set_in(params, "experiments.mnist_cnn.train.epochs", 4)
    set_in(params, "runtime.checkpoint_every_s", 0)


def store_client(root: Path):
    """A client on the project's store, opened under the lock the stages use: a tracking worker may be
    creating the store at this moment, and two processes creating one at once collide."""
    from mlflow import MlflowClient

    with open(root / "mlflow.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        client.search_experiments(max_results=1)
    return client


def statuses_within(root: Path, seconds: float) -> list[str]:
    """The statuses of the project's MLflow runs once none is RUNNING, or as they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        client = store_client(root) if (root / "mlflow.db").exists() else None
        experiment = client.get_experiment_by_name("mnist") if client else None
        statuses = [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []
        if (statuses and "RUNNING" not in statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def training_processes(root: Path) -> list[int]:
    """Processes working in `root`, other than a tracking worker closing its run."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            in_root = entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == root
            if in_root and b"cnnlab.tracking" not in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def losses(root: Path) -> list[float]:
    return [row["train_loss"] for row in json.loads((root / "reports" / "mnist_cnn" / "history.json").read_text())]


def weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "models" / "mnist_cnn" / "model.pt", weights_only=True)["state_dict"]


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the ranks through /proc")
def test_a_killed_repro_resumes_to_the_weights_of_an_uninterrupted_run(make_project):
    root = make_project(long_mnist_cnn)
    # The ranks split this test's share of the threads between them (distributed.run_as_ranks).
    env = run_env({"CNNLAB_NPROC": "2"})
    run(["dvc", "repro", "prepare@mnist"], root, env)
    # The ranks are not in the killed process group: the launcher starts them in sessions of their own.
    resume_file = kill_repro_after_first_checkpoint(root, "train@mnist_cnn", env)
    deadline = time.monotonic() + 10
    while training_processes(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not training_processes(root), "the ranks die with the stage"
    assert not (root / "models" / "mnist_cnn" / "model.pt").exists()
    # The stage's tracking worker outlives the kill: it sees the stage gone and closes the run as KILLED.
    assert statuses_within(root, 60) == ["KILLED"]
    left_by_the_kill = resume_file.read_bytes()

    resumed = run(["dvc", "repro", "train@mnist_cnn"], root, env)
    assert "resuming after epoch" in resumed.stdout and "mnist_cnn: training as 2 processes (gloo)" in resumed.stdout
    assert resumed.stdout.count("mnist_cnn: trained on cpu") == 1, "rank 0 alone reports, and writes"
    assert sorted(p.name for p in (root / "models" / "mnist_cnn").iterdir()) == ["model.pt", "train.json"]
    assert json.loads((root / "models" / "mnist_cnn" / "train.json").read_text())["processes"] == 2
    assert not resume_file.exists(), "a completed run removes its resumable state"
    resumed_weights, resumed_losses = weights(root), losses(root)

    run(["dvc", "repro", "--force", "--single-item", "train@mnist_cnn"], root, run_env({"CNNLAB_NPROC": "2", "CNNLAB_TRACKING": "off"}))
    assert resumed_losses == losses(root)
    for name, tensor in weights(root).items():
        assert torch.equal(tensor, resumed_weights[name]), name

    client = store_client(root)
    (killed_and_resumed,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert killed_and_resumed.info.status == "FINISHED", "the resumed stage continued the killed run's MLflow run"
    tags = killed_and_resumed.data.tags
    assert (tags["distributed.processes"], tags["distributed.backend"]) == ("2", "gloo")
    steps = [m.step for m in client.get_metric_history(killed_and_resumed.info.run_id, "train_loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4], "epochs logged before the kill were flushed with the checkpoint"

    # The same state resumed by one process: nothing in it is per rank, and one process trains the remaining
    # epochs as the two did.
    resume_file.write_bytes(left_by_the_kill)
    single = run(["python", "stages/train.py", "mnist_cnn"], root, run_env({"CNNLAB_TRACKING": "off"}))
    done_before_kill = int(single.stdout.split("resuming after epoch ")[1].split()[0])
    one_process_losses = losses(root)
    assert len(one_process_losses) == 4 and one_process_losses[:done_before_kill] == resumed_losses[:done_before_kill]
    torch.testing.assert_close(one_process_losses, resumed_losses, rtol=LOSS_RTOL, atol=0)
