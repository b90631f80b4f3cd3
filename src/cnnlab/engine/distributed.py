"""Data-parallel training with torch.distributed: CNNLAB_NPROC=N runs a train stage as N processes.

The stage runs itself again as N ranks through torch.distributed's launcher (what `torchrun
--standalone` does): same command, NCCL on CUDA (rank r on cuda:r), gloo on CPU. Every rank draws the
same seeded permutation of the training set, so each global batch (the params' batch_size) is the batch one
process would take; rank r trains on the r-th of N near-equal parts of it, with its loss weighted so that
DDP's gradient average is the gradient of the whole batch's mean loss, and BatchNorm's statistics are
shared across the ranks (on GPUs; a BatchNorm model is refused as several CPU processes). The results match
one process's up to the order of floating-point sums, so N is not a DVC param. Rank 0 alone logs to
MLflow, writes DVC's outputs and saves resumable state; the state holds nothing per rank, so a killed run
resumes with any number of processes.

Like CNNLAB_DEVICE, CNNLAB_NPROC describes the machine, not the experiment: it is not a DVC param
(a one-GPU user must not invalidate a four-GPU user's cache), and is recorded in train.json, the
metrics and the MLflow run.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cnnlab.engine.runtime import DEVICE_ENV
from cnnlab.errors import ConfigError

NPROC_ENV = "CNNLAB_NPROC"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class World:
    """The processes training one model together; World() is a single process."""

    rank: int = 0
    size: int = 1
    backend: str = ""  # "gloo" or "nccl" when size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def requested_processes() -> int:
    """CNNLAB_NPROC as a number of processes (1 when unset), checked against this machine."""
    raw = os.environ.get(NPROC_ENV, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{NPROC_ENV}={raw!r} is not a number of processes; use a whole number >= 1, or unset it")
    count = int(raw)
    if count > 1 and _on_cuda():
        if os.environ.get(DEVICE_ENV, "").startswith("cuda:"):
            raise ConfigError(
                f"{DEVICE_ENV}={os.environ[DEVICE_ENV]} names one GPU, but {NPROC_ENV}={count} runs a "
                f"process per GPU (cuda:0..{count - 1}); choose GPUs with CUDA_VISIBLE_DEVICES instead"
            )
        if count > torch.cuda.device_count():
            raise ConfigError(
                f"{NPROC_ENV}={count} but this machine has {torch.cuda.device_count()} GPU(s); "
                f"use at most that many, or CNNLAB_DEVICE=cpu for CPU processes"
            )
    return count


@contextlib.contextmanager
def processes() -> Iterator[World]:
    """The world a train stage runs in: with CNNLAB_NPROC=N > 1 the stage process launches N ranks of itself
    (and exits with them) and this body runs in each rank; else in this process alone. Bad settings fail
    here, before any work."""
    count = requested_processes()
    if count > 1 and not is_rank():
        raise SystemExit(run_as_ranks(count))
    world = join()
    try:
        yield world
    finally:
        leave(world)


def _on_cuda() -> bool:
    return torch.cuda.is_available() and not os.environ.get(DEVICE_ENV, "").startswith("cpu")


def is_rank() -> bool:
    """Whether this process is one of the launcher's ranks."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def run_as_ranks(count: int) -> int:
    """Run this stage's command again as `count` ranks on this machine, with torch.distributed's launcher
    (what `torchrun --standalone --nproc-per-node count` does); returns the exit status for the stage.

    Each rank gets its share of the CPU threads and dies with this process, so killing the stage (DVC's
    Ctrl-C, a kill of its process group) stops them all. A rank that fails has printed its own error
    line: the launcher's report of it (a traceback) is left out.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads // count))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=count,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    # Its "failed (exitcode: 1) local_rank: 0 ..." repeats what the rank has just said.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-u", *sys.argv)
    except ChildFailedError:
        return 1
    return 0


def join() -> World:
    """In a rank: join the process group (NCCL on CUDA, gloo on CPU) and pin this rank's GPU; else World().

    A world of one rank (`torchrun --nproc-per-node 1`, as the GPU check runs a stage) joins too, so that the
    whole data-parallel path (process group, DDP, SyncBatchNorm) runs on a machine with one GPU."""
    if not is_rank():
        return World()
    _die_with_parent()
    rank, size, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    on_cuda = _on_cuda()
    if on_cuda:
        torch.cuda.set_device(local_rank)
        os.environ[DEVICE_ENV] = f"cuda:{local_rank}"
    backend = "nccl" if on_cuda else "gloo"
    dist.init_process_group(backend, device_id=torch.device(f"cuda:{local_rank}") if on_cuda else None)
    return World(rank, size, backend)


def leave(world: World) -> None:
    if world.backend and dist.is_initialized():
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """The launcher starts ranks in sessions of their own: without this, a SIGKILLed stage leaves them training."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent was gone before the request took effect
        os._exit(1)


def sum_across(world: World, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (the tensors themselves for one process)."""
    if world.size == 1:
        return list(tensors)
    packed = torch.stack([t.to(torch.float64) for t in tensors])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return [value.to(t.dtype) for value, t in zip(packed, tensors, strict=True)]


def max_across(world: World, tensor: torch.Tensor) -> torch.Tensor:
    if world.size == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
