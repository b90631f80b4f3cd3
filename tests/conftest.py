"""Shared fixtures: a throwaway git + DVC copy of the project, with params overrides."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnnlab_tools import sandbox
from cnnlab_tools.sandbox import set_in, smoke_profile, write_image_folder  # noqa: F401  (tests import these from here)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _share_the_cores() -> None:
    """Give each pytest-xdist worker, and the DVC stages it starts, its share of the cores.

    torch starts as many OpenMP threads as there are cores in every process; with a worker per core,
    each running torch in-process or in stage subprocesses, the threads outnumber the cores and
    spin-wait on each other (training then runs many times slower).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, threads)  # read by torch at import, here and in every subprocess


_share_the_cores()


# Test modules that build DVC projects, longest first: pytest-xdist hands out whole files (--dist loadfile)
# in collection order, so starting the longest ones first keeps both workers busy to the end.
LONGEST_FIRST = ("test_pipeline.py", "test_mlflow_server.py", "test_kill_and_resume.py", "test_transfer_stages.py",
                 "test_team.py", "test_replicates.py", "test_experiments_queue.py", "test_gpu_check_dry_run.py",
                 "test_make_repro.py", "test_distributed.py", "test_stage_errors.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def committed_params() -> dict[str, Any]:
    """A fresh copy of params.yaml as git's index holds it: tests never see a user's uncommitted edits
    (a hand edit, or what `dvc exp run` left in the working tree)."""
    return sandbox.committed_params(REPO)


def committed_params_file(directory: Path) -> Path:
    """committed_params() written to `directory`/params.yaml, for code that reads a file."""
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(committed_params(), sort_keys=False))
    return path


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, no telemetry, no stray mirror."""
    env = {k: v for k, v in os.environ.items() if k not in ("CNNLAB_MIRROR", "MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["CNNLAB_DEVICE"] = "cpu"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "cnnlab tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@cnnlab.invalid"
    env.update(extra or {})
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env or run_env(), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def kill_repro_after_first_checkpoint(root: Path, stage: str, env: dict[str, str]) -> Path:
    """Start `dvc repro STAGE`, SIGKILL its whole process group once the stage has saved resumable state (after
    its first epoch), and return that state's file."""
    import signal
    import time

    resume_file = root / ".cnnlab" / "resume" / f"{stage.split('@')[1]}.pt"
    repro = subprocess.Popen(["dvc", "repro", stage], cwd=root, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not resume_file.exists() and repro.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert repro.poll() is None, "training ended before its first checkpoint: make the epochs longer"
    os.killpg(repro.pid, signal.SIGKILL)  # dvc and the stage's python process alike
    repro.wait()
    return resume_file




def stages_run(dvc_output: str) -> set[str]:
    """The stages a `dvc repro` ran, from its own output."""
    return set(re.findall(r"Running stage '([^']+)'", dvc_output))


def stages_restored(dvc_output: str) -> set[str]:
    """The stages a `dvc repro` restored from the run-cache instead of running them."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", dvc_output))


def edit_params(root: Path, dotted: str, value: object) -> None:
    """Set one value in a project's params.yaml, as a user editing it would."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    set_in(params, dotted, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(root: Path, edit: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    """Copy this repository's project into `root` as a fresh git repository."""
    return sandbox.copy_project(REPO, root, edit)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An S3-compatible object store on 127.0.0.1 (moto's server, which DVC's own S3 tests use), with a bucket,
    that checks credentials as S3 does: a request must be signed with a key of one of its users.

    Yields the DVC remote URL, the endpoint, the environment a DVC client needs for its credentials, and an
    S3 client of the team's.
    """
    import boto3
    import requests

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("s3") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    region = {"region_name": "us-east-1", "endpoint_url": endpoint}
    try:
        # Until authentication is switched on below, moto takes any key: make the team's user and its key.
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **region)
        while True:  # up when it answers (seconds, however loaded the machine); if it exits, its log says why
            try:
                iam.create_user(UserName="cnnlab-team")
                break
            except Exception:
                assert server.poll() is None, log.read_text()
                time.sleep(0.2)
        iam.put_user_policy(UserName="cnnlab-team", PolicyName="bucket", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="cnnlab-team")["AccessKey"]
        credentials = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                       "AWS_DEFAULT_REGION": "us-east-1"}
        client = boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"], **region)
        client.create_bucket(Bucket="cnnlab-team")
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield {"url": "s3://cnnlab-team/dvcstore", "endpoint": endpoint, "env": credentials, "client": client}
    finally:
        server.terminate()
        server.wait()


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """A factory of fresh project copies under this test's temporary directory."""

    def make(edit: Callable[[dict[str, Any]], Any] | None = None, name: str = "project") -> Path:
        return copy_project(tmp_path / name, edit)

    return make
