"""MLflow tracking: one MLflow experiment per study, one run per trained model.

A stage never waits on MLflow while it works. `open_run` starts a worker
process (`python -m cnnlab.tracking worker`) that imports MLflow, opens the
store and writes the run while the stage imports torch, loads data and
trains; the stage hands it records (JSON lines on a pipe) and waits for it
only when the run closes. The same records make the journal of a run whose
backend failed: the first failure prints one warning line, the rest of the
run goes to .cnnlab/pending/<run>.jsonl, and the next stage (or `python -m
cnnlab.tracking deliver`) sends it once the backend answers, closing the
run as it was meant to be closed. A stage killed outright leaves the worker
running: it sees its input end and marks the run KILLED.

The train stage keys its run with a random `cnnlab.run_key` kept in the
resumable state (a resumed stage continues that run) and tags it with the
MD5 of the model file it wrote; the evaluate stage finds the run by that
digest and continues it. Run ids never go into DVC's outputs: those are
cached by content and must hold only what their inputs determine.

Default store: sqlite:///<project root>/mlflow.db with artifacts in
<project root>/mlruns, where the root is DVC_ROOT when DVC runs the stage
(so `dvc exp run --queue` runs in a temporary copy still land in the
user's store), else the working directory. MLFLOW_TRACKING_URI overrides;
with a tracking server (http://...) every artifact and model goes through
the server, which decides where they are stored.

`records` is the stage's side and needs only the standard library (the
engine runs where MLflow is not installed, or with CNNLAB_TRACKING=off);
`store` is the MLflow side.
"""

from cnnlab.tracking.records import (
    EXPERIMENT_TAG, MODEL_DIGEST_TAG, DatasetRecord, NullTracker, Tracker, dvc_tags, environment_tags, flatten,
    new_run_key, open_run, registered_model_name,
)


__all__ = ["EXPERIMENT_TAG", "MODEL_DIGEST_TAG", "DatasetRecord", "NullTracker", "Tracker", "dvc_tags",
           "environment_tags", "flatten", "new_run_key", "open_run", "registered_model_name"]
