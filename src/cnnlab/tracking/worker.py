"""The worker process a stage starts to write its run (`python -m cnnlab.tracking worker`).

It imports MLflow, opens the store and writes the run while the stage imports torch, loads data and
trains; it reads the stage's records (protocol.py) on stdin and replies with the run id once the run is
closed. From the first failure of MLflow on, it keeps the run's records in a journal instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from cnnlab.tracking.backend import code_tags, open_client_or_warn, prepare_model_saving, replay, tracking_user
from cnnlab.tracking.journal import Journal
from cnnlab.tracking.protocol import Open, Record, Terminate, Use, decode, new_run_key, warn_unreachable


class RunWriter:
    """Writes one run's records to MLflow; from the first failure on (one warning), to its journal."""

    def __init__(self, client: Any | None, uri: str, pending: Path, key: str, study: str) -> None:
        self.client, self.uri, self.study = client, uri, study
        self.run_id: str | None = None
        self.journal = Journal(pending, key)
        self.offline = client is None

    def write(self, record: Record) -> None:
        if not self.offline:
            try:
                self.run_id = replay(self.client, record, self.run_id)
                return
            except Exception as error:  # whatever the backend raises, the stage's run must go on
                self.offline = True
                if self.run_id is not None:
                    self.journal.append(Use(self.run_id))
                warn_unreachable(self.uri, error, self.journal.path, tracking_user(), self.study)
        self.journal.append(record)


def serve(lines: Iterable[str], reply: IO[str]) -> None:
    """Write the run that the records on `lines` describe (the first opens it), then reply with its id.
    Input that ends before the run was closed means the stage was killed: the run ends KILLED."""
    records = (decode(line) for line in lines if line.strip())
    opening = next(records, None)
    if not isinstance(opening, Open):
        return
    # Recorded now, not at a later delivery: the code as it is while the stage runs.
    opening = dataclasses.replace(opening, tags={**code_tags(Path.cwd(), opening.source), **opening.tags})
    opened = open_client_or_warn()
    if opened is None:
        return
    client, uri, pending = opened
    writer = RunWriter(client, uri, pending, opening.run_key or new_run_key(), opening.study)
    writer.write(opening)
    if opening.logs_model:
        prepare_model_saving()
    closed = False
    for record in records:
        writer.write(record)
        closed = closed or isinstance(record, Terminate)
    if not closed:
        writer.write(Terminate("KILLED"))
    writer.journal.release()
    reply.write(json.dumps({"run_id": None if writer.offline else writer.run_id}) + "\n")
    reply.flush()
