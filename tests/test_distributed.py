"""CNNLAB_NPROC=2: a train stage as two gloo processes (torch.distributed's launcher), on CPU as in CI.

Tolerance: two processes compute the same global batches as one, but each batch's gradient is the
weighted average of two part-batch gradients where one process takes the mean over the whole batch;
float32 sums in another order differ in the last bits (~1e-7 relative) and SGD carries that along.
Measured over the 2 epochs of 47 steps: per-epoch losses 1.4e-7 and 2.2e-7 relative apart, so the
test allows 1e-5. Leaving out the ranks' weighting of the short last batch moved them 3.1e-4; a rank
seeing other images or a missing all-reduce moves them further."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from cnnlab_tools.sandbox import set_in, smoke_experiment
from conftest import kill_repro_after_first_checkpoint, run, run_env

LOSS_RTOL = 1e-5


def two_processes(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The ranks split this test's share of the threads between them (distributed.run_as_ranks).
    return run_env({"CNNLAB_NPROC": "2", **(extra or {})})


def store(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def losses(root: Path) -> list[float]:
    return [row["train_loss"] for row in json.loads((root / "reports" / "mnist_cnn" / "history.json").read_text())]


def small_mnist_cnn(params):
    smoke_experiment(params, "mnist_cnn")
    # 2,947 images in batches of 64 end with a batch of 3: the ranks take 2 and 1 of it, and their losses must
    # be weighted 2:1 for the step to be the one a single process takes.
    set_in(params, "datasets.mnist.acquire.synthetic", {"train_size": 2947, "test_size": 500, "seed": 0})


def test_two_gloo_processes_write_once_log_once_and_train_as_one_process_does(make_project):
    root = make_project(small_mnist_cnn, name="two")
    done = run(["dvc", "repro", "train@mnist_cnn"], root, two_processes())
    assert "mnist_cnn: training as 2 processes (gloo)" in done.stdout, done.stdout
    assert done.stdout.count("mnist_cnn: trained on cpu") == 1, "rank 0 alone reports, and writes"
    assert sorted(p.name for p in (root / "models" / "mnist_cnn").iterdir()) == ["model.pt", "train.json"]
    assert json.loads((root / "models" / "mnist_cnn" / "train.json").read_text())["processes"] == 2
    assert not (root / ".cnnlab" / "resume" / "mnist_cnn.pt").exists()
    client = store(root)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert len(runs) == 1, "exactly one MLflow run per stage execution"
    tags = runs[0].data.tags
    assert (tags["distributed.processes"], tags["distributed.backend"]) == ("2", "gloo")
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")) == [1, 2]

    single = make_project(small_mnist_cnn, name="one")
    run(["dvc", "repro", "train@mnist_cnn"], single, run_env({"CNNLAB_TRACKING": "off"}))
    torch.testing.assert_close(losses(root), losses(single), rtol=LOSS_RTOL, atol=0)


def long_mnist_cnn(params):
    """Epochs long enough (a second or more) for the kill to land between the first and the last."""
    smoke_experiment(params, "mnist_cnn")
    set_in(params, "datasets.mnist.acquire.synthetic", {"train_size": 8000, "test_size": 500, "seed": 0})
    set_in(params, "experiments.mnist_cnn.train.epochs", 4)
    set_in(params, "runtime.checkpoint_every_s", 0)


def training_processes(root: Path) -> list[int]:
    """Processes working in `root`, other than a tracking worker closing its run."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == root:
                if b"cnnlab.tracking" not in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the ranks through /proc")
def test_a_killed_two_process_run_resumes_to_the_weights_of_an_uninterrupted_one(make_project):
    root = make_project(long_mnist_cnn)
    env = two_processes({"CNNLAB_TRACKING": "off"})
    run(["dvc", "repro", "prepare@mnist"], root, env)
    # The ranks are not in the killed process group: the launcher starts them in sessions of their own.
    resume_file = kill_repro_after_first_checkpoint(root, "train@mnist_cnn", env)
    deadline = time.monotonic() + 10
    while training_processes(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not training_processes(root), "the ranks die with the stage"
    assert not (root / "models" / "mnist_cnn" / "model.pt").exists()
    left_by_the_kill = resume_file.read_bytes()

    resumed = run(["dvc", "repro", "train@mnist_cnn"], root, env)
    assert "resuming after epoch" in resumed.stdout and "training as 2 processes" in resumed.stdout
    resumed_state = torch.load(root / "models" / "mnist_cnn" / "model.pt", weights_only=True)["state_dict"]
    resumed_losses = losses(root)

    run(["dvc", "repro", "--force", "train@mnist_cnn"], root, env)
    state = torch.load(root / "models" / "mnist_cnn" / "model.pt", weights_only=True)["state_dict"]
    assert resumed_losses == losses(root)
    for name, tensor in state.items():
        assert torch.equal(tensor, resumed_state[name]), name

    # The same state resumed by one process: nothing in it is per rank.
    resume_file.write_bytes(left_by_the_kill)
    single = run(["python", "stages/train.py", "mnist_cnn"], root, run_env({"CNNLAB_TRACKING": "off"}))
    done_before_kill = int(single.stdout.split("resuming after epoch ")[1].split()[0])
    one_process_losses = losses(root)
    assert len(one_process_losses) == 4 and one_process_losses[:done_before_kill] == resumed_losses[:done_before_kill]


@pytest.mark.parametrize(("setting", "expected"), [
    ({"CNNLAB_NPROC": "0"}, "error: CNNLAB_NPROC='0' is not a number of processes; use a whole number >= 1"),
    ({"CNNLAB_NPROC": "two"}, "error: CNNLAB_NPROC='two' is not a number of processes"),
])
def test_a_bad_process_count_is_one_line_before_any_work(make_project, setting, expected):
    root = make_project(lambda params: smoke_experiment(params, "mnist_cnn"))
    done = run(["python", "stages/train.py", "mnist_cnn"], root, run_env(setting), check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == expected or done.stderr.strip().startswith(expected), done.stderr


def test_sync_batchnorm_on_cpu_processes_is_refused_before_launching(make_project):
    def with_sync_batchnorm(params):
        smoke_experiment(params, "mnist_cnn")
        set_in(params, "runtime.sync_batchnorm", True)

    root = make_project(with_sync_batchnorm)
    done = run(["python", "stages/train.py", "mnist_cnn"], root, two_processes(), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: runtime.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only; set it to false for "
        "CNNLAB_NPROC=2 CPU processes"]


def test_an_error_met_by_every_rank_is_said_once_without_a_traceback(make_project):
    root = make_project(lambda params: smoke_experiment(params, "mnist_cnn"))  # nothing prepared yet
    done = run(["python", "stages/train.py", "mnist_cnn"], root, two_processes(), check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert "error: data/prepared/mnist/meta.json: missing; run `dvc repro prepare@mnist` first" in errors, done.stderr
    assert len([line for line in errors if line.startswith("error:")]) == 1, done.stderr
    assert "Traceback" not in done.stderr
