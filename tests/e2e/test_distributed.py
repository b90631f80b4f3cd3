"""CNNLAB_NPROC: bad settings, and errors met by every rank, are one line before any work.

Two gloo processes training, killed and resumed, and matching one process: tests/e2e/test_kill_and_resume.py."""

from __future__ import annotations

import pytest

from cnnlab_tools.sandbox import smoke_experiment
from conftest import run, run_env


def two_processes(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The ranks split this test's share of the threads between them (distributed.run_as_ranks).
    return run_env({"CNNLAB_NPROC": "2", **(extra or {})})
















@pytest.mark.parametrize(("setting", "expected"), [
    ({"CNNLAB_NPROC": "0"}, "error: CNNLAB_NPROC='0' is not a number of processes; use a whole number >= 1"),
    ({"CNNLAB_NPROC": "two"}, "error: CNNLAB_NPROC='two' is not a number of processes"),
])
def test_a_bad_process_count_is_one_line_before_any_work(make_project, setting, expected):
    root = make_project(lambda params: smoke_experiment(params, "mnist_cnn"))
    done = run(["python", "stages/train.py", "mnist_cnn"], root, run_env(setting), check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == expected or done.stderr.strip().startswith(expected), done.stderr




def test_an_error_met_by_every_rank_is_said_once_without_a_traceback(make_project):
    root = make_project(lambda params: smoke_experiment(params, "mnist_cnn"))  # nothing prepared yet
    done = run(["python", "stages/train.py", "mnist_cnn"], root, two_processes(), check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert "error: data/prepared/mnist/meta.json: missing; run `dvc repro prepare@mnist` first" in errors, done.stderr
    assert len([line for line in errors if line.startswith("error:")]) == 1, done.stderr
    assert "Traceback" not in done.stderr
