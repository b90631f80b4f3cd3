"""The GPU check: one command that one short lease on a GPU machine runs, writing everything as it goes.

    PYTHONPATH=src python3 -m cnnlab_tools.gpu_check --out "$OUT" --images carried/cifar10-train-jpg.tar.gz
    make gpu-check OUT=/tmp/gpu IMAGES=carried/cifar10-train-jpg.tar.gz     # the same
    python -m cnnlab_tools.gpu_check --out /tmp/gpu-dry --dry-run           # on CPU: what it can, tiny sizes

It needs torch, torchvision, numpy, pillow, pyyaml, tqdm and pytest, not DVC, MLflow or pydantic, and no
network. The parts run in this order, each within what is left of `--budget-s` (default 540 s), and
OUT/summary.json and OUT/gpu.md are rewritten after each one, so an error or a timeout loses nothing
measured before it; the whole output is also in OUT/log.txt.

  a. environment: nvidia-smi, torch, CUDA and cuDNN versions; measured matmul peaks (bf16, TF32, fp32 at
     8192^3, CUDA events) and copy bandwidth (host to device, device to host, device to device)
  b. tests/gpu/test_gpu.py (pytest)
  c. the course workloads' bench: the engine against the course's DataLoader loop, img/s and utilisation
  d. real CIFAR-10 (the carried JPEG archive, 10% of each class held out): prepare, then train and evaluate
     cifar_lenet, cifar_vgg, cifar_speedrun and as many zoo models as the budget leaves room for, each by
     the project's own stage scripts with tracking off; held-out accuracy and training seconds
  e. a zoo model's train stage as one rank of torch.distributed's launcher: NCCL, DDP and SyncBatchNorm

With --dry-run (or without CUDA) every part runs that can on this machine, on generated CIFAR-10 and one
epoch, and the summary names each part skipped and why: a typo costs a CPU minute, not the GPU's window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from cnnlab.config.params import load_params
from cnnlab.engine.runtime import describe_device, select_device
from cnnlab_tools.bench import WORKLOADS, ZOO_STUDY, cuda_seconds, markdown, measured_peaks, run_bench

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUDGET_S = 540.0
COURSE_EXPERIMENTS = ("cifar_lenet", "cifar_vgg", "cifar_speedrun")
# A dry run's share of the work: every kind of part, in a minute or two of a CPU.
DRY_RUN_WORKLOADS = ("mnist_cnn", "cifar_lenet")
DRY_RUN_EXPERIMENTS = ("cifar_lenet", "cifar_speedrun")
TRAINED = re.compile(r"trained on (?P<device>.+?) in (?P<seconds>[0-9.]+) s \((?P<rate>[0-9,]+) images/s\)")


class Check:
    """The summary of a check, written to OUT after every part."""

    def __init__(self, out: Path, budget_s: float, dry_run: bool) -> None:
        self.out, self.deadline, self.dry_run = out, time.monotonic() + budget_s, dry_run
        self.summary: dict[str, Any] = {"dry_run": dry_run, "parts": {}}
        self.log = open(out / "log.txt", "a")  # noqa: SIM115  (open for the whole check)

    def say(self, line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        print(stamped, flush=True)
        self.log.write(stamped + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def part(self, name: str, work: Callable[[], dict[str, Any]]) -> None:
        """Run one part; whatever it returns or raises is recorded, and the outputs rewritten."""
        if self.left() < 5:
            self.summary["parts"][name] = {"status": "skipped", "why": "the budget ran out"}
        else:
            self.say(f"part {name}: starting, {self.left():.0f} s of the budget left")
            started = time.monotonic()
            try:
                result = work()
                result.setdefault("status", "ok")
            except Exception as error:  # one part's failure must not cost the others
                result = {"status": "failed", "why": f"{type(error).__name__}: {error}"[:2000]}
            result["seconds"] = round(time.monotonic() - started, 1)
            self.summary["parts"][name] = result
            self.say(f"part {name}: {result['status']} in {result['seconds']} s")
        self.write()

    def write(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        (self.out / "gpu.md").write_text(report_markdown(self.summary))

    def run(self, args: list[str], cwd: Path, env: dict[str, str], name: str, timeout: float) -> str:
        """A subprocess, its output appended to OUT/<name>.log and returned; raises on failure or timeout."""
        self.say(f"$ {' '.join(args)}")
        with open(self.out / f"{name}.log", "a") as log:
            done = subprocess.run(
                args,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=max(timeout, 1),
            )
            log.write(done.stdout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stdout[-800:]}")
        return done.stdout


# --------------------------------------------------------------------------
# a. The machine
# --------------------------------------------------------------------------


def environment(check: Check, device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "device": describe_device(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }
    smi = shutil.which("nvidia-smi")
    facts["nvidia_smi"] = (
        subprocess.run([smi], capture_output=True, text=True).stdout
        if smi
        else "skipped: no nvidia-smi on this machine"
    )
    facts["peak_flops"] = measured_peaks(device)
    facts["copy_gb_per_s"] = copy_bandwidth(device) if device.type == "cuda" else "skipped: no CUDA"
    return facts


def copy_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> dict[str, float]:
    """GB/s of host-to-device and device-to-host copies (pinned host memory) and a device-to-device copy."""
    host = torch.empty(megabytes << 20, dtype=torch.uint8).pin_memory()
    on_device = torch.empty_like(host, device=device)
    other = torch.empty_like(on_device)
    rates = {}
    for name, copy in (
        ("host_to_device", lambda: on_device.copy_(host, non_blocking=True)),
        ("device_to_host", lambda: host.copy_(on_device, non_blocking=True)),
        ("device_to_device", lambda: other.copy_(on_device)),
    ):
        rates[name] = (megabytes << 20) / cuda_seconds(copy, repeats, warmup=1) / 1e9
    return rates


# --------------------------------------------------------------------------
# b. The CUDA tests, c. the bench
# --------------------------------------------------------------------------


def gpu_tests(check: Check, env: dict[str, str]) -> dict[str, Any]:
    junit = check.out / "test_gpu.xml"
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "tests/gpu/test_gpu.py",
        f"--junitxml={junit}",
    ]
    try:
        output = check.run(args, REPO, env, "test_gpu", check.left())
        failed = False
    except RuntimeError as error:
        output, failed = str(error), True
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", output)}
    result: dict[str, Any] = {"counts": counts, "status": "failed" if failed else "ok"}
    if not torch.cuda.is_available():
        result["status"], result["why"] = "skipped", "no CUDA: every GPU test skips here (see counts)"
    return result


def bench(check: Check, device: torch.device, dry_run: bool) -> dict[str, Any]:
    def write(partial: dict[str, Any]) -> None:
        (check.out / "bench.md").write_text(markdown(partial))

    params = load_params(REPO / "params.yaml")
    report = run_bench(
        params,
        list(DRY_RUN_WORKLOADS if dry_run else WORKLOADS),
        0.05 if dry_run else 1.0,
        0 if dry_run else None,
        None,
        False,
        repeats=1 if dry_run else 3,
        epochs=0,
        zoo=False,
        write=write,
    )
    (check.out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return {"workloads": report["workloads"], "peak_flops": report["peak_flops"]}


# --------------------------------------------------------------------------
# d. Real CIFAR-10 through the stages, e. the NCCL path
# --------------------------------------------------------------------------


def project(images: Path | None, dry_run: bool) -> Path:
    """A scratch project: the stage scripts and a params.yaml of the CIFAR-10 experiments to run."""
    root = Path(tempfile.mkdtemp(prefix="cnnlab-gpu-check-"))
    shutil.copytree(REPO / "stages", root / "stages")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cifar10 = params["datasets"]["cifar10"]
    if dry_run or images is None:
        cifar10["acquire"].update(source="synthetic", synthetic={"train_size": 512, "test_size": 256, "seed": 0})
    else:
        cifar10["acquire"].update(source="images")
        cifar10["acquire"]["images"]["directory"] = str(images.resolve().parent)
    params["datasets"] = {"cifar10": cifar10}
    wanted = [
        *COURSE_EXPERIMENTS,
        *(n for n, e in params["experiments"].items() if e["study"] == ZOO_STUDY and n not in COURSE_EXPERIMENTS),
    ]
    params["experiments"] = {name: params["experiments"][name] for name in wanted}
    if dry_run:
        for experiment in params["experiments"].values():
            experiment["train"]["epochs"] = 1
    # One seed of each: the check times and scores each model once.
    params["transfer"], params["replicates"], params["report"]["comparisons"] = {}, {}, []
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def stage_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CNNLAB_TRACKING": "off", **(extra or {})}
    env.pop("CNNLAB_NPROC", None)
    return env


def real_cifar10(check: Check, root: Path, dry_run: bool) -> dict[str, Any]:
    env = stage_env()
    prepared: dict[str, Any] = {}
    for stage in ("download", "prepare"):
        started = time.monotonic()
        check.run([sys.executable, f"stages/{stage}.py", "cifar10"], root, env, "cifar10", check.left())
        prepared[f"{stage}_seconds"] = round(time.monotonic() - started, 1)
    meta = json.loads((root / "data" / "prepared" / "cifar10" / "meta.json").read_text())
    experiments = yaml.safe_load((root / "params.yaml").read_text())["experiments"]
    names = list(DRY_RUN_EXPERIMENTS if dry_run else experiments)
    rows: dict[str, Any] = {}
    result = {"data": {"origin": meta["origin"], "sizes": meta["sizes"], **prepared}, "experiments": rows}
    for name in names:
        if check.left() < 20:
            rows[name] = {"status": "skipped", "why": "the budget ran out"}
            continue
        try:
            output = check.run([sys.executable, "stages/train.py", name], root, env, name, check.left() - 10)
            trained = TRAINED.search(output)
            check.run([sys.executable, "stages/evaluate.py", name], root, env, name, check.left())
            metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
            rows[name] = {
                "status": "ok",
                "test_accuracy": metrics["test_accuracy"],
                "epochs": experiments[name]["train"]["epochs"],
                "precision": metrics["precision"],
                "train_seconds": float(trained["seconds"]) if trained else None,
                "train_images_per_second": float(trained["rate"].replace(",", "")) if trained else None,
            }
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            rows[name] = {"status": "failed", "why": str(error)[:800]}
        check.say(f"{name}: {rows[name]}")
        check.summary["parts"]["d_cifar10"] = result | {"status": "running"}
        check.write()
    return result


def nccl_rank(check: Check, root: Path, dry_run: bool) -> dict[str, Any]:
    """One zoo model's train stage as the single rank of torch.distributed's launcher (NCCL on CUDA)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    name = "zoo_resnet18" if "zoo_resnet18" in params["experiments"] else next(iter(params["experiments"]))
    params["experiments"][name]["train"]["epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(root / "models" / name, ignore_errors=True)
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "1",
        "stages/train.py",
        name,
    ]
    output = check.run(args, root, stage_env(), "nccl", check.left())
    backend = re.search(r"training as 1 process \((\w+)\)", output)
    trained = TRAINED.search(output)
    return {
        "experiment": name,
        "backend": backend[1] if backend else None,
        "train_seconds": float(trained["seconds"]) if trained else None,
        "status": "ok" if backend else "failed",
    }


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def report_markdown(summary: dict[str, Any]) -> str:
    parts = summary["parts"]
    lines = [
        "# GPU check",
        "",
        f"`python -m cnnlab_tools.gpu_check`{' --dry-run' if summary['dry_run'] else ''}; "
        "every figure below was measured by it on the machine named.",
        "",
    ]
    for name, part in parts.items():
        lines.append(
            f"- part {name}: {part.get('status')}"
            + (f" ({part['why']})" if part.get("why") else "")
            + (f", {part['seconds']} s" if "seconds" in part else "")
        )
    env = parts.get("a_environment", {})
    if "peak_flops" in env:
        lines += [
            "",
            f"Machine: {env['device']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}.",
            "",
            "| measured | value |",
            "|---|---:|",
        ]
        lines += [f"| matmul peak {kind} | {flops / 1e12:,.1f} TFLOP/s |" for kind, flops in env["peak_flops"].items()]
        if isinstance(env.get("copy_gb_per_s"), dict):
            lines += [
                f"| copy {kind.replace('_', ' ')} | {rate:,.0f} GB/s |" for kind, rate in env["copy_gb_per_s"].items()
            ]
    tests = parts.get("b_gpu_tests", {})
    if "counts" in tests:
        lines += ["", "GPU tests: " + ", ".join(f"{n} {k}" for k, n in tests["counts"].items())]
    bench_part = parts.get("c_bench", {})
    if bench_part.get("workloads"):
        lines += [
            "",
            "| course workload | reference img/s | engine img/s | speedup | engine utilisation |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {row['workload']} | {row['reference_images_per_second']:,.0f} | "
            f"{row['engine_images_per_second']:,.0f} | {row['speedup']:.1f}x | {row['engine_utilisation']:.1%} |"
            for row in bench_part["workloads"]
        ]
    cifar = parts.get("d_cifar10", {})
    if cifar.get("experiments"):
        data = cifar.get("data", {})
        lines += [
            "",
            f"CIFAR-10 ({data.get('origin')}, {data.get('sizes')}): held-out accuracy and training time.",
            "",
            "| experiment | epochs | precision | held-out accuracy | train s | train img/s |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for name, row in cifar["experiments"].items():
            if row.get("status") != "ok":
                lines.append(f"| {name} | | | {row.get('status')} | | |")
                continue
            seconds = f"{row['train_seconds']:.1f}" if row.get("train_seconds") is not None else ""
            rate = f"{row['train_images_per_second']:,.0f}" if row.get("train_images_per_second") else ""
            lines.append(
                f"| {name} | {row['epochs']} | {row['precision']} | {row['test_accuracy']:.2%} | {seconds} | {rate} |"
            )
    nccl = parts.get("e_nccl", {})
    if nccl.get("backend"):
        lines += [
            "",
            f"{nccl['experiment']} as one rank of torch.distributed's launcher: backend {nccl['backend']}, "
            f"trained in {nccl['train_seconds']} s.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="where everything is written, as it goes")
    parser.add_argument("--images", type=Path, help="cifar10-train-jpg.tar.gz (carried to the GPU machine)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, generated CIFAR-10 (for CPUs, CI)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = select_device()
    dry_run = args.dry_run or device.type != "cuda"
    check = Check(args.out, args.budget_s, dry_run)
    check.say(f"GPU check on {describe_device(device)}{' (dry run)' if dry_run else ''}, budget {args.budget_s:.0f} s")
    if args.images is not None and not args.images.is_file():
        check.say(f"error: --images {args.images}: no such file; carry the archive to the machine (README: GPU check)")
        return 2
    check.part("a_environment", lambda: environment(check, device))
    check.part("b_gpu_tests", lambda: gpu_tests(check, stage_env()))
    check.part("c_bench", lambda: bench(check, device, dry_run))
    root = project(args.images, dry_run)
    check.part("d_cifar10", lambda: real_cifar10(check, root, dry_run))
    check.part("e_nccl", lambda: nccl_rank(check, root, dry_run))
    shutil.rmtree(root, ignore_errors=True)
    failed = [name for name, part in check.summary["parts"].items() if part.get("status") == "failed"]
    check.say(f"done: {len(failed)} part(s) failed{': ' + ', '.join(failed) if failed else ''}; see {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
