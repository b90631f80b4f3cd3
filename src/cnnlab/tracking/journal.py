"""A run's records kept on disk while MLflow cannot take them: .cnnlab/pending/<key>.jsonl.

The records are the protocol's JSON lines; files they name are copied beside the journal, since the
originals may change before delivery. A journal is locked while its stage writes it: a stage running at
the same time delivers only finished journals.
"""

from __future__ import annotations

import dataclasses
import fcntl
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cnnlab.tracking.protocol import Artifact, Model, Record, Use, decode, encode, pending_dir


class Journal:
    """Appends a run's records to `directory`/<key>.jsonl, with copies of the files they name."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self.path = directory, directory / f"{key}.jsonl"
        self._handle: IO[str] | None = None

    def append(self, record: Record) -> None:
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a")  # noqa: SIM115  (open, and locked, until release())
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        if isinstance(record, Artifact):
            record = dataclasses.replace(record, path=self._keep_copy(record.path))
        elif isinstance(record, Model):
            record = dataclasses.replace(record, classifier=self._keep_copy(record.classifier))
        self._handle.write(encode(record) + "\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _keep_copy(self, file: str) -> str:
        source = Path(file)
        target = self.directory / f"{self.path.stem}.files" / uuid.uuid4().hex / source.name
        target.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return str(target)


def finished_journals(root: Path) -> Iterator[Path]:
    """The journals under `root` no stage is writing any more, oldest first."""
    for path in sorted(pending_dir(root).glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        with open(path) as journal:
            try:
                fcntl.flock(journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is still being written by another stage
        yield path


def read_journal(path: Path) -> list[Record]:
    return [decode(line) for line in path.read_text().splitlines() if line.strip()]


def keep_remaining(path: Path, run_id: str, remaining: list[Record]) -> None:
    """Rewrite a partly delivered journal: the run it already created, then what is left to send."""
    path.write_text("".join(encode(record) + "\n" for record in [Use(run_id), *remaining]))


def remove_journal(path: Path) -> None:
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
    path.unlink()
