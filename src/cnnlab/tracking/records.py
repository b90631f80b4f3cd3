"""The stage's side of tracking: what a run logs, as records handed to a worker process or kept in a journal.

Standard library only: importing this never imports MLflow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

TRACKING_SWITCH_ENV = "CNNLAB_TRACKING"
METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
PARAMS_PER_BATCH = 100
MODEL_DIGEST_TAG = "cnnlab.model_md5"
EXPERIMENT_TAG = "cnnlab.experiment"
RUN_KEY_TAG = "cnnlab.run_key"  # chosen by the stage, so a resumed stage finds its run without asking MLflow first


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def pending_dir(root: Path) -> Path:
    return root / ".cnnlab" / "pending"


def registered_model_name(study: str, experiment: str) -> str:
    return f"{study}.{experiment}"


def tracking_enabled() -> bool:
    return os.environ.get(TRACKING_SWITCH_ENV, "").lower() not in {"off", "0", "false"}


def new_run_key() -> str:
    return uuid.uuid4().hex


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
    """One MLflow run as a stage writes it; a context manager that closes the run FINISHED or FAILED."""

    @property
    def run_id(self) -> str | None: ...  # known once the run is closed

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, dataset: DatasetRecord, context: str) -> None: ...
    def log_model(self, classifier: Path, input_dtype: str, input_shape: tuple[int, ...],
                  requirements: list[str], registered_name: str) -> None: ...
    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None: ...
    def close(self, succeeded: bool) -> None: ...
    def __enter__(self) -> Tracker: ...
    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


class NullTracker:
    """Stands in when tracking is off or MLflow is not installed."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, dataset: DatasetRecord, context: str) -> None: ...
    def log_model(self, classifier: Path, input_dtype: str, input_shape: tuple[int, ...],
                  requirements: list[str], registered_name: str) -> None: ...
    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None: ...
    def close(self, succeeded: bool) -> None: ...

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


def warn_unreachable(uri: str, error: BaseException, journal: Path) -> None:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    # On a line of its own: the stage's progress bar may be mid-line on the same terminal.
    print(f"\ncnnlab: warning: MLflow at {uri} failed ({type(error).__name__}: {reason}); training goes on, "
          f"this run's records wait in {journal} and are sent when it answers again "
          f"(by the next stage, or `python -m cnnlab.tracking deliver`)", file=sys.stderr, flush=True)


# Records name files by these keys; a journal keeps its own copies, since the originals may change before delivery.
FILE_KEYS = {"artifact": "path", "model": "classifier"}


class PendingLog:
    """What a run could not send, as JSON lines in `directory`/<key>.jsonl, files it names copied beside it."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self.path = directory, directory / f"{key}.jsonl"
        self._handle: IO[str] | None = None

    def append(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a")
            # Held while this process writes: a stage running at the same time delivers only finished journals.
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        if record["op"] in FILE_KEYS:
            key = FILE_KEYS[record["op"]]
            record = {**record, key: str(self._keep_copy(Path(record[key])))}
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _keep_copy(self, source: Path) -> Path:
        target = self.directory / f"{self.path.stem}.files" / uuid.uuid4().hex / source.name
        target.parent.mkdir(parents=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        return target


class RunProcess:
    """A run written by a worker process (`python -m cnnlab.tracking worker`, see `store.serve`).

    Every call becomes one JSON record on the worker's input: a pipe write, never a wait on MLflow.
    The worker is in a session of its own, so a kill of the stage's process group leaves it to mark the
    run KILLED. Should the worker itself die, the stage warns once and journals the rest of the run.
    """

    def __init__(self, opening: dict[str, Any]) -> None:
        self._opening = opening
        self._scratch = Path(tempfile.mkdtemp(prefix="cnnlab-run-"))  # files handed over; removed at close
        self._journal: PendingLog | None = None
        self._run_id: str | None = None
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.tracking", "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # it waits on I/O, not math
        )
        self._send({"op": "open", **opening, "source": sys.argv[0]})

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def _send(self, record: dict[str, Any]) -> None:
        if self._journal is None:
            try:
                self._worker.stdin.write(json.dumps(record) + "\n")  # type: ignore[union-attr]
                return
            except OSError as error:  # the worker died: keep the run locally instead
                self._journal = PendingLog(pending_dir(project_root()), f"unsent-{new_run_key()}")
                warn_unreachable("the tracking worker", error, self._journal.path)
                if record["op"] != "open":
                    self._journal.append({"op": "open", **self._opening})  # opens or continues the keyed run
        self._journal.append(record)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self._send({"op": "batch", "params": items[start : start + PARAMS_PER_BATCH]})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._send({"op": "batch", "tags": [(k, str(v)) for k, v in tags.items()]})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), METRICS_PER_BATCH):
            self._send({"op": "batch", "metrics": items[start : start + METRICS_PER_BATCH]})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_dataset(self, dataset: DatasetRecord, context: str) -> None:
        self._send({"op": "dataset", "name": dataset.name, "digest": dataset.digest, "path": str(dataset.path),
                    "profile": json.dumps({"origin": dataset.origin, **dataset.sizes}), "context": context})

    def log_model(self, classifier: Path, input_dtype: str, input_shape: tuple[int, ...],
                  requirements: list[str], registered_name: str) -> None:
        """Log `classifier` (a file of serving.classifier_state) as the run's MLflow model `model`, taking
        (N, *input_shape) arrays of `input_dtype`, and register it as a new version of `registered_name`.
        The file is moved to the worker's keeping (weights can be hundreds of MB: no copy)."""
        handed_over = self._scratch / uuid.uuid4().hex / Path(classifier).name
        handed_over.parent.mkdir()
        shutil.move(classifier, handed_over)
        self._send({"op": "model", "classifier": str(handed_over), "input_dtype": input_dtype,
                    "input_shape": list(input_shape), "requirements": requirements,
                    "registered_name": registered_name})

    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None:
        """Point the registered model's `evaluated` alias at this run's version, with its test metrics."""
        self._send({"op": "evaluated", "registered_name": registered_name, "metrics": dict(metrics)})

    def close(self, succeeded: bool) -> None:
        """End the run FINISHED or FAILED and wait for the worker to have written it (or journaled it)."""
        self._send({"op": "terminate", "status": "FINISHED" if succeeded else "FAILED"})
        try:
            self._worker.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        reply = self._worker.stdout.read()  # type: ignore[union-attr]
        self._worker.wait()
        self._run_id = json.loads(reply).get("run_id") if reply.strip() else None
        if self._journal is not None:
            self._journal.release()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> RunProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close(succeeded=kind is None)


def open_run(study: str, run_name: str, *, run_key: str | None = None, model_md5: str | None = None,
             logs_model: bool = False) -> Tracker:
    """Start a run in MLflow experiment `study`, or continue one; returns at once (the worker opens it).

    `run_key`: the run keyed so (a resumed training's), else a new run keyed so. `model_md5`: the newest
    run that trained the model file with this MD5 (how evaluation finds its training's run), else a new
    run tagged with that digest, so that it still links to the files it describes. `logs_model`: the
    worker prepares MLflow's model saving while it waits.
    """
    if not tracking_enabled():
        return NullTracker()
    if find_spec("mlflow") is None:
        print("cnnlab: mlflow is not installed; this run is not tracked", file=sys.stderr)
        return NullTracker()
    tags = {EXPERIMENT_TAG: run_name, **({MODEL_DIGEST_TAG: model_md5} if model_md5 else {}),
            **({RUN_KEY_TAG: run_key} if run_key else {})}
    return RunProcess({"study": study, "run_name": run_name, "run_key": run_key, "model_md5": model_md5,
                       "tags": tags, "logs_model": logs_model})
