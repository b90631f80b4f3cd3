"""The stage's side of tracking: a Tracker that hands each call, as a record, to a worker process.

Every method takes values and returns nothing, and this package imports none of the code that computes
a stage's outputs: tracking can record a run, never change what the run writes. That is why no DVC stage
depends on this module (cnnlab_tools/stage_deps.py), and a change here re-runs nothing.

Standard library only: importing this never imports MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from typing import Any, Protocol

from cnnlab.tracking.journal import Journal
from cnnlab.tracking.protocol import (
    DIVERGED_TAG,
    EXPERIMENT_TAG,
    MODEL_DIGEST_TAG,
    RUN_KEY_TAG,
    Artifact,
    Batch,
    DatasetInput,
    EvaluatedAlias,
    Model,
    Open,
    Record,
    Terminate,
    dvc_tags,
    encode,
    flatten,
    new_run_key,
    pending_dir,
    project_root,
    registered_model_name,
    tracking_enabled,
    warn_unreachable,
)
from cnnlab.tracking.sweeps import sweep_tags

# The whole interface the pipeline uses: it imports nothing else of cnnlab.tracking.
__all__ = [
    "DIVERGED_TAG",
    "MODEL_DIGEST_TAG",
    "DatasetRecord",
    "NullTracker",
    "Tracker",
    "dvc_tags",
    "new_run_key",
    "open_run",
    "registered_model_name",
]

METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
PARAMS_PER_BATCH = 100
PARAM_VALUE_LIMIT = 6000


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
    def log_model(
        self,
        classifier: Path,
        input_dtype: str,
        input_shape: tuple[int, ...],
        requirements: list[str],
        registered_name: str,
    ) -> None: ...
    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None: ...
    def close(self, succeeded: bool) -> None: ...
    def __enter__(self) -> Tracker: ...
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None: ...


class NullTracker:
    """Stands in when tracking is off or MLflow is not installed."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, dataset: DatasetRecord, context: str) -> None: ...
    def log_model(
        self,
        classifier: Path,
        input_dtype: str,
        input_shape: tuple[int, ...],
        requirements: list[str],
        registered_name: str,
    ) -> None: ...
    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None: ...
    def close(self, succeeded: bool) -> None: ...

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None: ...


class WorkerRun:
    """A run written by a worker process (`python -m cnnlab.tracking worker`, see worker.serve).

    Every call becomes one record on the worker's input: a pipe write, never a wait on MLflow. The
    worker is in a session of its own, so a kill of the stage's process group leaves it to mark the
    run KILLED. Should the worker itself die, the stage warns once and journals the rest of the run.
    """

    def __init__(self, opening: Open) -> None:
        self._opening = opening
        self._scratch = Path(tempfile.mkdtemp(prefix="cnnlab-run-"))  # files handed over; removed at close
        self._journal: Journal | None = None
        self._run_id: str | None = None
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.tracking", "worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # it waits on I/O, not math
        )
        self._send(opening)

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def _send(self, record: Record) -> None:
        if self._journal is None:
            try:
                self._worker.stdin.write(encode(record) + "\n")  # type: ignore[union-attr]
                return
            except OSError as error:  # the worker died: keep the run locally instead
                self._journal = Journal(pending_dir(project_root()), f"unsent-{new_run_key()}")
                warn_unreachable("the tracking worker", error, self._journal.path)
                if not isinstance(record, Open):
                    self._journal.append(self._opening)  # opens or continues the keyed run
        self._journal.append(record)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [(k, v[:PARAM_VALUE_LIMIT]) for k, v in flatten(params).items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self._send(Batch(params=items[start : start + PARAMS_PER_BATCH]))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._send(Batch(tags=[(k, str(v)) for k, v in tags.items()]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), METRICS_PER_BATCH):
            self._send(Batch(metrics=items[start : start + METRICS_PER_BATCH]))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._send(Artifact(str(Path(path).resolve()), artifact_path))

    def log_dataset(self, dataset: DatasetRecord, context: str) -> None:
        self._send(
            DatasetInput(
                dataset.name,
                dataset.digest,
                str(dataset.path),
                json.dumps({"origin": dataset.origin, **dataset.sizes}),
                context,
            )
        )

    def log_model(
        self,
        classifier: Path,
        input_dtype: str,
        input_shape: tuple[int, ...],
        requirements: list[str],
        registered_name: str,
    ) -> None:
        """Log `classifier` (a file of serving.classifier_state) as the run's MLflow model `model`, taking
        (N, *input_shape) arrays of `input_dtype`, and register it as a new version of `registered_name`.
        The file is moved to the worker's keeping (weights can be hundreds of MB: no copy)."""
        handed_over = self._scratch / uuid.uuid4().hex / Path(classifier).name
        handed_over.parent.mkdir()
        shutil.move(classifier, handed_over)
        self._send(Model(str(handed_over), input_dtype, list(input_shape), requirements, registered_name))

    def mark_evaluated(self, registered_name: str, metrics: Mapping[str, float]) -> None:
        self._send(EvaluatedAlias(registered_name, dict(metrics)))

    def close(self, succeeded: bool) -> None:
        """End the run FINISHED or FAILED and wait for the worker to have written it (or journaled it)."""
        self._send(Terminate("FINISHED" if succeeded else "FAILED"))
        with contextlib.suppress(OSError):  # the worker is gone already
            self._worker.stdin.close()  # type: ignore[union-attr]
        reply = self._worker.stdout.read()  # type: ignore[union-attr]
        self._worker.wait()
        self._run_id = json.loads(reply).get("run_id") if reply.strip() else None
        if self._journal is not None:
            self._journal.release()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> WorkerRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(succeeded=kind is None)


def open_run(
    study: str,
    run_name: str,
    *,
    run_key: str | None = None,
    model_md5: str | None = None,
    logs_model: bool = False,
    group: str | None = None,
    group_params: str | None = None,
) -> Tracker:
    """Start a run in MLflow experiment `study`, or continue one; returns at once (the worker opens it).

    `run_key`: the run keyed so (a resumed training's), else a new run keyed so. `model_md5`: the newest
    run that trained the model file with this MD5 (how evaluation finds its training's run), else a new
    run tagged with that digest, so that it still links to the files it describes. `logs_model`: the
    worker prepares MLflow's model saving while it waits. `group`: the run is one seed of that experiment, a
    child of the parent run of its seeds with the training settings digested as `group_params`.
    """
    if not tracking_enabled():
        return NullTracker()
    if find_spec("mlflow") is None:
        print("cnnlab: mlflow is not installed; this run is not tracked", file=sys.stderr)
        return NullTracker()
    tags = {
        EXPERIMENT_TAG: run_name,
        **({MODEL_DIGEST_TAG: model_md5} if model_md5 else {}),
        **({RUN_KEY_TAG: run_key} if run_key else {}),
        **sweep_tags(),  # in a `dvc exp run` sweep: its id and this run's swept values
    }
    return WorkerRun(Open(study, run_name, run_key, model_md5, tags, logs_model, sys.argv[0], group, group_params))
