"""Concurrent cnnlab processes share the CPU's cores: each takes cores // live peers, a killed peer's entry is
cleared, and a pinned OMP_NUM_THREADS turns sharing off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from cnnlab.engine import cores
from cnnlab.engine.cores import CoreShare, share_cores

REGISTER_AND_WAIT = (
    "import sys, time; from pathlib import Path; from cnnlab.engine.cores import CoreShare; "
    "share = CoreShare(Path(sys.argv[1]), 4); print(share.threads, flush=True); sys.stdin.read()"
)


def start_peer(directory: Path) -> subprocess.Popen:
    """A real other process registered in `directory`: it prints its share, then waits for its stdin to close."""
    peer = subprocess.Popen([sys.executable, "-c", REGISTER_AND_WAIT, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    peer.threads = int(peer.stdout.readline())
    return peer


def test_each_live_process_takes_its_share_and_gets_cores_back_when_a_peer_ends(tmp_path):
    threads_before = torch.get_num_threads()
    try:
        first = start_peer(tmp_path)
        assert first.threads == 4, "alone: every core"
        mine = CoreShare(tmp_path, 4)
        assert mine.threads == 2 and torch.get_num_threads() == 2
        second = start_peer(tmp_path)
        assert second.threads == 1, "three processes on four cores: one each, never more threads than cores"
        assert mine.rebalance() == 1
        for peer in (first, second):
            peer.stdin.close()
            peer.wait()
        assert mine.rebalance() == 4, "the peers ended: their cores come back"
        mine.close()
        assert list(tmp_path.iterdir()) == []
    finally:
        torch.set_num_threads(threads_before)


def test_an_entry_left_by_a_killed_process_is_cleared(tmp_path):
    threads_before = torch.get_num_threads()
    try:
        peer = start_peer(tmp_path)
        peer.kill()  # no chance to remove its own entry
        peer.wait()
        (tmp_path / "999999999-1").touch()  # a pid that cannot exist
        mine = CoreShare(tmp_path, 2)
        assert mine.threads == 2 and [p.name for p in tmp_path.iterdir()] == [mine.entry.name]
    finally:
        torch.set_num_threads(threads_before)


def test_a_pinned_thread_count_or_a_gpu_shares_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(cores, "registry_directory", lambda: tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert share_cores(torch.device("cpu")) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert share_cores(torch.device("cuda")) is None
    threads_before = torch.get_num_threads()
    try:
        share = share_cores(torch.device("cpu"))
        assert share is not None and share.cores == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(threads_before)
