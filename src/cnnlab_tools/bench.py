"""The engine against the course's way of training, side by side in one run on one machine.

    python -m cnnlab_tools.bench                 # every course workload; writes reports/bench.{md,json}
    python -m cnnlab_tools.bench --workloads mnist_cnn --steps-scale 0.2

For each course workload (its experiment in params.yaml: model, batch size,
optimizer, normalisation, augmentation) and a fixed number of steps on
generated data of the real shapes, it times

  reference  the course notebooks' loop: a torchvision-style dataset that
             returns PIL images, the course's transforms, a DataLoader with
             the course's batch size and workers (none for MNIST, 2 for
             CIFAR-10), each batch moved to the training device, the loss
             read back every step for the running total, fp32;
  engine     `cnnlab.engine.loop.train` with the same model, batch size,
             optimizer and precision, under params.yaml's runtime
             (and, for comparison, the engine in fp32),

and reports images/s, the ratio, and model FLOP/s utilisation against this
machine's measured peak matmul rate.

A dozen steps from initialisation is not what a user's run gets, so it then
trains the engine for whole epochs (--epochs, default 3) on the workload's
prepared data when data/prepared/<dataset> exists (real images after `dvc
repro prepare@...`), else on generated images the model can learn, and
reports the first and the last epoch's images/s: the last one runs on
trained weights. With --zoo (default on CUDA) it adds the engine's training
images/s and utilisation for every experiment of the zoo's study (params.yaml).

It also times what MLflow adds to a train stage (the stage run with and
without tracking) and a no-op `dvc repro` of the whole pipeline (its smoke
profile, built in a temporary copy), when MLflow and DVC are installed. Every step prints a line as it
ends, so a long run shows where it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config.datasets import SyntheticSizes
from cnnlab.config.experiments import NormalizeConstants, TrainConfig
from cnnlab.config.params import Params, load_params
from cnnlab.data import synthetic
from cnnlab.data.kinds import cifar10, mnist
from cnnlab.data.loader import DeviceSplit, Normalizer, constant_normalizer
from cnnlab.data.prepared import load_prepared
from cnnlab.engine.loop import train
from cnnlab.engine.optim import make_optimizer
from cnnlab.engine.runtime import Runtime, cpu_model, describe_device, resolve_runtime, select_device
from cnnlab.errors import ConfigError, exits_cleanly
from cnnlab.models.complexity import count_macs
from cnnlab.models.registry import build_model
from cnnlab_tools.sandbox import copy_project, smoke_experiment, smoke_profile, write_image_folder

WORKLOADS = ("mnist_fc", "mnist_cnn", "cifar_lenet", "cifar_vgg")
# The zoo (every experiment of this study in params.yaml, the speedrun among them): engine-only rows
# (--zoo), timed over ZOO_STEPS steps.
ZOO_STUDY = "cifar10_zoo"
ZOO_STEPS = 50
# Timed steps per workload: a few seconds of the reference loop each on a 2-core CPU.
STEPS = {"mnist_fc": 400, "mnist_cnn": 300, "cifar_lenet": 300, "cifar_vgg": 12}
WARMUP_STEPS = 3
# The course notebooks' DataLoader workers: none for MNIST (the default), 2 for CIFAR-10.
COURSE_WORKERS = {"mnist": 0, "cifar10": 2}
# The dataset kinds a workload may use: their image shape and the course's normalisation constants.
KINDS = {"mnist": mnist, "cifar10": cifar10}
NUM_CLASSES = 10


@dataclass(frozen=True)
class Workload:
    name: str
    dataset: str  # params.yaml's dataset name: data/prepared/<dataset> is used for whole epochs if it exists
    model: str
    model_args: dict[str, Any]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: TrainConfig
    steps: int
    workers: int  # of the reference loop's DataLoader

    @property
    def images(self) -> int:
        return self.steps * self.train.batch_size

    def build_model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(self.model, self.input_shape, NUM_CLASSES, **self.model_args)


def workload_from_params(params: Params, name: str, steps: int, workers: int | None = None) -> Workload:
    """`name`'s experiment as a workload; `workers` overrides the course's DataLoader workers."""
    experiment = params.experiment(name)
    kind = params.dataset(experiment.dataset).kind
    if kind not in KINDS:
        raise ConfigError(f"bench: experiment {name!r} uses dataset kind {kind!r}; the bench knows mnist and cifar10")
    normalize = experiment.inputs.normalize
    if isinstance(normalize, NormalizeConstants):
        mean, std = normalize.mean, normalize.std
    elif normalize == "course":
        mean, std = KINDS[kind].COURSE_MEAN, KINDS[kind].COURSE_STD
    else:
        raise ConfigError(f"bench: experiment {name!r} normalizes with {normalize!r}; the course used constants")
    return Workload(
        name,
        experiment.dataset,
        experiment.model,
        dict(experiment.model_args),
        KINDS[kind].IMAGE_SHAPE,
        tuple(mean),
        tuple(std),
        replace(experiment.train, epochs=1),
        steps,
        COURSE_WORKERS[kind] if workers is None else workers,
    )


# --------------------------------------------------------------------------
# Data: the same generated images, as the course's PIL dataset and as engine tensors
# --------------------------------------------------------------------------


def generated_images(workload: Workload, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images as torchvision keeps them (N,H,W for grey, N,H,W,C for colour), and labels."""
    channels, height, width = workload.input_shape
    rng = np.random.default_rng(seed)
    shape = (count, height, width) if channels == 1 else (count, height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, NUM_CLASSES, count)


def as_tensors(images: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(images)
    return tensor.unsqueeze(1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2).contiguous()


class CourseStyleDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST and CIFAR10 datasets do per item: a PIL image, then the transform."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: Any) -> None:
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.targets[index])


def course_transform(workload: Workload) -> Any:
    from torchvision import transforms

    steps: list[Any] = []
    if workload.train.augment.crop_padding:
        steps.append(transforms.RandomCrop(workload.input_shape[1], padding=workload.train.augment.crop_padding))
    if workload.train.augment.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(workload.mean, workload.std)]
    return transforms.Compose(steps)


def engine_normalizer(workload: Workload, device: torch.device) -> Normalizer:
    """ToTensor's 1/255 and Normalize's (x - mean) / std, as the engine's one multiply-add."""
    return constant_normalizer(workload.mean, workload.std, True, device)


def course_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer as the notebooks build it: torch's defaults, no fused kernels."""
    return make_optimizer(model, train.optimizer, fused=False)


def course_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, train: TrainConfig) -> torch.Tensor:
    return F.cross_entropy(model(inputs), targets, label_smoothing=train.label_smoothing)


# --------------------------------------------------------------------------
# The two loops
# --------------------------------------------------------------------------


def reference_images_per_second(
    workload: Workload, images: np.ndarray, targets: np.ndarray, device: torch.device
) -> float:
    """The course's loop over a DataLoader, each batch moved to `device` and its loss read back for the
    running total as the notebooks do; the first WARMUP_STEPS batches (worker start-up) are not timed."""
    model = workload.build_model().to(device)
    optimizer = course_optimizer(model, workload.train)
    loader = torch.utils.data.DataLoader(
        CourseStyleDataset(images, targets, course_transform(workload)),
        batch_size=workload.train.batch_size,
        shuffle=True,
        num_workers=workload.workers,
    )
    model.train()
    started, timed, running_loss = 0.0, 0, 0.0
    for step, (inputs, labels) in enumerate(loader):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = course_loss(model, inputs, labels, workload.train)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if step >= WARMUP_STEPS:
            timed += len(labels)
    return timed / (time.perf_counter() - started)


def engine_images_per_second(
    workload: Workload, inputs: torch.Tensor, targets: torch.Tensor, runtime: Runtime, min_seconds: float = 0.0
) -> float:
    """The engine's `train` over the images, after a warm-up epoch of WARMUP_STEPS batches: one epoch, or as
    many as make the timed window last `min_seconds` (a fast GPU trains the bench's images in milliseconds,
    too short a window to mean anything)."""
    device = runtime.device
    model = workload.build_model().to(device)
    normalize = engine_normalizer(workload, device)
    split = DeviceSplit(inputs.to(device), targets.to(device))
    warmup = DeviceSplit(
        split.inputs[: WARMUP_STEPS * workload.train.batch_size],
        split.targets[: WARMUP_STEPS * workload.train.batch_size],
    )
    train(model, warmup, normalize, workload.train, runtime, progress=False)
    timed = train(model, split, normalize, workload.train, runtime, progress=False)
    if timed.train_seconds >= min_seconds:
        return timed.images_per_second
    epochs = math.ceil(min_seconds / max(timed.train_seconds, 1e-6))
    return train(
        model, split, normalize, replace(workload.train, epochs=epochs), runtime, progress=False
    ).images_per_second


CUDA_PEAK_SIZE = 8192  # a product long enough (milliseconds) that launch and timing costs vanish in it
CPU_PEAK_SIZE = 1024


def peak_matmul_flops(device: torch.device, arithmetic: str, repeats: int = 10) -> float:
    """The best FLOP/s of a square matmul in `arithmetic`: "fp32" (true float32), "tf32" (float32 inputs on
    TensorFloat-32 cores: what cuDNN's convolutions use by default) or "bf16".

    On CUDA: 8192^3, timed by CUDA events around each product. On CPU: 1024^3 by the host clock, run two
    ways, torch.mm and a 1x1 convolution, which torch hands to different libraries (BLAS, oneDNN) whose
    speeds differ by vendor; the faster one is what the hardware can practically do.
    """
    size = CUDA_PEAK_SIZE if device.type == "cuda" else CPU_PEAK_SIZE
    dtype = torch.bfloat16 if arithmetic == "bf16" else torch.float32
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    if device.type == "cuda":
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = arithmetic == "tf32"
        try:
            return 2 * size**3 / cuda_seconds(lambda: torch.mm(a, b), repeats)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    # The same product as a convolution: `size` pixels of `size` channels through a size x size 1x1 kernel.
    pixels = a.t().reshape(1, size, size, 1).contiguous(memory_format=torch.channels_last)
    kernel = b.t().reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    best = 0.0
    for product in (lambda: torch.mm(a, b), lambda: F.conv2d(pixels, kernel)):
        product()
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def cuda_seconds(work: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """The fastest of `repeats` runs of `work`, each between two CUDA events, in seconds."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return min(times)


def measured_peaks(device: torch.device) -> dict[str, float]:
    """The peaks utilisation is measured against: fp32 and bf16, and on CUDA tf32."""
    kinds = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    return {kind: peak_matmul_flops(device, kind) for kind in kinds}


def peak_for(precision: str, device: torch.device, peaks: dict[str, float]) -> float:
    """The peak a run in `precision` is held to: on CUDA fp32 training's convolutions run on TF32 cores."""
    return peaks["tf32"] if precision == "fp32" and device.type == "cuda" else peaks[precision]


def training_flops_per_image(workload: Workload) -> float:
    """Forward and backward: about 3 forward passes, 2 FLOPs per multiply-accumulate."""
    return 6.0 * count_macs(workload.build_model(), workload.input_shape)


@dataclass(frozen=True)
class WorkloadResult:
    workload: str
    batch_size: int
    steps: int
    reference_workers: int
    engine_precision: str
    engine_channels_last: bool
    reference_images_per_second: float
    engine_images_per_second: float
    engine_fp32_images_per_second: float
    speedup: float
    reference_utilisation: float  # of the fp32 matmul peak
    engine_utilisation: float  # of the peak in the engine's precision


def bench_workload(
    workload: Workload, runtime: Runtime, peaks: dict[str, float], repeats: int, min_seconds: float = 0.0
) -> WorkloadResult:
    """Each loop `repeats` times, interleaved so machine noise hits all alike; the medians count."""
    images, targets = generated_images(workload, workload.images + WARMUP_STEPS * workload.train.batch_size)
    tensors, labels = as_tensors(images), torch.from_numpy(targets)
    fp32_runtime = replace(runtime, precision="fp32", channels_last=False)
    timings: dict[str, list[float]] = {"reference": [], "engine": [], "fp32": []}
    for repeat in range(1, repeats + 1):
        timings["reference"].append(reference_images_per_second(workload, images, targets, runtime.device))
        timings["engine"].append(engine_images_per_second(workload, tensors, labels, runtime, min_seconds))
        timings["fp32"].append(engine_images_per_second(workload, tensors, labels, fp32_runtime, min_seconds))
        say(f"{workload.name} {repeat}/{repeats}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in timings.items()))
    reference, fast, fp32 = (statistics.median(timings[k]) for k in ("reference", "engine", "fp32"))
    flops = training_flops_per_image(workload)
    return WorkloadResult(
        workload.name,
        workload.train.batch_size,
        workload.steps,
        workload.workers,
        runtime.precision,
        runtime.channels_last,
        reference,
        fast,
        fp32,
        fast / reference,
        reference * flops / peak_for("fp32", runtime.device, peaks),
        fast * flops / peak_for(runtime.precision, runtime.device, peaks),
    )


def say(line: str) -> None:
    """Progress of a long run, on stderr as it happens (the table goes to stdout at the end)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Whole epochs on the data a user's run gets, and the zoo on the engine alone
# --------------------------------------------------------------------------


def epoch_data(workload: Workload, project: Path | None, images: int | None) -> tuple[DeviceSplit, str]:
    """The workload's prepared training split if the project has one, else generated images it can learn;
    `images` caps the count (None: the whole split, or 50,000 generated)."""
    prepared_dir = project / "data" / "prepared" / workload.dataset if project is not None else None
    if project is not None and prepared_dir is not None and (prepared_dir / "meta.json").is_file():
        prepared = load_prepared(prepared_dir)
        count = len(prepared.train_targets) if images is None else min(images, len(prepared.train_targets))
        return (
            DeviceSplit(prepared.train_inputs[:count], prepared.train_targets[:count]),
            f"{prepared_dir.relative_to(project)} ({prepared.meta.origin})",
        )
    channels, height, _ = workload.input_shape
    sizes = SyntheticSizes(train_size=images or 50_000, test_size=1, seed=0)
    inputs, targets, _, _ = synthetic.make_dataset(sizes, NUM_CLASSES, channels, height)
    return DeviceSplit(inputs, targets), "generated strokes"


def trained_epochs(workload: Workload, data: DeviceSplit, runtime: Runtime, epochs: int) -> dict[str, Any]:
    """The workload's own schedule for `epochs` whole epochs; the last epochs run on trained weights."""
    device = runtime.device
    split = DeviceSplit(data.inputs.to(device), data.targets.to(device))
    model = workload.build_model().to(device)
    result = train(
        model,
        split,
        engine_normalizer(workload, device),
        replace(workload.train, epochs=epochs),
        runtime,
        progress=sys.stderr.isatty(),
        on_epoch=lambda r: say(
            f"{workload.name} epoch {r.epoch}/{epochs}: {r.images_per_second:,.0f} img/s, loss {r.train_loss:.3f}"
        ),
    )
    rates = [r.images_per_second for r in result.history]
    return {
        "workload": workload.name,
        "images": len(split),
        "epochs": epochs,
        "images_per_second": rates,
        "final_train_accuracy": result.history[-1].train_accuracy,
    }


def zoo_row(workload: Workload, runtime: Runtime, peaks: dict[str, float], min_seconds: float = 0.0) -> dict[str, Any]:
    """Engine training images/s and utilisation of one zoo model over its own batch size."""
    images, targets = generated_images(workload, workload.images + WARMUP_STEPS * workload.train.batch_size)
    rate = engine_images_per_second(workload, as_tensors(images), torch.from_numpy(targets), runtime, min_seconds)
    macs = count_macs(workload.build_model(), workload.input_shape)
    return {
        "workload": workload.name,
        "model": workload.model,
        "batch_size": workload.train.batch_size,
        "precision": runtime.precision,
        "macs_per_image": macs,
        "images_per_second": rate,
        "utilisation": rate * 6.0 * macs / peak_for(runtime.precision, runtime.device, peaks),
    }


# --------------------------------------------------------------------------
# Around the loop: MLflow's share of an epoch, and a no-op `dvc repro`
# --------------------------------------------------------------------------


def tracking_cost(project: Path, repeats: int = 5) -> dict[str, Any]:
    """What MLflow adds to a stage, as a user sees it: `python stages/train.py mnist_cnn` (2 epochs of 3,000
    generated images: training is short, so nothing hides MLflow's work) and then `stages/evaluate.py`, timed
    with CNNLAB_TRACKING=off and with a local MLflow store, interleaved, in a fresh process each time
    (importing MLflow counts); per stage, the difference of the medians is MLflow's cost."""
    stages = {"train@mnist_cnn": "stages/train.py", "evaluate@mnist_cnn": "stages/evaluate.py"}
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(project, Path(tmp) / "project", lambda params: smoke_experiment(params, "mnist_cnn"))
        env = {"DVC_NO_ANALYTICS": "1", "CNNLAB_DEVICE": "cpu"}
        _dvc(["repro", "prepare@mnist"], root, env)
        seconds: dict[str, dict[str, list[float]]] = {stage: {"off": [], "on": []} for stage in stages}
        for _ in range(repeats):
            for switch in ("off", "on"):
                for stage, script in stages.items():
                    started = time.perf_counter()
                    subprocess.run(
                        [sys.executable, script, "mnist_cnn"],
                        cwd=root,
                        check=True,
                        env={**os.environ, **env, "CNNLAB_TRACKING": switch},
                        capture_output=True,
                    )
                    seconds[stage][switch].append(time.perf_counter() - started)
    costs = {}
    for stage, times in seconds.items():
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        costs[stage] = {"untracked_seconds": off, "tracked_seconds": on, "mlflow_seconds": on - off, "seconds": times}
    return costs


def noop_repro_seconds(project: Path, repeats: int = 3) -> dict[str, Any]:
    """Build the smoke profile of the whole pipeline in a temporary copy, then time `dvc repro` with nothing to do."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_image_folder(Path(tmp) / "images")
        root = copy_project(project, Path(tmp) / "project", lambda params: smoke_profile(params, folder))
        env = {"DVC_NO_ANALYTICS": "1", "CNNLAB_TRACKING": "off"}
        started = time.perf_counter()
        _dvc(["repro"], root, env)
        build_seconds = time.perf_counter() - started
        stages = len(_dvc(["stage", "list", "--name-only"], root, env).split())
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            output = _dvc(["repro"], root, env)
            times.append(time.perf_counter() - started)
            if "up to date" not in output:
                raise RuntimeError(f"a second dvc repro was not a no-op:\n{output}")
    return {
        "stages": stages,
        "build_seconds": build_seconds,
        "noop_seconds": statistics.median(times),
        "noop_seconds_all": times,
    }


def _dvc(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run(
        [str(dvc), *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return describe_device(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def markdown(report: dict[str, Any]) -> str:
    runtime = report["runtime"]
    lines = [
        "# cnnlab engine vs the course's training loop",
        "",
        f"Machine: {report['machine']}; torch {report['torch']}; `python -m cnnlab_tools.bench` on {report['date']}.",
        f"Engine: `runtime:` {', '.join(f'{k} {v}' for k, v in runtime.items())}, resolved per workload "
        "(precision column; channels_last for image batches). Reference: PIL dataset + course transforms + "
        "DataLoader with the course's batch size and workers, fp32. Engine fp32: the engine in fp32, NCHW.",
        "Measured peak matmul: "
        + ", ".join(f"{flops / 1e9:,.0f} GFLOP/s {kind}" for kind, flops in report["peak_flops"].items())
        + " (on CUDA fp32 training is held to the tf32 peak: cuDNN's convolutions use TF32 by default). "
        "Utilisation = 6 x MACs x images/s / peak. "
        f"Each figure is the median of {report['repeats']} interleaved timings"
        + (
            f"; the engine's timed windows last at least {report['min_seconds']:g} s."
            if report.get("min_seconds")
            else "."
        ),
        "",
        "| workload | batch | steps | reference workers | reference img/s | engine precision | engine img/s | "
        "engine fp32 img/s | speedup | reference util. | engine util. |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["workloads"]:
        lines.append(
            f"| {row['workload']} | {row['batch_size']} | {row['steps']} | {row['reference_workers']} | "
            f"{row['reference_images_per_second']:,.0f} | {row['engine_precision']} | "
            f"{row['engine_images_per_second']:,.0f} | "
            f"{row['engine_fp32_images_per_second']:,.0f} | {row['speedup']:.2f}x | "
            f"{row['reference_utilisation']:.1%} | {row['engine_utilisation']:.1%} |"
        )
    trained = report.get("trained_epochs") or []
    if trained:
        lines += [
            "",
            "Whole epochs on "
            + ", ".join(sorted({row["data"] for row in trained}))
            + ": the engine with the workload's own schedule; the last epoch runs on trained weights.",
            "",
            "| workload | images/epoch | epochs | first epoch img/s | last epoch img/s | last/first |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in trained:
            rates = row["images_per_second"]
            lines.append(
                f"| {row['workload']} | {row['images']:,} | {row['epochs']} | {rates[0]:,.0f} | "
                f"{rates[-1]:,.0f} | {rates[-1] / rates[0]:.2f} |"
            )
    zoo = report.get("zoo") or []
    if zoo:
        lines += [
            "",
            f"The zoo and the speedrun on the engine ({ZOO_STEPS} steps of generated images after "
            f"{WARMUP_STEPS} warm-up steps):",
            "",
            "| experiment | model | batch | precision | MMACs/image | img/s | utilisation |",
            "|---|---|---:|---|---:|---:|---:|",
        ]
        for row in zoo:
            lines.append(
                f"| {row['workload']} | {row['model']} | {row['batch_size']} | {row['precision']} | "
                f"{row['macs_per_image'] / 1e6:,.1f} | {row['images_per_second']:,.0f} | "
                f"{row['utilisation']:.1%} |"
            )
    tracking = report.get("tracking")
    if tracking:
        repeats = len(next(iter(tracking.values()))["seconds"]["on"])
        lines += [
            "",
            f"MLflow's cost per stage (each stage in a fresh process on 2 epochs of 3,000 generated MNIST "
            f"images, local SQLite store, median of {repeats}, interleaved):",
            "",
            "| stage | CNNLAB_TRACKING=off | tracked | MLflow's cost |",
            "|---|---:|---:|---:|",
        ]
        for stage, cost in tracking.items():
            lines.append(
                f"| {stage} | {cost['untracked_seconds']:.2f} s | {cost['tracked_seconds']:.2f} s | "
                f"{cost['mlflow_seconds']:.2f} s |"
            )
    repro = report.get("noop_repro")
    if repro:
        lines += [
            "",
            f"No-op `dvc repro` of the whole pipeline ({repro['stages']} stages, smoke profile): "
            f"{repro['noop_seconds']:.2f} s (median of {len(repro['noop_seconds_all'])}); "
            f"building it took {repro['build_seconds']:.0f} s.",
        ]
    for note in report.get("skipped", []):
        lines += ["", f"Not measured: {note}"]
    return "\n".join(lines) + "\n"


def zoo_workloads(params: Params) -> list[str]:
    return [name for name, experiment in params.experiments.items() if experiment.study == ZOO_STUDY]


def resolved_runtime(params: Params, workload: Workload, device: torch.device) -> Runtime:
    """What the train stage would run this workload's model with on `device`."""
    return resolve_runtime(params.runtime, device, workload.train.precision)


def run_bench(
    params: Params,
    workloads: list[str],
    steps_scale: float,
    workers: int | None,
    project: Path | None,
    with_tracking: bool,
    repeats: int = 3,
    epochs: int = 3,
    epoch_images: int | None = None,
    zoo: bool | None = None,
    data_project: Path | None = None,
    write: Callable[[dict[str, Any]], None] = lambda report: None,
    min_seconds: float | None = None,
) -> dict[str, Any]:
    """`project`: the copy to time a no-op `dvc repro` in (None: skip); `data_project`: where to look for
    prepared data for the whole epochs; `zoo` None: on CUDA only. `write` is called with the report after each
    part, so a failure later loses nothing measured before it. `min_seconds`: the shortest timed window of the
    engine (default: 3 s on CUDA, one epoch of the bench's images on CPU)."""
    device = select_device()
    window = min_seconds if min_seconds is not None else (3.0 if device.type == "cuda" else 0.0)
    torch.manual_seed(0)
    peaks = measured_peaks(device)
    report: dict[str, Any] = {
        "machine": machine_description(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "runtime": asdict(params.runtime) | {"device": str(device)},
        "peak_flops": peaks,
        "repeats": repeats,
        "min_seconds": window,
        "workloads": [],
        "skipped": [],
    }
    write(report)
    for name in workloads:
        workload = workload_from_params(params, name, max(1, math.ceil(STEPS[name] * steps_scale)), workers)
        result = bench_workload(workload, resolved_runtime(params, workload, device), peaks, repeats, window)
        say(
            f"{name}: reference {result.reference_images_per_second:,.0f} img/s, engine "
            f"{result.engine_images_per_second:,.0f} img/s ({result.speedup:.2f}x)"
        )
        report["workloads"].append(asdict(result))
        write(report)
    if epochs:
        report["trained_epochs"] = []
        for name in workloads:
            workload = workload_from_params(params, name, 1, workers)
            data, origin = epoch_data(workload, data_project, epoch_images)
            say(f"{name}: {epochs} whole epochs of {len(data):,} images ({origin})")
            row = trained_epochs(workload, data, resolved_runtime(params, workload, device), epochs)
            report["trained_epochs"].append(row | {"data": origin})
            write(report)
    if zoo if zoo is not None else device.type == "cuda":
        report["zoo"] = []
        for name in zoo_workloads(params):
            workload = workload_from_params(params, name, max(1, math.ceil(ZOO_STEPS * steps_scale)))
            row = zoo_row(workload, resolved_runtime(params, workload, device), peaks, window)
            share = f"{row['utilisation']:.1%} of the {row['precision']} peak"
            say(f"{name}: {row['images_per_second']:,.0f} img/s, {share}")
            report["zoo"].append(row)
            write(report)
    if with_tracking and data_project is not None:
        if importlib.util.find_spec("mlflow") and Path(sys.executable).with_name("dvc").exists():
            say("MLflow: timing train@mnist_cnn with and without tracking")
            report["tracking"] = tracking_cost(data_project)
            write(report)
        else:
            report["skipped"].append("MLflow's cost per stage (mlflow or dvc is not installed)")
    if project is not None:
        if Path(sys.executable).with_name("dvc").exists():
            say("DVC: building the smoke profile of the whole pipeline, then timing a no-op dvc repro")
            report["noop_repro"] = noop_repro_seconds(project)
            write(report)
        else:
            report["skipped"].append("no-op dvc repro (dvc is not installed)")
    return report


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every workload's timed steps")
    parser.add_argument("--workers", type=int, help="the reference DataLoader's workers (default: the course's)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings per loop; the median counts")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the no-op dvc repro timing")
    parser.add_argument("--no-tracking", action="store_true", help="skip timing MLflow's cost per train stage")
    parser.add_argument("--epochs", type=int, default=3, help="whole epochs per workload on its data; 0: skip")
    parser.add_argument("--epoch-images", type=int, help="cap the images of those epochs (default: all)")
    parser.add_argument(
        "--zoo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the zoo's training speed and utilisation (default: on CUDA only)",
    )
    parser.add_argument("--min-seconds", type=float, help="shortest timed window (default: 3 s on CUDA, else 0)")
    parser.add_argument("--out", default="reports/bench", help="writes OUT.md and OUT.json, after each part")
    args = parser.parse_args(argv)

    params_path = Path(args.params)
    project = params_path.resolve().parent
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(report: dict[str, Any]) -> None:
        out.with_suffix(".md").write_text(markdown(report))
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    report = run_bench(
        load_params(params_path),
        args.workloads,
        args.steps_scale,
        args.workers,
        None if args.no_pipeline else project,
        not args.no_tracking,
        args.repeats,
        args.epochs,
        args.epoch_images,
        args.zoo,
        project,
        write,
        args.min_seconds,
    )
    write(report)
    print(markdown(report))


if __name__ == "__main__":
    main()
