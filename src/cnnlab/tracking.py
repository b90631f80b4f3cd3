"""MLflow tracking: one MLflow experiment per study, one run per trained model.

The train stage opens a run and tags it with the MD5 of the model file it
wrote; the evaluate stage finds that run by the same digest and continues it.
Run ids never go into DVC's outputs: those are cached by content and must hold
only what their inputs determine. MLflow is imported only here and only when
a run is opened, so the engine works on machines without it
(CNNLAB_TRACKING=off, or mlflow not installed, gives a tracker that does nothing).

Default store: sqlite:///<project root>/mlflow.db with artifacts in
<project root>/mlruns, where the root is DVC_ROOT when DVC runs the stage
(so `dvc exp run --queue` runs in a temporary copy still land in the
user's store), else the working directory. MLFLOW_TRACKING_URI overrides.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

TRACKING_SWITCH_ENV = "CNNLAB_TRACKING"
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
FLUSH_EVERY_SECONDS = 10.0
MODEL_DIGEST_TAG = "cnnlab.model_md5"
EXPERIMENT_TAG = "cnnlab.experiment"
# What DVC and the pipeline rewrite as they run (the lock, params, outputs, .gitignore entries, remote settings):
# a difference there does not make a run's code differ from its commit.
NOT_CODE = (":(exclude)dvc.lock", ":(exclude)params.yaml", ":(exclude)metrics", ":(exclude)reports",
            ":(exclude).dvc", ":(exclude,glob)**/.gitignore", ":(exclude,glob)**/*.dvc")


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def tracking_enabled() -> bool:
    return os.environ.get(TRACKING_SWITCH_ENV, "").lower() not in {"off", "0", "false"}


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
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_state(root: Path) -> dict[str, str]:
    """The commit the code came from, and whether the code differs from it ('unknown' outside git).

    In a DVC experiment the commit is the experiment's baseline: queued and temporary runs execute
    in a checkout of DVC's own making. Files DVC and the pipeline rewrite (NOT_CODE) do not count.
    """

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = os.environ.get("DVC_EXP_BASELINE_REV") or git("rev-parse", "HEAD")
    changed = git("diff", "--name-only", commit, "--", ".", *NOT_CODE) if commit else None
    if not commit or changed is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    files = changed.splitlines()
    tags = {"git.commit": commit, "git.dirty": str(bool(files)).lower()}
    if files:
        tags["git.changed_files"] = ", ".join(files[:20]) + (f" and {len(files) - 20} more" if len(files) > 20 else "")
    return tags


def dvc_tags(stage: str, stage_params: Mapping[str, Any]) -> dict[str, str]:
    """The DVC stage and experiment a run belongs to, and the fingerprint of the params that stage reads.

    DVC_EXP_NAME and DVC_EXP_BASELINE_REV are set by `dvc exp run` (queued, temporary or in the workspace).
    """
    tags = {"dvc.stage": os.environ.get("DVC_STAGE") or stage, "dvc.params_hash": params_hash(stage_params)}
    for tag, variable in (("dvc.exp_name", "DVC_EXP_NAME"), ("dvc.exp_baseline_rev", "DVC_EXP_BASELINE_REV")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def environment_tags() -> dict[str, str]:
    import torch

    return {"torch.version": torch.__version__, "python.version": platform.python_version()}


@dataclass(frozen=True)
class DatasetRecord:
    """Prepared data as an MLflow dataset input: the UI's Dataset column shows name and digest."""

    name: str  # "mnist", or "mnist (synthetic)" for generated stand-ins, so no one mistakes them for real data
    digest: str
    path: Path  # relative to the project root
    origin: str
    sizes: Mapping[str, int]


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, dataset: DatasetRecord, context: str) -> None: ...
    def log_model(self, model: Any, input_example: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self, succeeded: bool) -> None: ...


class NullTracker:
    """Stands in when tracking is off or MLflow is not installed."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, dataset: DatasetRecord, context: str) -> None: ...
    def log_model(self, model: Any, input_example: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self, succeeded: bool) -> None: ...


class MlflowTracker:
    """One MLflow run, written through MlflowClient; metrics are buffered and sent in batches."""

    def __init__(self, client: Any, run_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = client, run_id, uri
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step or 0) for k, v in metrics.items())
        if len(self._pending) >= METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self._pending), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + METRICS_PER_BATCH])
        self._pending.clear()
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, dataset: DatasetRecord, context: str) -> None:
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(dataset.name, dataset.digest, "local", LocalArtifactDatasetSource(str(dataset.path)).to_json(),
                         profile=json.dumps({"origin": dataset.origin, **dataset.sizes}))
        self.client.log_inputs(self.run_id, [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])

    def log_model(self, model: Any, input_example: Any) -> None:
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        model = model.cpu().eval()
        with torch.no_grad():
            output = model(torch.as_tensor(input_example)).numpy()
        signature = infer_signature(input_example, output)
        # log_model works on the fluent API's active run: make it this run, briefly.
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=input_example,
                signature=signature,
                # Naming the requirement skips MLflow's slow requirement inference.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )

    def close(self, succeeded: bool) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status="FINISHED" if succeeded else "FAILED")


def _client() -> tuple[Any, str] | None:
    """An MlflowClient on this project's store, or None when tracking is off or MLflow is missing."""
    if not tracking_enabled():
        return None
    try:
        from mlflow import MlflowClient
    except ImportError:
        print("cnnlab: mlflow is not installed; this run is not tracked", file=sys.stderr)
        return None
    uri = tracking_uri(project_root())
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri), uri
    # Open the store one process at a time: MLflow creates and migrates a new SQLite store as the client
    # opens it, and two stages doing that at once (queued experiments, `dvc queue start -j 2`) corrupt it.
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # in case a later MLflow opens its store lazily
    return client, uri


def _experiment_id(client: Any, study: str, root: Path) -> str:
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(study)
    if existing is not None:
        return existing.experiment_id
    try:
        return client.create_experiment(study, artifact_location=(root / "mlruns" / study).as_uri())
    except MlflowException:  # another stage created it in the meantime
        return client.get_experiment_by_name(study).experiment_id


def _latest_run_of_model(client: Any, study: str, experiment: str, model_md5: str) -> Any | None:
    """The newest run in `study` that trained `experiment` into the model file with MD5 `model_md5`."""
    found = client.get_experiment_by_name(study)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and tags.`{MODEL_DIGEST_TAG}` = '{model_md5}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


def open_run(study: str, run_name: str, continue_run_id: str | None = None, *, model_md5: str | None = None) -> Tracker:
    """Start a run in MLflow experiment `study`, or continue one.

    `continue_run_id`: the run a resumed training started. `model_md5`: the run that trained the model
    file with this MD5 (how evaluation finds its training's run). Neither found: a new run, tagged
    with the model's digest so that it still links to the files it describes.
    """
    opened = _client()
    if opened is None:
        return NullTracker()
    client, uri = opened
    from mlflow.exceptions import MlflowException

    if continue_run_id:
        try:
            client.get_run(continue_run_id)
        except MlflowException:
            print(f"cnnlab: run {continue_run_id} is not in {uri}; starting a new run", file=sys.stderr)
        else:
            client.update_run(continue_run_id, status="RUNNING")
            return MlflowTracker(client, continue_run_id, uri)
    if model_md5:
        trained = _latest_run_of_model(client, study, run_name, model_md5)
        if trained is not None:
            client.update_run(trained.info.run_id, status="RUNNING")
            return MlflowTracker(client, trained.info.run_id, uri)
        # Trained elsewhere (a teammate's DVC remote or run-cache) and not logged to this store.
        print(f"cnnlab: no run in {uri} trained this {run_name} model; starting a new run", file=sys.stderr)
    run = client.create_run(_experiment_id(client, study, project_root()), run_name=run_name)
    tracker = MlflowTracker(client, run.info.run_id, uri)
    tracker.set_tags({**code_tags(Path.cwd()), EXPERIMENT_TAG: run_name,
                      **({MODEL_DIGEST_TAG: model_md5} if model_md5 else {})})
    return tracker


def code_tags(root: Path) -> dict[str, str]:
    """Where the code came from: MLflow's own context tags (user, source, git; the UI's Source column reads
    them), with the commit and dirty flag of `git_state` (a DVC experiment's baseline, not DVC's temporary commit)."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    state = git_state(root)
    tags = resolve_tags(state)
    if state["git.commit"] != "unknown":
        tags[MLFLOW_GIT_COMMIT] = state["git.commit"]
    return tags


def execution_facts(models: Mapping[str, tuple[str, str]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """For each experiment -> (study, model MD5): the run id and metrics `keys` of the run that made that
    model, where the store has one. These are facts of one execution (how long, how fast), kept in MLflow
    rather than in DVC's outputs."""
    opened = _client()
    if opened is None:
        return {}
    client, _ = opened
    found = {}
    for experiment, (study, model_md5) in models.items():
        run = _latest_run_of_model(client, study, experiment, model_md5)
        if run is not None:
            found[experiment] = {"run_id": run.info.run_id,
                                 **{k: run.data.metrics[k] for k in keys if k in run.data.metrics}}
    return found
