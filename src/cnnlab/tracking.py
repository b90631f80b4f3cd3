"""MLflow tracking: one MLflow experiment per study, one run per trained model.

The train stage opens the run and writes its id into its outputs; the
evaluate stage continues that run. MLflow is imported only here and only
when a run is opened, so the engine works on machines without it
(CNNLAB_TRACKING=off, or mlflow not installed, gives a tracker that does nothing).

Default store: sqlite:///<project root>/mlflow.db with artifacts in
<project root>/mlruns, where the root is DVC_ROOT when DVC runs the stage
(so `dvc exp run --queue` runs in a temporary copy still land in the
user's store), else the working directory. MLFLOW_TRACKING_URI overrides.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

TRACKING_SWITCH_ENV = "CNNLAB_TRACKING"
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
FLUSH_EVERY_SECONDS = 10.0


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


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


def git_state(root: Path) -> dict[str, str]:
    """Commit and dirty flag of the code the run used ('unknown' outside git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def environment_tags() -> dict[str, str]:
    import torch

    return {"torch.version": torch.__version__, "python.version": platform.python_version()}


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
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


def _mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def _experiment_id(client: Any, study: str, root: Path) -> str:
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(study)
    if existing is not None:
        return existing.experiment_id
    try:
        return client.create_experiment(study, artifact_location=(root / "mlruns" / study).as_uri())
    except MlflowException:  # another stage created it in the meantime
        return client.get_experiment_by_name(study).experiment_id


def open_run(study: str, run_name: str, continue_run_id: str | None = None) -> Tracker:
    """Start a run in MLflow experiment `study`, or continue `continue_run_id` if the store has it."""
    if os.environ.get(TRACKING_SWITCH_ENV, "").lower() in {"off", "0", "false"}:
        return NullTracker()
    if not _mlflow_available():
        print("cnnlab: mlflow is not installed; this run is not tracked", file=sys.stderr)
        return NullTracker()
    from mlflow import MlflowClient

    root = project_root()
    uri = tracking_uri(root)
    client = MlflowClient(tracking_uri=uri)
    if continue_run_id:
        from mlflow.exceptions import MlflowException

        try:
            client.get_run(continue_run_id)
            client.update_run(continue_run_id, status="RUNNING")
            return MlflowTracker(client, continue_run_id, uri)
        except MlflowException:
            # The model came from a DVC cache or remote whose MLflow store this is not.
            print(f"cnnlab: run {continue_run_id} is not in {uri}; starting a new run", file=sys.stderr)
    run = client.create_run(_experiment_id(client, study, root), run_name=run_name)
    tracker = MlflowTracker(client, run.info.run_id, uri)
    if continue_run_id:
        tracker.set_tags({"cnnlab.train_run_id": continue_run_id})
    return tracker
