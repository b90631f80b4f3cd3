"""A team's MLflow server as a team would run it: PostgreSQL from Debian, `mlflow server` with its basic-auth app
and TLS (a self-signed certificate) on 127.0.0.1 (cnnlab_tools.mlflow_server), the pipeline pointed at it by
MLFLOW_TRACKING_URI with a login; logins that may not write, wrong passwords, a client without the certificate,
and the server killed in the middle of training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from cnnlab_tools import mlflow_server
from cnnlab_tools.sandbox import smoke_experiment
from conftest import copy_project, free_port, run, run_env, set_in

pytestmark = pytest.mark.skipif(not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
                                reason="PostgreSQL's server is not installed (apt-get install postgresql)")


class Stack:
    """PostgreSQL and the MLflow server in one directory, started and stopped by the project's own tool, with
    two logins: alice may write to study mnist (EDIT), bob only reads (the server's default)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port, self.db_port = directory, free_port(), free_port()
        self.uri = f"https://127.0.0.1:{self.port}"
        self.cert = str(directory / "tls" / "cert.pem")

    def tool(self, *args: str) -> None:
        mlflow_server.main(["--dir", str(self.directory), *args])

    def start(self) -> None:
        self.tool("start", "--port", str(self.port), "--db-port", str(self.db_port), "--tls-self-signed")

    def password(self, user: str) -> str:
        secrets = self.directory / "secrets"
        return ((secrets / "admin-password") if user == "admin" else (secrets / "users" / user)).read_text().strip()

    def env(self, user: str | None, cert: bool = True, **extra: str) -> dict[str, str]:
        """A stage's environment, pointed at the server as `user` (None: no login)."""
        login = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.password(user)} if user else {}
        trust = {"MLFLOW_TRACKING_SERVER_CERT_PATH": self.cert} if cert else {}
        env = run_env({"MLFLOW_TRACKING_URI": self.uri, **login, **trust, **extra})
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
            if name not in login and name not in trust:
                env.pop(name, None)
        return env

    def kill_mlflow(self) -> None:
        """SIGKILL, as a crashed server: no goodbye to its clients."""
        pid = int((self.directory / "mlflow.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        (self.directory / "mlflow.pid").unlink()

    def stop(self) -> None:
        self.tool("stop")


@pytest.fixture(scope="module")
def stack():
    # Not under pytest's private tmp dirs: as root, PostgreSQL runs as user postgres, who must reach its cluster.
    directory = Path(tempfile.mkdtemp(prefix="cnnlab-mlflow-server-"))
    directory.chmod(0o755)
    server = Stack(directory)
    try:
        server.start()
        for user in ("alice", "bob"):
            server.tool("user", "add", user)
        server.tool("grant", "alice", "mnist", "EDIT")
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def mnist_only(epochs: int, train_size: int):
    def edit(params: dict) -> None:
        smoke_experiment(params, "mnist_cnn")
        set_in(params, "datasets.mnist.acquire.synthetic", {"train_size": train_size, "test_size": 500, "seed": 0})
        set_in(params, "experiments.mnist_cnn.train.epochs", epochs)
        set_in(params, "runtime.checkpoint_every_s", 0)
    return edit


def client(stack: Stack, user: str = "alice", password: str | None = None):
    """An MlflowClient of `user`'s (environment variables are how MLflow's client takes a login)."""
    from mlflow import MlflowClient

    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password or stack.password(user),
                      MLFLOW_TRACKING_SERVER_CERT_PATH=stack.cert, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    return MlflowClient(tracking_uri=stack.uri)


@pytest.fixture
def clean_login():
    """Tests that log in through the environment leave it as they found it."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_SERVER_CERT_PATH",
             "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_train_and_evaluate_land_on_the_server_with_every_artifact_and_a_registered_model(stack, tmp_path,
                                                                                         monkeypatch, clean_login):
    """A whole `dvc repro` of one experiment, logged by alice, who may write to its study."""
    root = copy_project(tmp_path / "project", mnist_only(epochs=2, train_size=2000))
    run(["dvc", "repro", "evaluate@mnist_cnn"], root, stack.env("alice"))

    # Read back from somewhere else, through the server only.
    elsewhere = tmp_path / "teammate"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    mlflow = client(stack, "bob")  # a teammate who reads
    experiment = mlflow.get_experiment_by_name("mnist")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    (found,) = mlflow.search_runs([experiment.experiment_id])
    metrics = json.loads((root / "metrics" / "mnist_cnn.json").read_text())
    assert found.info.status == "FINISHED"
    assert found.data.params["train.optimizer.lr"] == "0.01"
    assert found.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert [m.step for m in mlflow.get_metric_history(found.info.run_id, "train_loss")] == [1, 2]
    artifacts = {a.path for a in mlflow.list_artifacts(found.info.run_id)}
    assert {"history.json", "mnist_cnn.json", "figures", "model"} <= artifacts
    version = mlflow.get_model_version_by_alias("mnist.mnist_cnn", "evaluated")
    assert version.run_id == found.info.run_id
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])

    stored = {p.relative_to(stack.directory / "artifacts").parts[-1] for p in (stack.directory / "artifacts").rglob("*")}
    assert {"history.json", "MLmodel", "classifier.pt", "confusion.png"} <= stored
    assert not (root / "mlruns").exists(), "nothing was written to the client's own disk"

    # The registered model serves raw test images, in a fresh process that is not in the project.
    test = torch.load(root / "data" / "prepared" / "mnist" / "test.pt", weights_only=True)
    np_file = tmp_path / "test_images.npy"
    import numpy as np

    np.save(np_file, test["inputs"].numpy())
    script = ("import sys, numpy, mlflow; model = mlflow.pyfunc.load_model('models:/mnist.mnist_cnn@evaluated'); "
              "print(' '.join(map(str, model.predict(numpy.load(sys.argv[1])).tolist())))")
    served = subprocess.run([sys.executable, "-c", script, str(np_file)], cwd=elsewhere, capture_output=True,
                            text=True, env=stack.env("bob"), check=True)
    class_names = json.loads((root / "data" / "prepared" / "mnist" / "meta.json").read_text())["class_names"]
    evaluated = [class_names.index(row["predicted"])
                 for row in json.loads((root / "reports" / "mnist_cnn" / "confusion.json").read_text())]
    assert [int(x) for x in served.stdout.split()] == evaluated


def test_a_server_killed_during_training_costs_seconds_and_loses_nothing(stack, tmp_path, clean_login):
    edit = mnist_only(epochs=4, train_size=4000)
    root = copy_project(tmp_path / "project", edit)
    env = stack.env("alice")
    run(["dvc", "repro", "prepare@mnist"], root, env)

    baseline_root = copy_project(tmp_path / "baseline", edit)
    untracked = run_env({"CNNLAB_TRACKING": "off"})
    run(["dvc", "repro", "prepare@mnist"], baseline_root, untracked)
    started = time.monotonic()
    run(["python", "stages/train.py", "mnist_cnn"], baseline_root, untracked)
    baseline_seconds = time.monotonic() - started

    started = time.monotonic()
    stage = subprocess.Popen(["python", "stages/train.py", "mnist_cnn"], cwd=root, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    resume_file = root / ".cnnlab" / "resume" / "mnist_cnn.pt"
    while not resume_file.exists() and stage.poll() is None:  # after the first epoch
        time.sleep(0.05)
    stack.kill_mlflow()
    _out, err = stage.communicate(timeout=600)
    tracked_seconds = time.monotonic() - started
    try:
        assert stage.returncode == 0, err
        assert (root / "models" / "mnist_cnn" / "model.pt").is_file()
        assert len(json.loads((root / "reports" / "mnist_cnn" / "history.json").read_text())) == 4
        warnings = [line for line in err.splitlines() if line.startswith("cnnlab:")]
        assert len(warnings) == 1 and f"warning: MLflow at {stack.uri} failed" in warnings[0], err
        assert "Traceback" not in err
        print(f"train stage: {baseline_seconds:.1f} s untracked, {tracked_seconds:.1f} s with the server killed")
        assert tracked_seconds - baseline_seconds < 30
        pending = list((root / ".cnnlab" / "pending").glob("*.jsonl"))
        assert len(pending) == 1
    finally:
        stack.start()  # the server comes back, on the same port and database

    run(["python", "-m", "cnnlab.tracking", "deliver"], root, env)
    assert not list((root / ".cnnlab" / "pending").glob("*.jsonl"))
    mlflow = client(stack)
    experiment = mlflow.get_experiment_by_name("mnist")
    runs = mlflow.search_runs([experiment.experiment_id], "tags.`cnnlab.experiment` = 'mnist_cnn'",
                              order_by=["attributes.start_time DESC"])
    assert all(r.info.status != "RUNNING" for r in runs)
    newest = runs[0]
    assert newest.info.status == "FINISHED"
    assert sorted({m.step for m in mlflow.get_metric_history(newest.info.run_id, "train_loss")}) == [1, 2, 3, 4]
    assert "model" in {a.path for a in mlflow.list_artifacts(newest.info.run_id)}


def test_every_request_needs_a_login_and_writing_needs_a_grant(stack, clean_login, capsys):
    from mlflow.exceptions import MlflowException

    with pytest.raises(SystemExit):  # a typo in a grant: one line, no traceback
        stack.tool("grant", "nobody", "mnist", "EDIT")
    assert capsys.readouterr().err == (f"error: the server at {stack.uri} refused: RESOURCE_DOES_NOT_EXIST: "
                                       "User with username=nobody not found\n")

    https = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=stack.cert)))
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        https.open(f"{stack.uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert anonymous.value.code == 401
    with pytest.raises(MlflowException) as wrong:
        client(stack, "alice", password="not-her-password").search_experiments()
    assert wrong.value.error_code == "UNAUTHENTICATED"

    # The database: a password, and loopback only.
    psql = [str(mlflow_server.postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(stack.db_port), "-U", "mlflow",
            "-d", "mlflow", "-w", "-tAc", "SHOW listen_addresses"]
    without = subprocess.run(psql, capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert without.returncode != 0 and "password" in without.stderr, without.stderr
    layout = mlflow_server.ServerLayout(stack.directory)
    listening = subprocess.run(psql, capture_output=True, text=True, env=mlflow_server.db_env(layout), check=True)
    assert listening.stdout.strip() == "127.0.0.1"
    hba = (layout.cluster / "pg_hba.conf").read_text().split()
    assert "trust" not in hba and "scram-sha-256" in hba

    experiment_id = client(stack, "alice").get_experiment_by_name("mnist").experiment_id
    alices = client(stack, "alice").create_run(experiment_id).info.run_id
    bob = client(stack, "bob")
    assert bob.get_run(alices).info.run_id == alices, "everyone logged in reads every study"
    for write in (lambda: bob.create_run(experiment_id), lambda: bob.delete_run(alices)):
        with pytest.raises(MlflowException) as refused:
            write()
        assert refused.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(MlflowException, match="403"):  # EDIT writes runs; deleting them takes MANAGE
        client(stack, "alice").delete_run(alices)
    client(stack, "admin").delete_run(alices)


def test_a_login_that_may_not_write_costs_no_training_and_the_run_is_delivered_later(stack, tmp_path, clean_login):
    root = copy_project(tmp_path / "project", mnist_only(epochs=2, train_size=2000))
    run(["dvc", "repro", "prepare@mnist"], root, run_env({"CNNLAB_TRACKING": "off"}))

    trained = run(["python", "stages/train.py", "mnist_cnn"], root, stack.env("bob"))
    assert (root / "models" / "mnist_cnn" / "model.pt").is_file()
    assert len(json.loads((root / "reports" / "mnist_cnn" / "history.json").read_text())) == 2
    warnings = [line for line in trained.stderr.splitlines() if line.startswith("cnnlab:")]
    assert len(warnings) == 1, trained.stderr
    assert f"MLflow at {stack.uri} does not let user 'bob' write to study 'mnist' (403)" in warnings[0]
    assert "mlflow_server grant bob mnist EDIT" in warnings[0] and "Traceback" not in trained.stderr
    (journal,) = (root / ".cnnlab" / "pending").glob("*.jsonl")  # named by the run's key

    # alice delivers it, her login in ~/.mlflow/credentials; first without the server's certificate.
    home = tmp_path / "home"
    (home / ".mlflow").mkdir(parents=True)
    (home / ".mlflow" / "credentials").write_text(
        f"[mlflow]\nmlflow_tracking_username = alice\nmlflow_tracking_password = {stack.password('alice')}\n")
    untrusted = run(["python", "-m", "cnnlab.tracking", "deliver"], root, stack.env(None, cert=False, HOME=str(home)),
                    check=False)
    assert untrusted.returncode == 1
    lines = [line for line in untrusted.stderr.splitlines() if line.startswith("cnnlab:")]
    assert len(lines) == 1 and "presented a certificate this machine does not trust" in lines[0], untrusted.stderr
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in lines[0]

    run(["python", "-m", "cnnlab.tracking", "deliver"], root, stack.env(None, HOME=str(home)))
    assert not list((root / ".cnnlab" / "pending").glob("*.jsonl"))
    mlflow = client(stack, "bob")
    experiment = mlflow.get_experiment_by_name("mnist")
    (delivered,) = mlflow.search_runs([experiment.experiment_id], f"tags.`cnnlab.run_key` = '{journal.stem}'")
    assert delivered.info.status == "FINISHED"
    assert [m.step for m in mlflow.get_metric_history(delivered.info.run_id, "train_loss")] == [1, 2]
    assert mlflow.search_model_versions(f"name = 'mnist.mnist_cnn' and run_id = '{delivered.info.run_id}'")
