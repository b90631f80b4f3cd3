"""Tracking's records, without DVC: encoded and decoded, kept in a journal, replayed into a real MLflow store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cnnlab.tracking.backend import deliver_pending
from cnnlab.tracking.journal import Journal, read_journal
from cnnlab.tracking.protocol import (
    RECORD_TYPES,
    Artifact,
    Batch,
    DatasetInput,
    EvaluatedAlias,
    Model,
    Open,
    Terminate,
    Use,
    decode,
    encode,
    failure_advice,
    pending_dir,
)
from cnnlab.tracking.worker import serve

EVERY_KIND = [
    Open("mnist", "mnist_cnn", run_key="k1", model_md5=None, tags={"cnnlab.experiment": "mnist_cnn"},
         logs_model=True, source="stages/train.py"),
    Use("0123abcd"),
    Batch(metrics=[("train_loss", 0.5, 1700000000000, 1)], params=[("train.optimizer.lr", "0.01")],
          tags=[("device", "cpu")]),
    Artifact("/tmp/history.json", "figures"),
    DatasetInput("mnist (synthetic)", "d41d8cd9", "data/prepared/mnist", '{"origin": "synthetic"}', "train"),
    Model("/tmp/classifier.pt", "uint8", [1, 28, 28], ["torch==2.14.1"], "mnist.mnist_cnn"),
    EvaluatedAlias("mnist.mnist_cnn", {"test_accuracy": 0.9}),
    Terminate("FINISHED"),
]


def test_every_kind_of_record_survives_its_json_line():
    assert {type(record) for record in EVERY_KIND} == set(RECORD_TYPES.values())
    for record in EVERY_KIND:
        line = encode(record)
        assert "\n" not in line and json.loads(line)["op"] == record.op
        assert decode(line) == record


def test_a_journal_keeps_copies_of_the_files_its_records_name(tmp_path: Path):
    history = tmp_path / "history.json"
    history.write_text("[1]")
    journal = Journal(tmp_path / "pending", "run-1")
    journal.append(EVERY_KIND[0])
    journal.append(Artifact(str(history), None))
    journal.release()
    history.write_text("[1, 2]")  # the stage moves on; the journal must send what it was told then

    opened, artifact = read_journal(journal.path)
    assert opened == EVERY_KIND[0]
    assert isinstance(artifact, Artifact) and artifact.path != str(history)
    assert Path(artifact.path).read_text() == "[1]" and Path(artifact.path).name == "history.json"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A project root with its own SQLite MLflow store, as a stage finds it (DVC_ROOT)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CNNLAB_TRACKING", raising=False)
    return tmp_path, MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def journal_of_a_run(root: Path, artifact: Path) -> Journal:
    journal = Journal(pending_dir(root), "run-1")
    for record in (Open("mnist", "mnist_cnn", run_key="k1", tags={"cnnlab.experiment": "mnist_cnn"}),
                   Batch(params=[("train.optimizer.lr", "0.01")], tags=[("device", "cpu")]),
                   Batch(metrics=[("train_loss", 0.5, 1700000000000, 1), ("train_loss", 0.25, 1700000000001, 2)]),
                   Artifact(str(artifact), None),
                   Terminate("FINISHED")):
        journal.append(record)
    journal.release()
    return journal


def test_a_journal_is_replayed_into_mlflow_as_the_run_it_describes(store, tmp_path: Path):
    root, client = store
    history = tmp_path / "history.json"
    history.write_text("[]")
    journal = journal_of_a_run(root, history)

    (run_id,) = deliver_pending(client, root)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "mnist_cnn"
    assert run.data.params == {"train.optimizer.lr": "0.01"}
    assert run.data.tags["device"] == "cpu" and run.data.tags["cnnlab.experiment"] == "mnist_cnn"
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [0.5, 0.25]
    assert [a.path for a in client.list_artifacts(run_id)] == ["history.json"]
    assert not journal.path.exists() and not journal.path.with_suffix(".files").exists()


def test_a_journal_that_fails_midway_keeps_the_rest_and_never_opens_its_run_twice(store, tmp_path: Path):
    root, client = store
    history = tmp_path / "history.json"
    history.write_text("[]")
    journal = journal_of_a_run(root, history)
    kept = next(journal.path.with_suffix(".files").rglob("history.json"))
    kept.rename(kept.with_name("gone"))  # the artifact cannot be sent: delivery stops there

    assert deliver_pending(client, root) == []
    first, *rest = read_journal(journal.path)
    assert isinstance(first, Use) and [type(r) for r in rest] == [Artifact, Terminate]

    kept.with_name("gone").rename(kept)
    (run_id,) = deliver_pending(client, root)
    assert first.run_id == run_id
    (only_run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert only_run.info.run_id == run_id and only_run.info.status == "FINISHED"


def test_the_worker_closes_a_run_whose_stage_stopped_talking_as_killed(store):
    _, client = store
    lines = [encode(Open("mnist", "mnist_cnn", run_key="k2", tags={"cnnlab.experiment": "mnist_cnn"})),
             encode(Batch(metrics=[("train_loss", 0.5, 1700000000000, 1)]))]
    reply = io.StringIO()
    serve(lines, reply)  # input ends without Terminate: the stage was killed
    run_id = json.loads(reply.getvalue())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize(
    ("code", "what", "fix"),
    [
        ("UNAUTHENTICATED", "refused the login of user 'bob' (401)", "MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials"),
        ("PERMISSION_DENIED", "does not let user 'bob' write to study 'mnist' (403)", "grant bob mnist EDIT"),
    ],
)
def test_a_refused_login_names_the_user_the_study_and_the_fix(code, what, fix):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    refused = MlflowException("refused", error_code=getattr(databricks_pb2, code))  # as MLflow's client raises it
    said, advice = failure_advice(refused, "bob", "mnist")
    assert said == what and fix in advice


def test_an_untrusted_certificate_and_other_failures_say_what_happened():
    said, advice = failure_advice(OSError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed certificate"), "bob", None)
    assert said == "presented a certificate this machine does not trust"
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in advice
    said, advice = failure_advice(ConnectionRefusedError("Connection refused"), None, None)
    assert said == "failed (ConnectionRefusedError: Connection refused)" and advice == "once it answers again,"
