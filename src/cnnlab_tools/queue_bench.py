"""How queued runs share one CPU: `dvc queue start -j 2` against one run alone, on a copy of the project.

    python -m cnnlab_tools.queue_bench --mirror ../shared/data     # real MNIST; --dir to keep the copy

Queues seeds of `train@mnist_cnn` (tracking off) and times each batch from `dvc queue start` to its last
result: one run alone (twice), two runs with `-j 2` sharing the cores (twice), and two with
OMP_NUM_THREADS pinned to all cores in each, as every stage ran before cores were shared. Prints one line
per batch and the pair-to-alone ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cnnlab.engine.cores import usable_cores
from cnnlab_tools.sandbox import copy_project, git

EXPERIMENT = "mnist_cnn"
SEED_KEY = f"experiments.{EXPERIMENT}.train.seed"


def _mnist_cnn_only(params: dict[str, Any]) -> None:
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    params["experiments"] = {EXPERIMENT: params["experiments"][EXPERIMENT]}
    params["transfer"], params["replicates"] = {}, {}
    params["report"]["comparisons"] = []


def _dvc(args: list[str], root: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: dvc {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def _finished(root: Path) -> int:
    refs = git(["for-each-ref", "--format=%(refname)", "refs/exps"], root).split()
    return sum(1 for ref in refs if not any(word in ref for word in ("stash", "celery", "executor")))


def time_batch(root: Path, env: dict[str, str], seeds: list[int], jobs: int) -> float:
    """Seconds from `dvc queue start -j jobs` until every one of `seeds`' queued runs has finished."""
    before = _finished(root)
    for seed in seeds:
        _dvc(["exp", "run", "--queue", "-S", f"{SEED_KEY}={seed}", f"train@{EXPERIMENT}"], root, env)
    start = time.monotonic()
    _dvc(["queue", "start", "-j", str(jobs)], root, env)
    while _finished(root) < before + len(seeds):
        time.sleep(0.2)
    seconds = time.monotonic() - start
    _dvc(["queue", "stop"], root, env)
    time.sleep(3)  # the workers' exit, before the next batch starts its own
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, required=True, help="a folder with MNIST's four .gz files")
    parser.add_argument("--dir", type=Path, help="where the project copy goes (default: a temporary folder)")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="cnnlab-queue-bench-"))
    if root.exists():
        shutil.rmtree(root)
    copy_project(Path(__file__).resolve().parents[2], root, _mnist_cnn_only)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(CNNLAB_TRACKING="off", CNNLAB_MIRROR=str(args.mirror.resolve()), CNNLAB_DEVICE="cpu")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    _dvc(["repro", "-q", "prepare@mnist"], root, env)
    git(["add", "-A"], root)
    git(["commit", "-qm", "prepared"], root)
    pinned = {**env, "OMP_NUM_THREADS": str(usable_cores())}
    batches = [
        ("alone", env, [101], 1),
        ("alone", env, [102], 1),
        ("pair, cores shared", env, [103, 104], 2),
        ("pair, cores shared", env, [105, 106], 2),
        (f"pair, OMP_NUM_THREADS={usable_cores()} in each (no sharing)", pinned, [107, 108], 2),
    ]
    seconds = []
    for label, batch_env, seeds, jobs in batches:
        seconds.append(time_batch(root, batch_env, seeds, jobs))
        print(f"{label}: {len(seeds)} run(s), -j {jobs}: {seconds[-1]:.1f} s", flush=True)
    alone = min(seconds[:2])
    print(f"pair / alone: shared {min(seconds[2:4]) / alone:.2f}x, unshared {seconds[4] / alone:.2f}x")
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
