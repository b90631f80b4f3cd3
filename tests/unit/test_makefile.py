"""The Makefile's front door: `make` alone sets up; `make repro` says its plan before it runs it."""

from __future__ import annotations

import os
import subprocess

from cnnlab_tools import mlflow_server
from conftest import REPO


def dry_run(*args: str) -> str:
    """What `make ARGS` would run, as a user's shell (not a parent make, as under `make test`) sees it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-n", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout


def test_plain_make_creates_the_environment_and_installs_the_project(tmp_path):
    commands = dry_run(f"VENV={tmp_path / 'venv'}")
    assert f"-m venv {tmp_path / 'venv'}" in commands
    assert "pip install --quiet --constraint constraints.txt -e \".[pipeline,s3,server,test,lint]\"" in commands


def test_make_repro_prints_its_plan_then_reproduces_what_the_plan_names():
    commands = dry_run("-o", "setup", "repro").splitlines()
    assert "python -m cnnlab_tools.plan --brief" in commands[0]
    assert "targets=$(python -m cnnlab_tools.plan --targets) || exit 1" in commands[1]
    assert "dvc repro --keep-going $targets" in commands[1] and "dvc repro --single-item report" in commands[1]


def test_make_bench_leaves_the_committed_reference_alone():
    assert "cnnlab_tools.bench --out reports/bench.local" in dry_run("-o", "setup", "bench")


def test_the_local_ui_and_the_team_server_listen_on_loopback_and_on_ports_of_their_own():
    ui = dry_run("-o", "setup", "mlflow-ui")
    assert "--host 127.0.0.1 --port 5000" in ui
    assert mlflow_server.DEFAULT_PORT != 5000, "the team server would take the local UI's port"
