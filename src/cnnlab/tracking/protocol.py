"""What a stage tells MLflow, as records: the one definition both ends use.

The stage (client.py) writes a record per tracker call, as a JSON line, to its worker process
(worker.py), which replays it into MLflow (backend.py); records that cannot be delivered wait in a
journal (journal.py), the same JSON lines, until a later stage or `python -m cnnlab.tracking deliver`
replays them. A run's records begin with `Open` (or `Use`, in a journal whose run already exists) and
end with `Terminate`.

Standard library only: the stage's side never imports MLflow.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from cnnlab.io import json_digest

TRACKING_SWITCH_ENV = "CNNLAB_TRACKING"
MODEL_DIGEST_TAG = "cnnlab.model_md5"
EXPERIMENT_TAG = "cnnlab.experiment"
RUN_KEY_TAG = "cnnlab.run_key"  # chosen by the stage, so a resumed stage finds its run without asking MLflow first
GROUP_TAG = "cnnlab.group"  # on a parent run: the experiment whose seeds are its children
GROUP_PARAMS_TAG = "cnnlab.group_params"  # on a parent run: the digest of the training settings its seeds share
DIVERGED_TAG = "cnnlab.diverged"  # why training stopped early; the run ends FAILED and has no model
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent


@dataclass(frozen=True)
class Open:
    """Start a run in MLflow experiment `study`, or continue the one keyed `run_key`, or the newest that trained
    the model file `model_md5` (how evaluation finds its training's run)."""

    op: ClassVar[str] = "open"
    study: str
    run_name: str
    run_key: str | None = None
    model_md5: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    logs_model: bool = False  # the worker prepares MLflow's model saving while it waits
    source: str = ""  # the stage's script, for MLflow's source tag
    # The run is one seed of experiment `group`: a child of the parent run of the group's seeds that share
    # the training settings whose digest is `group_params` (a changed setting starts a new parent).
    group: str | None = None
    group_params: str | None = None


@dataclass(frozen=True)
class Use:
    """Continue the run `run_id` (a journal's first record, once its `Open` was delivered)."""

    op: ClassVar[str] = "use"
    run_id: str


@dataclass(frozen=True)
class Batch:
    """Metrics (key, value, timestamp ms, step), params (key, value) and tags (key, value), as MLflow's log_batch."""

    op: ClassVar[str] = "batch"
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Artifact:
    op: ClassVar[str] = "artifact"
    path: str  # a file or directory
    artifact_path: str | None = None


@dataclass(frozen=True)
class DatasetInput:
    """Prepared data as an MLflow dataset input: the UI's Dataset column shows name and digest."""

    op: ClassVar[str] = "dataset"
    name: str
    digest: str
    path: str
    profile: str  # JSON: origin and split sizes
    context: str  # "train" or "eval"


@dataclass(frozen=True)
class Model:
    """Log the classifier file (serving.classifier_state) as the run's MLflow model and register a version."""

    op: ClassVar[str] = "model"
    classifier: str
    input_dtype: str
    input_shape: list[int]
    requirements: list[str]
    registered_name: str


@dataclass(frozen=True)
class EvaluatedAlias:
    """Point the registered model's `evaluated` alias at this run's version, tagged with its test metrics."""

    op: ClassVar[str] = "evaluated"
    registered_name: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Terminate:
    op: ClassVar[str] = "terminate"
    status: str  # FINISHED, FAILED or KILLED


Record = Open | Use | Batch | Artifact | DatasetInput | Model | EvaluatedAlias | Terminate
RECORD_TYPES: dict[str, type[Record]] = {
    kind.op: kind for kind in (Open, Use, Batch, Artifact, DatasetInput, Model, EvaluatedAlias, Terminate)
}


def encode(record: Record) -> str:
    return json.dumps({"op": record.op, **asdict(record)})


def decode(line: str) -> Record:
    data = json.loads(line)
    kind = RECORD_TYPES[data.pop("op")]
    values = {f.name: data[f.name] for f in fields(kind) if f.name in data}
    for name in ("metrics", "params", "tags"):  # JSON has no tuples
        if kind is Batch and name in values:
            values[name] = [tuple(item) for item in values[name]]
    return kind(**values)


def project_root() -> Path:
    """DVC_ROOT when DVC runs the stage (a queued experiment runs in a temporary copy), else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def pending_dir(root: Path) -> Path:
    return root / ".cnnlab" / "pending"


def tracking_enabled() -> bool:
    return os.environ.get(TRACKING_SWITCH_ENV, "").lower() not in {"off", "0", "false"}


def new_run_key() -> str:
    return uuid.uuid4().hex


def registered_model_name(study: str, experiment: str) -> str:
    return f"{study}.{experiment}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'optimizer': {'lr': 0.01}} -> {'optimizer.lr': '0.01'}, as MLflow params want."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def params_hash(params: Mapping[str, Any]) -> str:
    """A short, stable fingerprint of the params a stage reads: runs with equal params share it."""
    return json_digest(params)[:16]


def dvc_tags(stage: str, stage_params: Mapping[str, Any]) -> dict[str, str]:
    """The DVC stage and experiment a run belongs to, and the fingerprint of the params that stage reads.

    DVC_EXP_NAME and DVC_EXP_BASELINE_REV are set by `dvc exp run` (queued, temporary or in the workspace).
    """
    tags = {"dvc.stage": os.environ.get("DVC_STAGE") or stage, "dvc.params_hash": params_hash(stage_params)}
    for tag, variable in (("dvc.exp_name", "DVC_EXP_NAME"), ("dvc.exp_baseline_rev", "DVC_EXP_BASELINE_REV")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def failure_advice(error: BaseException, user: str | None, study: str | None) -> tuple[str, str]:
    """What went wrong with a tracking server, and what makes the next delivery succeed, from MLflow's
    error code (401, 403) or the TLS handshake's complaint."""
    code = getattr(error, "error_code", None)
    who = f"user {user!r}" if user else "no user (none set)"
    where = f"study {study!r}" if study else "this run's study"
    login = "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials"
    if code == "UNAUTHENTICATED":
        return f"refused the login of {who} (401)", f"set the right login in {login}, then"
    if code == "PERMISSION_DENIED":
        grant = f"python -m cnnlab_tools.mlflow_server grant {user or 'NAME'} {study or 'STUDY'} EDIT"
        return (
            f"does not let {who} write to {where} (403)",
            f"ask the server's admin for EDIT on it (`{grant}`) or use another login in {login}, then",
        )
    if "CERTIFICATE_VERIFY_FAILED" in str(error) or "SSLCertVerificationError" in str(error):
        return (
            "presented a certificate this machine does not trust",
            "set MLFLOW_TRACKING_SERVER_CERT_PATH to the server's certificate (or its CA), then",
        )
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return f"failed ({type(error).__name__}: {reason})", "once it answers again,"


def warn_unreachable(
    uri: str, error: BaseException, journal: Path, user: str | None = None, study: str | None = None
) -> None:
    what, fix = failure_advice(error, user, study)
    # On a line of its own: the stage's progress bar may be mid-line on the same terminal.
    print(
        f"\ncnnlab: warning: MLflow at {uri} {what}; training goes on, this run's records wait in {journal}; "
        f"{fix} the next stage or `python -m cnnlab.tracking deliver` sends them",
        file=sys.stderr,
        flush=True,
    )
