"""Files: writing outputs so that a failed stage never leaves a half-written one, and digests of them.

Standard library only, so every layer (the tracking client included) may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; it replaces `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    _remove(tmp)
    try:
        yield tmp
        _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, data: Any) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def directory_digest(path: Path) -> str:
    """md5 over a directory's file names and contents, stable across machines."""
    digest = hashlib.md5()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(md5sum(file).encode())
    return digest.hexdigest()


def json_digest(data: Any) -> str:
    """SHA-256 of `data` as canonical JSON (sorted keys; what JSON cannot hold, as its str()): equal for equal data."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def check_writable(*directories: Path) -> None:
    """Fail in one line, before any long work, if a stage could not write its outputs into `directories`:
    by writing and removing a file in each (or in its nearest existing parent, leaving nothing behind),
    the one test that also holds for root, read-only mounts and full disks."""
    for directory in directories:
        existing = directory.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(20, "a file is in the way")
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise CnnlabError(
                f"{directory}: outputs cannot be written there ({error.strerror or error}); "
                "make it writable, or run from a checkout you can write to"
            ) from None
