"""MLflow tracking: one MLflow experiment per study, one run per trained model.

A stage never waits on MLflow while it works. `client.open_run` starts a worker process
(`python -m cnnlab.tracking worker`, worker.py) that imports MLflow, opens the store and writes the run
while the stage imports torch, loads data and trains; the stage hands it records (protocol.py, JSON
lines on a pipe) and waits for it only when the run closes. The same records make the journal of a run
whose backend failed (journal.py): the first failure prints one warning line, the rest of the run goes
to .cnnlab/pending/<run>.jsonl, and the next stage (or `python -m cnnlab.tracking deliver`) sends it
once the backend answers, closing the run as it was meant to be closed. A stage killed outright leaves
the worker running: it sees its input end and marks the run KILLED.

The train stage keys its run with a random `cnnlab.run_key` kept in the resumable state (a resumed
stage continues that run) and tags it with the MD5 of the model file it wrote; the evaluate stage finds
the run by that digest and continues it. Run ids never go into DVC's outputs: those are cached by
content and must hold only what their inputs determine.

Default store: sqlite:///<project root>/mlflow.db with artifacts in <project root>/mlruns, where the
root is DVC_ROOT when DVC runs the stage (so `dvc exp run --queue` runs in a temporary copy still land
in the user's store), else the working directory. MLFLOW_TRACKING_URI overrides; with a tracking server
(http://...) every artifact and model goes through the server, which decides where they are stored.
"""
