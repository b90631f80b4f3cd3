"""The MLflow side of tracking: records replayed into MLflow, journals delivered, runs looked up.

MLflow is imported inside the functions: it takes a second or more to import, and `python -m
cnnlab.tracking deliver` with nothing pending, or tracking switched off, should not pay for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cnnlab.tracking.journal import finished_journals, keep_remaining, read_journal, remove_journal
from cnnlab.tracking.protocol import (
    EXPERIMENT_TAG,
    GROUP_PARAMS_TAG,
    GROUP_TAG,
    MODEL_DIGEST_TAG,
    PARENT_TAG,
    RUN_KEY_TAG,
    Artifact,
    Batch,
    DatasetInput,
    EvaluatedAlias,
    Model,
    Open,
    Record,
    Terminate,
    Use,
    pending_dir,
    project_root,
    tracking_enabled,
    tracking_uri,
    warn_unreachable,
)

CNNLAB_CODE = Path(__file__).resolve().parents[1]  # the package a saved model carries
# MLflow 3 opens an experiment on the view of its kind: these are training runs, not GenAI traces.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
EVALUATED_ALIAS = "evaluated"  # the registered model version whose evaluation ran last
# MLflow's HTTP defaults (7 retries, exponential backoff, 120 s timeouts) hang a stage for minutes when
# the server is down; these bound the first failed call (a refused connection fails at once). The timeout
# leaves room for a busy server: 8 stages logging at once to one 2-worker server on a loaded 2-core machine
# saw answers slower than 5 s (tests/e2e/test_server_load.py). Set the variables to override.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# What DVC and the pipeline rewrite as they run (the lock, params, outputs, .gitignore entries, remote settings):
# a difference there does not make a run's code differ from its commit.
NOT_CODE = (
    ":(exclude)dvc.lock",
    ":(exclude)params.yaml",
    ":(exclude)metrics",
    ":(exclude)reports",
    ":(exclude).dvc",
    ":(exclude,glob)**/.gitignore",
    ":(exclude,glob)**/*.dvc",
)


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


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


def code_tags(root: Path, source: str) -> dict[str, str]:
    """Where the code came from: MLflow's own context tags (user, source, git; the UI's Source column reads
    them) for the script `source`, with the commit and dirty flag of `git_state` (a DVC experiment's
    baseline, not DVC's temporary commit)."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME

    state = git_state(root)
    tags = {**resolve_tags(state), MLFLOW_SOURCE_NAME: source}  # the stage's script, not this worker's
    if state["git.commit"] != "unknown":
        tags[MLFLOW_GIT_COMMIT] = state["git.commit"]
    return tags


def open_client(warn_pending: bool = False) -> tuple[Any, str, Path] | None:
    """An MlflowClient on this project's store (and the pending journals delivered to it), or None when
    tracking is off or MLflow is missing. A stage's own run warns if the store fails it, so a failed delivery
    of older journals warns only with `warn_pending` (the `deliver` command): one warning line per stage."""
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
        deliver_pending(client, root, warn_pending)
    return client, uri, pending


def tracking_user() -> str | None:
    """The login MLflow's client sends (from the environment or ~/.mlflow/credentials), for warnings."""
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username


def open_client_or_warn(warn_pending: bool = False) -> tuple[Any | None, str, Path] | None:
    """`open_client()`, or (None, uri, pending dir) when opening the store itself failed (warned once)."""
    try:
        return open_client(warn_pending)
    except Exception as error:
        root = project_root()
        warn_unreachable(tracking_uri(root), error, pending_dir(root), tracking_user())
        return None, tracking_uri(root), pending_dir(root)


def _experiment_id(client: Any, study: str) -> str:
    """The MLflow experiment of `study`, created on first use. With a tracking server, the server places its
    artifacts; with a local store, they go to <root>/mlruns/<study>."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(study)
    if existing is not None:
        if existing.tags.get(EXPERIMENT_KIND_TAG) is None:
            # Stages starting together all find the tag missing; on PostgreSQL all but the first get a
            # unique-key violation for setting it, and the tag is there either way.
            with contextlib.suppress(MlflowException):
                client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return existing.experiment_id
    root = project_root()
    location = None if is_server(tracking_uri(root)) else (root / "mlruns" / study).as_uri()
    try:
        return client.create_experiment(study, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:  # another stage created it in the meantime
        return client.get_experiment_by_name(study).experiment_id


def _newest_run(client: Any, study: str, tags: Mapping[str, str]) -> Any | None:
    """The newest run in `study` carrying all of `tags`."""
    found = client.get_experiment_by_name(study)
    if found is None:
        return None
    condition = " and ".join(f"tags.`{name}` = '{value}'" for name, value in tags.items())
    runs = client.search_runs([found.experiment_id], condition, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _open(
    client: Any, study: str, run_name: str, run_key: str | None, model_md5: str | None, tags: Mapping[str, str]
) -> str:
    """The id of the run to write to, marked RUNNING: the one keyed `run_key`, the newest that trained
    `model_md5`, or a new one carrying `tags`."""
    for wanted in (
        {RUN_KEY_TAG: run_key} if run_key else None,
        {EXPERIMENT_TAG: run_name, MODEL_DIGEST_TAG: model_md5} if model_md5 else None,
    ):
        found = _newest_run(client, study, wanted) if wanted else None
        if found is not None:
            client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
    if model_md5:  # trained elsewhere (a teammate's DVC remote or run-cache) and not logged to this store
        print(
            f"cnnlab: no run in {tracking_uri(project_root())} trained this {run_name} model; starting a new run",
            file=sys.stderr,
        )
    return client.create_run(_experiment_id(client, study), run_name=run_name, tags=dict(tags)).info.run_id


def group_run(client: Any, study: str, group: str, group_params: str) -> str:
    """The parent run of an experiment's seeds with these training settings, created (finished: it trains
    nothing itself) on first use; the report logs the seeds' mean and spread to it."""
    tags = {GROUP_TAG: group, GROUP_PARAMS_TAG: group_params}
    found = _newest_run(client, study, tags)
    if found is not None:
        return str(found.info.run_id)
    parent = client.create_run(_experiment_id(client, study), run_name=f"{group} (seeds)", tags=tags).info.run_id
    client.set_terminated(parent, status="FINISHED")
    return str(parent)


def replay(client: Any, record: Record, run_id: str | None) -> str | None:
    """Do what one record says; returns the run id later records refer to."""
    from mlflow.entities import Metric, Param, RunTag

    if isinstance(record, Open):
        opened = _open(client, record.study, record.run_name, record.run_key, record.model_md5, record.tags)
        if record.group is not None:
            parent = group_run(client, record.study, record.group, record.group_params or "")
            client.set_tag(opened, PARENT_TAG, parent)
        return opened
    if isinstance(record, Use):
        return record.run_id
    if run_id is None:  # a bug: only cnnlab.tracking writes records, and it opens the run first
        raise ValueError(f"{record.op} record before its run was opened")
    if isinstance(record, Batch):
        client.log_batch(
            run_id,
            metrics=[Metric(*m) for m in record.metrics],
            params=[Param(*p) for p in record.params],
            tags=[RunTag(*t) for t in record.tags],
        )
    elif isinstance(record, Artifact):
        client.log_artifact(run_id, record.path, record.artifact_path)
    elif isinstance(record, DatasetInput):
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, InputTag
        from mlflow.entities import DatasetInput as MlflowDatasetInput

        entity = Dataset(
            record.name,
            record.digest,
            "local",
            LocalArtifactDatasetSource(record.path).to_json(),
            profile=record.profile,
        )
        client.log_inputs(run_id, [MlflowDatasetInput(entity, tags=[InputTag("mlflow.data.context", record.context)])])
    elif isinstance(record, Model):
        with tempfile.TemporaryDirectory() as tmp:
            save_classifier_model(
                Path(tmp) / "model",
                Path(record.classifier),
                record.input_dtype,
                tuple(record.input_shape),
                record.requirements,
            )
            client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
        _register(client, record.registered_name, run_id)
    elif isinstance(record, EvaluatedAlias):
        _mark_evaluated(client, record.registered_name, run_id, record.metrics)
    elif isinstance(record, Terminate):
        client.set_terminated(run_id, status=record.status)
    return run_id


def save_classifier_model(
    out_dir: Path, classifier: Path, input_dtype: str, input_shape: tuple[int, ...], requirements: list[str]
) -> None:
    """An MLflow model directory (pyfunc flavour, models from code: cnnlab/serving_model.py) holding
    `classifier` (a file of serving.classifier_state) and cnnlab's code, taking (N, *input_shape) arrays
    of `input_dtype` and returning class indices."""
    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(input_dtype), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
    )
    # The signature says what the model takes, so MLflow's advice on type hints and input examples (an
    # example would cost a prediction at every save) is noise here, also in the process it loads the code in.
    quiet = "ignore::UserWarning:mlflow.pyfunc.utils.data_validation"
    with warnings.catch_warnings(), temporary_environment(PYTHONWARNINGS=quiet):
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
        mlflow.pyfunc.save_model(
            path=str(out_dir),
            python_model=str(CNNLAB_CODE / "serving_model.py"),
            artifacts={"classifier": str(classifier)},
            code_paths=[str(CNNLAB_CODE)],
            signature=signature,
            pip_requirements=requirements,
        )


def prepare_model_saving() -> None:
    """Do now, while the stage trains, the slow first-time work of saving a model, so that the stage's wait
    at the end is short: MLflow's model modules, and the map of installed packages MLflow builds to check the
    model's requirements (half a second, once per process; a private function, hence the guard)."""
    import mlflow.pyfunc  # noqa: F401
    from mlflow.utils import requirements_utils

    with contextlib.suppress(Exception):  # renamed or gone in another MLflow version: the save does it itself
        requirements_utils._init_modules_to_packages_map()


@contextlib.contextmanager
def temporary_environment(**variables: str) -> Iterator[None]:
    """These environment variables set while inside, as they were after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _register(client: Any, name: str, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # registered by an earlier run
        client.create_registered_model(
            name, description="cnnlab: versions trained by the DVC stage train@" + name.split(".", 1)[-1]
        )
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


def deliver_pending(client: Any, root: Path, warn: bool = True) -> list[str]:
    """Send every finished journal under `root` (oldest first); returns the runs completed. A journal that
    fails again stays for the next attempt, starting with the run it created, so none is opened twice."""
    delivered: list[str] = []
    for path in finished_journals(root):
        records = read_journal(path)
        run_id = None
        for position, record in enumerate(records):
            try:
                run_id = replay(client, record, run_id)
            except Exception as error:  # still unreachable, or refused: keep the rest for later
                if position and run_id is not None:
                    keep_remaining(path, run_id, records[position:])
                study = next((r.study for r in records if isinstance(r, Open)), None)
                if warn:
                    warn_unreachable(tracking_uri(root), error, path, tracking_user(), study)
                return delivered
        remove_journal(path)
        delivered.append(run_id or "")
    return delivered


def execution_facts(models: Mapping[str, tuple[str, str]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """For each experiment -> (study, model MD5): the run id and metrics `keys` of the run that made that
    model, where the store has one. These are facts of one execution (how long, how fast), kept in MLflow
    rather than in DVC's outputs."""
    opened = open_client_or_warn()
    if opened is None or opened[0] is None:
        return {}
    client = opened[0]
    found = {}
    for experiment, (study, model_md5) in models.items():
        run = _newest_run(client, study, {EXPERIMENT_TAG: experiment, MODEL_DIGEST_TAG: model_md5})
        if run is not None:
            found[experiment] = {
                "run_id": run.info.run_id,
                **{k: run.data.metrics[k] for k in keys if k in run.data.metrics},
            }
    return found
