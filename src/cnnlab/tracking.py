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
user's store), else the working directory. MLFLOW_TRACKING_URI overrides;
with a tracking server (http://...) every artifact and model goes through
the server, which decides where they are stored.

Tracking never costs training: HTTP retries are bounded (seconds, not
MLflow's minutes), and the first failure of the backend prints one warning
line and switches the run to a local journal, .cnnlab/pending/<run>.jsonl,
which the next stage (or `python -m cnnlab.tracking deliver`) sends once
the backend answers again, closing the run as it was meant to be closed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

TRACKING_SWITCH_ENV = "CNNLAB_TRACKING"
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
FLUSH_EVERY_SECONDS = 10.0
MODEL_DIGEST_TAG = "cnnlab.model_md5"
EXPERIMENT_TAG = "cnnlab.experiment"
# MLflow 3 opens an experiment on the view of its kind: these are training runs, not GenAI traces.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
EVALUATED_ALIAS = "evaluated"  # the registered model version whose evaluation ran last
# MLflow's HTTP defaults (7 retries, exponential backoff, 120 s timeouts) hang a stage for minutes when
# the server is down; these bound the first failed call to seconds. Set the variables to override.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# What DVC and the pipeline rewrite as they run (the lock, params, outputs, .gitignore entries, remote settings):
# a difference there does not make a run's code differ from its commit.
NOT_CODE = (":(exclude)dvc.lock", ":(exclude)params.yaml", ":(exclude)metrics", ":(exclude)reports",
            ":(exclude).dvc", ":(exclude,glob)**/.gitignore", ":(exclude,glob)**/*.dvc")


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def registered_model_name(study: str, experiment: str) -> str:
    return f"{study}.{experiment}"


def pending_dir(root: Path) -> Path:
    return root / ".cnnlab" / "pending"


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
    def log_model(self, model_dir: Path, registered_name: str) -> None: ...
    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None: ...
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
    def log_model(self, model_dir: Path, registered_name: str) -> None: ...
    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None: ...
    def flush(self) -> None: ...
    def close(self, succeeded: bool) -> None: ...


class PendingLog:
    """What a run could not send, as JSON lines in `directory`/<key>.jsonl, files it names copied beside it."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self.path = directory, directory / f"{key}.jsonl"
        self._handle: Any = None

    def append(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a")
            # Held while this process writes: a stage running at the same time delivers only finished journals.
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def keep_copy(self, source: Path) -> Path:
        """A copy of a file or directory the run logs: the original may change before delivery."""
        target = self.directory / f"{self.path.stem}.files" / uuid.uuid4().hex / source.name
        target.parent.mkdir(parents=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        return target


class MlflowTracker:
    """One MLflow run, written through MlflowClient; metrics are buffered and sent in batches.

    The first call that fails (server down, network, full disk) prints one warning; from then on
    everything the run logs goes to its PendingLog instead, for `deliver_pending` to send later.
    A run opened while the backend was unreachable starts offline, with how to open it recorded.
    """

    def __init__(self, client: Any, run_id: str | None, uri: str, pending: Path,
                 opening: dict[str, Any] | None = None) -> None:
        self.client, self.run_id, self.uri = client, run_id, uri
        self.journal = PendingLog(pending, run_id or f"unopened-{uuid.uuid4().hex}")
        self.offline = run_id is None
        if self.offline:
            self.journal.append({"op": "open", **(opening or {})})
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def _send(self, record: dict[str, Any], send: Callable[[], object]) -> None:
        if not self.offline:
            try:
                send()
                return
            except Exception as error:  # whatever the backend raises, the training run must go on
                self._go_offline(error)
        self.journal.append(record)

    def _go_offline(self, error: Exception) -> None:
        self.offline = True
        self.journal.append({"op": "use", "run_id": self.run_id})
        warn_unreachable(self.uri, error, self.journal.path)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]
            self._send({"op": "batch", "params": chunk},
                       lambda: self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk]))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [(k, str(v)) for k, v in tags.items()]
        self._send({"op": "batch", "tags": items},
                   lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in items]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._pending.extend((k, float(v), now, step or 0) for k, v in metrics.items())
        if len(self._pending) >= METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        from mlflow.entities import Metric

        for start in range(0, len(self._pending), METRICS_PER_BATCH):
            chunk = self._pending[start : start + METRICS_PER_BATCH]
            self._send({"op": "batch", "metrics": chunk},
                       lambda: self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in chunk]))
        self._pending.clear()
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.offline:
            path = self.journal.keep_copy(path)
        self._send({"op": "artifact", "path": str(path), "artifact_path": artifact_path},
                   lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dataset(self, dataset: DatasetRecord, context: str) -> None:
        record = {"op": "dataset", "name": dataset.name, "digest": dataset.digest, "path": str(dataset.path),
                  "profile": json.dumps({"origin": dataset.origin, **dataset.sizes}), "context": context}
        self._send(record, lambda: _replay(self.client, record, self.run_id))

    def log_model(self, model_dir: Path, registered_name: str) -> None:
        """Upload a saved MLflow model directory as the run's `model` and register it as a new version."""
        if self.offline:
            model_dir = self.journal.keep_copy(model_dir)
        record = {"op": "model", "dir": str(model_dir), "registered_name": registered_name}
        self._send(record, lambda: _replay(self.client, record, self.run_id))

    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None:
        """Point the registered model's `evaluated` alias at this run's version, with its test metrics."""
        record = {"op": "evaluated", "registered_name": registered_name, "metrics": dict(metrics)}
        self._send(record, lambda: _replay(self.client, record, self.run_id))

    def close(self, succeeded: bool) -> None:
        self.flush()
        status = "FINISHED" if succeeded else "FAILED"
        self._send({"op": "terminate", "status": status},
                   lambda: self.client.set_terminated(self.run_id, status=status))
        self.journal.release()


def warn_unreachable(uri: str, error: BaseException, journal: Path) -> None:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    print(f"cnnlab: warning: MLflow at {uri} failed ({type(error).__name__}: {reason}); training goes on, "
          f"this run's records wait in {journal} and are sent when it answers again "
          f"(by the next stage, or `python -m cnnlab.tracking deliver`)", file=sys.stderr, flush=True)


def _replay(client: Any, record: dict[str, Any], run_id: str | None) -> str | None:
    """Do what one journal record says; returns the run id later records refer to."""
    from mlflow.entities import Metric, Param, RunTag

    op = record["op"]
    if op == "open":
        return _open(client, record["study"], record["run_name"], record.get("continue_run_id"),
                     record.get("model_md5"), record.get("tags") or {})
    if op == "use":
        return record["run_id"]
    if op == "batch":
        client.log_batch(run_id, metrics=[Metric(*m) for m in record.get("metrics", [])],
                         params=[Param(*p) for p in record.get("params", [])],
                         tags=[RunTag(*t) for t in record.get("tags", [])])
    elif op == "artifact":
        client.log_artifact(run_id, record["path"], record["artifact_path"])
    elif op == "dataset":
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(record["name"], record["digest"], "local",
                         LocalArtifactDatasetSource(record["path"]).to_json(), profile=record["profile"])
        client.log_inputs(run_id, [DatasetInput(entity, tags=[InputTag("mlflow.data.context", record["context"])])])
    elif op == "model":
        client.log_artifacts(run_id, record["dir"], "model")
        _register(client, record["registered_name"], run_id)
    elif op == "evaluated":
        _mark_evaluated(client, record["registered_name"], run_id, record["metrics"])
    elif op == "terminate":
        client.set_terminated(run_id, status=record["status"])
    else:
        raise ValueError(f"unknown journal record {op!r}")  # a bug: only this module writes them
    return run_id


def _register(client: Any, name: str, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="cnnlab: versions trained by the DVC stage train@"
                                                          + name.split(".", 1)[-1])
    except MlflowException:
        pass  # registered by an earlier run
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    if not client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        client.create_model_version(name, source, run_id=run_id)


def _mark_evaluated(client: Any, name: str, run_id: str, metrics: Mapping[str, float]) -> None:
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        return  # trained without tracking (or restored from a teammate's cache): no version to point at
    version = max(versions, key=lambda v: int(v.version)).version
    client.set_registered_model_alias(name, EVALUATED_ALIAS, version)
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, key, str(value))


def deliver_pending(client: Any, root: Path) -> list[str]:
    """Send every journal under `root` (oldest first); returns the runs completed. A journal that fails
    again stays for the next attempt, its `open` replaced by the run it created, so none is opened twice."""
    delivered = []
    for path in sorted(pending_dir(root).glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        with open(path) as journal:
            try:
                fcntl.flock(journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is still being written by another stage
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        run_id = None
        for position, record in enumerate(records):
            try:
                run_id = _replay(client, record, run_id)
            except Exception as error:  # still unreachable, or refused: keep the rest for later
                if position:
                    remaining = [{"op": "use", "run_id": run_id}, *records[position:]]
                    path.write_text("".join(json.dumps(r) + "\n" for r in remaining))
                warn_unreachable(tracking_uri(root), error, path)
                return delivered
        shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
        path.unlink()
        delivered.append(run_id or "")
    return delivered


def _client() -> tuple[Any, str, Path] | None:
    """An MlflowClient on this project's store (and the pending journals delivered to it), or None when
    tracking is off or MLflow is missing."""
    if not tracking_enabled():
        return None
    for variable, value in {**HTTP_LIMITS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(variable, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        print("cnnlab: mlflow is not installed; this run is not tracked", file=sys.stderr)
        return None
    root = project_root()
    uri, pending = tracking_uri(root), pending_dir(root)
    if not uri.startswith("sqlite:///"):
        client = MlflowClient(tracking_uri=uri)
    else:
        # Open the store one process at a time: MLflow creates and migrates a new SQLite store as the client
        # opens it, and two stages doing that at once (queued experiments, `dvc queue start -j 2`) corrupt it.
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # in case a later MLflow opens its store lazily
    if pending.is_dir():
        deliver_pending(client, root)
    return client, uri, pending


def _experiment_id(client: Any, study: str, uri: str, root: Path) -> str:
    """The MLflow experiment of `study`, created on first use. With a tracking server, the server places its
    artifacts; with a local store, they go to <root>/mlruns/<study>."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(study)
    if existing is not None:
        if existing.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return existing.experiment_id
    location = None if is_server(uri) else (root / "mlruns" / study).as_uri()
    try:
        return client.create_experiment(study, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
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


def _open(client: Any, study: str, run_name: str, continue_run_id: str | None, model_md5: str | None,
          tags: Mapping[str, str]) -> str:
    """The id of the run to write to, marked RUNNING: the continued one, the one that trained `model_md5`,
    or a new one carrying `tags`."""
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(project_root())
    if continue_run_id:
        try:
            client.get_run(continue_run_id)
        except MlflowException:
            print(f"cnnlab: run {continue_run_id} is not in {uri}; starting a new run", file=sys.stderr)
        else:
            client.update_run(continue_run_id, status="RUNNING")
            return continue_run_id
    if model_md5:
        trained = _latest_run_of_model(client, study, run_name, model_md5)
        if trained is not None:
            client.update_run(trained.info.run_id, status="RUNNING")
            return trained.info.run_id
        # Trained elsewhere (a teammate's DVC remote or run-cache) and not logged to this store.
        print(f"cnnlab: no run in {uri} trained this {run_name} model; starting a new run", file=sys.stderr)
    run = client.create_run(_experiment_id(client, study, uri, project_root()), run_name=run_name, tags=dict(tags))
    return run.info.run_id


def open_run(study: str, run_name: str, continue_run_id: str | None = None, *, model_md5: str | None = None) -> Tracker:
    """Start a run in MLflow experiment `study`, or continue one.

    `continue_run_id`: the run a resumed training started. `model_md5`: the run that trained the model
    file with this MD5 (how evaluation finds its training's run). Neither found: a new run, tagged
    with the model's digest so that it still links to the files it describes. An unreachable backend
    gives a tracker that keeps everything in a journal, opening the run when it is delivered.
    """
    opened = _client_or_warn()
    if opened is None:
        return NullTracker()
    client, uri, pending = opened
    tags = {**code_tags(Path.cwd()), EXPERIMENT_TAG: run_name, **({MODEL_DIGEST_TAG: model_md5} if model_md5 else {})}
    opening = {"study": study, "run_name": run_name, "continue_run_id": continue_run_id, "model_md5": model_md5,
               "tags": tags}
    if client is not None:
        try:
            return MlflowTracker(client, _open(client, **opening), uri, pending)
        except Exception as error:  # the backend is down or refuses: train anyway, log later
            tracker = MlflowTracker(client, None, uri, pending, opening=opening)
            warn_unreachable(uri, error, tracker.journal.path)
            return tracker
    tracker = MlflowTracker(None, None, uri, pending, opening=opening)
    return tracker


def open_run_in_background(study: str, run_name: str, continue_run_id: str | None = None, *,
                           model_md5: str | None = None,
                           then: Callable[[Tracker], None] | None = None) -> Future[Tracker]:
    """`open_run` on a thread of its own, so that the seconds it takes to import MLflow and open its store
    pass while the caller trains or evaluates; `then` runs on that thread with the opened tracker."""

    def open_and_set_up() -> Tracker:
        tracker = open_run(study, run_name, continue_run_id, model_md5=model_md5)
        if then is not None:
            try:
                then(tracker)
            except Exception as error:  # the caller's training must not fail on what it logs first
                print(f"cnnlab: warning: setting up MLflow run {tracker.run_id} failed "
                      f"({type(error).__name__}: {error}); training goes on", file=sys.stderr)
        return tracker

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-tracking")
    future = executor.submit(open_and_set_up)
    executor.shutdown(wait=False)
    return future


def _client_or_warn() -> tuple[Any | None, str, Path] | None:
    """`_client()`, or (None, uri, pending dir) when opening the store itself failed (warned once)."""
    try:
        return _client()
    except Exception as error:
        root = project_root()
        warn_unreachable(tracking_uri(root), error, pending_dir(root))
        return None, tracking_uri(root), pending_dir(root)


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
    opened = _client_or_warn()
    if opened is None or opened[0] is None:
        return {}
    client = opened[0]
    found = {}
    for experiment, (study, model_md5) in models.items():
        run = _latest_run_of_model(client, study, experiment, model_md5)
        if run is not None:
            found[experiment] = {"run_id": run.info.run_id,
                                 **{k: run.data.metrics[k] for k in keys if k in run.data.metrics}}
    return found


def main(argv: list[str] | None = None) -> None:
    """`python -m cnnlab.tracking deliver`: send the runs' journals kept while the backend was unreachable."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["deliver"])
    parser.parse_args(argv)
    root = project_root()
    if not list(pending_dir(root).glob("*.jsonl")):
        print(f"nothing pending in {pending_dir(root)}")
        return
    opened = _client_or_warn()
    if opened is None or opened[0] is None:
        raise SystemExit(1)
    left = len(list(pending_dir(root).glob("*.jsonl")))
    print(f"delivered to {opened[1]}; {left} journal(s) still pending in {pending_dir(root)}")
    raise SystemExit(1 if left else 0)


if __name__ == "__main__":
    main()
