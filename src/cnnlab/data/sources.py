"""Getting official dataset files: mirror first, then the official URLs, md5 always.

The mirror belongs to the machine, not the experiment, so it is read from the
environment (CNNLAB_MIRROR) and never from params.yaml: changing it must not
invalidate any DVC stage.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import DataError
from cnnlab.io import md5sum, replaced_atomically

MIRROR_ENV = "CNNLAB_MIRROR"
NETWORK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str


def mirror_from_env() -> str | None:
    return os.environ.get(MIRROR_ENV) or None


def verify_md5(path: Path, md5: str) -> None:
    """Refuse to go on with a raw file that is missing or not the published one."""
    if not path.is_file():
        raise DataError(f"{path}: missing; run the download stage (dvc repro download@{path.parent.name})")
    actual = md5sum(path)
    if actual != md5:
        raise DataError(f"{path}: md5 {actual}, expected {md5}; delete it and re-run download@{path.parent.name}")


def _candidate_bases(dataset: str, official_bases: tuple[str, ...], mirror: str | None) -> list[str]:
    bases = []
    if mirror:
        bases.append(_join(mirror, dataset))
    bases.extend(official_bases)
    return bases


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def _copy_to(source: str, target: Path) -> None:
    """Copy a local path or download a URL into `target`; raises OSError on failure."""
    if _is_url(source):
        # A new opener per download reads the proxy settings as they are now (urlopen's global one keeps the first).
        opener = urllib.request.build_opener()
        with opener.open(source, timeout=NETWORK_TIMEOUT_SECONDS) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    else:
        shutil.copyfile(_local_path(source), target)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, FileNotFoundError):
        return "no such file"
    return str(error) or type(error).__name__


def fetch_files(
    dataset: str,
    files: tuple[RemoteFile, ...],
    official_bases: tuple[str, ...],
    dest: Path,
    mirror: str | None,
    alternative: str = "",
) -> list[str]:
    """Make every file of `files` present in `dest` with its md5; return where each came from.

    `alternative` is the second fix the error names when a file cannot be had (another source of the
    dataset), after the first: the internet or a mirror.

    Files already in `dest` with the right md5 are kept. A file whose md5 does
    not match is deleted at once, never parsed. A base that fails with a
    network error is not tried again for the remaining files, so an offline
    machine fails in seconds, not once per file.
    """
    dest.mkdir(parents=True, exist_ok=True)
    bases = _candidate_bases(dataset, official_bases, mirror)
    unreachable: dict[str, str] = {}
    origins: list[str] = []
    failures: list[str] = []
    for remote in files:
        target = dest / remote.name
        if target.is_file() and md5sum(target) == remote.md5:
            origins.append(f"{remote.name}: already present")
            continue
        if target.exists():
            target.unlink()  # a stale or truncated copy must never be parsed
        attempts: list[str] = []
        for base in bases:
            source = _join(base, remote.name)
            if base in unreachable:
                attempts.append(f"{source} ({unreachable[base]})")
                continue
            problem = _fetch_one(source, target, remote.md5)
            if problem is None:
                origins.append(f"{remote.name}: {source}")
                break
            attempts.append(f"{source} ({problem.reason})")
            if problem.unreachable:
                unreachable[base] = problem.reason
        else:
            failures.append(f"{remote.name} [tried {'; '.join(attempts)}]")
    if failures:
        online = "connect to the internet, or " if any(_is_url(base) for base in official_bases) else ""
        raise DataError(
            f"dataset {dataset!r}: could not get {len(failures)} file(s): {' | '.join(failures)}. "
            f"Fix: {online}set {MIRROR_ENV} to a directory or URL holding {dataset}/<file name> "
            f"(e.g. {MIRROR_ENV}=/data/mirror with /data/mirror/{dataset}/{files[0].name})"
            + (f"; or {alternative}" if alternative else "")
        )
    return origins


@dataclass(frozen=True)
class _Problem:
    reason: str
    unreachable: bool  # the whole base is out of reach, not just this file


def _fetch_one(source: str, target: Path, md5: str) -> _Problem | None:
    """Copy `source` to `target` if its md5 matches; otherwise leave nothing behind."""
    try:
        with replaced_atomically(target) as tmp:
            try:
                _copy_to(source, tmp)
            except (OSError, urllib.error.URLError) as error:
                network_down = _is_url(source) and not isinstance(error, urllib.error.HTTPError)
                raise _Abandon(_Problem(_reason(error), network_down)) from None
            actual = md5sum(tmp)
            if actual != md5:
                raise _Abandon(_Problem(f"md5 {actual}, expected {md5}: corrupt or truncated, deleted", False))
    except _Abandon as abandon:
        return abandon.problem
    return None


class _Abandon(Exception):
    """Unwinds replaced_atomically so the temporary file is removed."""

    def __init__(self, problem: _Problem) -> None:
        super().__init__(problem.reason)
        self.problem = problem
