"""Stages running side by side on one CPU (`dvc queue start -j 2`, two terminals) share its cores.

torch gives every process one OpenMP thread per core. Two trainings on two cores then run four threads,
which spin-wait on each other: measured here, each ran 4.5x slower than alone, so the pair took longer
than running them one after the other. So each cnnlab process that computes on the CPU registers itself
in a directory of this user's (one file per process, named by its pid and start time, so that a file left
by a killed process is recognised and removed) and sets torch's threads to its share of the cores:
cores // (live cnnlab processes), at least one. A training re-checks its share about once a second (when
it reads its loss anyway), so a run that started alone gives up cores when another starts, and takes
them back when that one ends.

On a CPU, how many threads computed a result changes its last bits (reductions split their work by
thread). Setting OMP_NUM_THREADS pins the count, and then no sharing happens: the distributed launcher
does so for its ranks, and anyone who needs bit-identical models across concurrent runs can too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch

PINNED_ENV = "OMP_NUM_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's limit)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux); None if no such process (or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def _alive(pid: int, started: str) -> bool:
    if Path("/proc").is_dir():
        return _start_time(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CoreShare:
    """This process's entry in the registry, and its share of the cores."""

    def __init__(self, directory: Path, cores: int) -> None:
        self.directory, self.cores = directory, cores
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid = os.getpid()
        self.entry = directory / f"{pid}-{_start_time(pid) or 'unknown'}"
        self.entry.touch()
        # Removed by close, when collected, or at exit; a killed process's entry is removed by its peers.
        self.close = weakref.finalize(self, self.entry.unlink, missing_ok=True)
        self.threads = 0
        self.rebalance()

    def peers(self) -> int:
        """Live registered processes, this one included; entries of dead ones are removed."""
        count = 0
        for entry in self.directory.iterdir():
            pid, _, started = entry.name.partition("-")
            if not pid.isdigit():
                continue
            if entry == self.entry or _alive(int(pid), started):
                count += 1
            else:
                entry.unlink(missing_ok=True)
        return max(count, 1)

    def rebalance(self) -> int:
        """Set torch's threads to this process's share now; returns it."""
        share = max(1, self.cores // self.peers())
        if share != self.threads:
            torch.set_num_threads(share)
            self.threads = share
        return share


@contextlib.contextmanager
def cores_shared(device: torch.device) -> Iterator[None]:
    """This process's computing on `device` shares the CPU's cores while in the block (see share_cores)."""
    share = share_cores(device)
    try:
        yield
    finally:
        if share is not None:
            share.close()


def registry_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"cnnlab-cores-{os.getuid()}"


def share_cores(device: torch.device) -> CoreShare | None:
    """Register this process's computing on `device`: a CoreShare on a CPU, unless OMP_NUM_THREADS pins the
    thread count; None otherwise (a GPU's work is not the CPU's)."""
    if device.type != "cpu" or os.environ.get(PINNED_ENV):
        return None
    return CoreShare(registry_directory(), usable_cores())
