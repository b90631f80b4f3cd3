"""What `make repro` runs on this machine, what it leaves out, and how long it will take here.

    python -m cnnlab_tools.plan            # the plan, timed on this machine, and what it leaves out (make plan)
    python -m cnnlab_tools.plan --targets  # only the DVC stages `make repro` passes to `dvc repro` (no timing)
    python -m cnnlab_tools.plan --brief    # the plan without timing what it leaves out (make repro prints this)

Sized to the machine: without a CUDA GPU the plan is the course's experiments (every study of params.yaml but
the GPU-sized ones in GPU_SIZED_STUDIES, with their seed replicates, and the transfer experiments whose
backbone is not one of the left-out models); with one, everything. `make repro-all` runs everything anyway.

How the estimate is made: for each training setup (model, input shape, batch size, precision, augmentation)
the engine trains generated images on this machine's device, after a warm-up call, three times for about
TIMING_SECONDS each; the best of the three (as timeit does: a busy machine only slows a call) times the
images of all epochs is the train stage's time, plus a third of that time per image for the evaluation of
the test split. A transfer experiment's features stage is its backbone's forward pass over every image.
Stages DVC has up to date count nothing; downloads, data preparation and DVC's own work are not counted.
On CPU the timing trains batches of at most CPU_TIMING_BATCH images (--cpu-batch), slower per image than the runs' own
batches (the course VGG in bf16 on 2 cores: 212 img/s at 32, 301 at 128), so CPU estimates err long.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import networkx
import torch

from cnnlab.config.datasets import DatasetConfig
from cnnlab.config.experiments import TrainConfig
from cnnlab.config.params import Params, load_params
from cnnlab.data.kinds import cifar10, mnist
from cnnlab.data.kinds.imagefolder import source_folder, split_sizes
from cnnlab.data.loader import DeviceSplit, constant_normalizer
from cnnlab.engine.cores import usable_cores
from cnnlab.engine.loop import train
from cnnlab.engine.progress import format_duration
from cnnlab.engine.runtime import Runtime, describe_device, resolve_runtime, select_device, synchronize
from cnnlab.errors import CnnlabError, exits_cleanly
from cnnlab.models.pretrained import TORCHVISION_BACKBONES, headless, torchvision_backbone
from cnnlab.models.registry import build_model
from cnnlab.pipeline.backbones import backbone_features
from cnnlab_tools.bench import ZOO_STUDY

# Studies whose full-length training wants a GPU: 8 zoo models x 30 epochs and the speedrun, about a day of
# CPU time on 2 cores (`make plan` measures it on any machine).
GPU_SIZED_STUDIES = (ZOO_STUDY,)
CPU_TIMING_BATCH = 128
# Each timing call trains about TIMING_SECONDS (at most MAX_TIMED_BATCHES batches); the best of TIMINGS calls
# counts, as timeit does: a busy machine only ever slows a call down.
TIMING_SECONDS = 0.3
MAX_TIMED_BATCHES = 50
TIMINGS = 3
TIMED_BATCHES = 2  # of a transfer backbone's forward pass
# Evaluation is a forward pass: about a third of a training step's work per image.
EVALUATION_SHARE = 1 / 3


@dataclass(frozen=True)
class Job:
    """One experiment's training (or a transfer experiment's features) and what its time is made of."""

    name: str  # the experiment, replicate or transfer entry
    train_stage: str  # the DVC stage that does the long work
    target: str  # the DVC stage `dvc repro` is given (its evaluation)
    images: int | None  # per epoch; None: not known before the data is there
    epochs: int
    test_images: int | None
    timing_key: tuple[object, ...]  # jobs with one key run at one speed
    why_unknown: str = ""


@dataclass(frozen=True)
class Plan:
    device: torch.device
    run: list[Job]
    left_out: list[Job]


def dataset_sizes(params: Params, name: str, root: Path) -> tuple[int, int] | None:
    """(train, test) images of a dataset: from its prepared data if there, else from its source's options."""
    meta = root / "data" / "prepared" / name / "meta.json"
    if meta.is_file():
        sizes = json.loads(meta.read_text())["sizes"]
        return int(sizes["train"]), int(sizes["test"])
    dataset = params.dataset(name)
    options = dataset.acquire
    if dataset.kind == "spiral":
        return (options.classes * options.points_per_class,) * 2
    if getattr(options, "source", None) == "synthetic":
        return options.synthetic.train_size, options.synthetic.test_size
    if dataset.kind == "mnist":
        return 60_000, 10_000
    if dataset.kind == "cifar10":
        if options.source == "images":
            held = round(50_000 * options.images.holdout)
            return 50_000 - held, held
        return 50_000, 10_000
    return _image_folder_sizes(dataset)


def _image_folder_sizes(dataset: DatasetConfig) -> tuple[int, int] | None:
    try:
        return split_sizes(source_folder(dataset.name, dataset.acquire), dataset.prepare)
    except CnnlabError:
        return None


def input_shape(dataset: DatasetConfig) -> tuple[int, ...]:
    if dataset.kind == "spiral":
        return (2,)
    if dataset.kind == "mnist":
        return mnist.IMAGE_SHAPE
    if dataset.kind == "cifar10":
        return cifar10.IMAGE_SHAPE
    return (3, dataset.prepare.crop, dataset.prepare.crop)


def jobs(params: Params, root: Path) -> list[Job]:
    """Every experiment, replicate and transfer entry of params.yaml as a job, in params.yaml's order."""
    found = []
    for name, experiment in params.experiments.items():
        sizes = dataset_sizes(params, experiment.dataset, root)
        key = _training_key(
            experiment.model, experiment.model_args, params.dataset(experiment.dataset), experiment.train
        )
        found.append(
            _job(name, f"train@{name}", f"evaluate@{name}", sizes, experiment.train.epochs, key, experiment.dataset)
        )
        for replicate, entry in params.replicates.items():
            if entry.experiment == name:
                found.append(
                    _job(
                        replicate,
                        f"train_replicate@{replicate}",
                        f"evaluate_replicate@{replicate}",
                        sizes,
                        experiment.train.epochs,
                        key,
                        experiment.dataset,
                    )
                )
    for name, transfer in params.transfer.items():
        sizes = dataset_sizes(params, transfer.dataset, root)
        backbone = transfer.backbone
        key = (
            "features",
            backbone.name,
            backbone.weights,
            input_shape(params.dataset(transfer.dataset)),
            backbone.precision,
        )
        found.append(_job(name, f"features@{name}", f"evaluate_head@{name}", sizes, 1, key, transfer.dataset))
    return found


def _training_key(model: str, args: object, dataset: DatasetConfig, config: TrainConfig) -> tuple[object, ...]:
    return ("train", model, repr(args), input_shape(dataset), config.batch_size, config.precision, repr(config.augment))


def _job(
    name: str,
    stage: str,
    target: str,
    sizes: tuple[int, int] | None,
    epochs: int,
    key: tuple[object, ...],
    dataset: str,
) -> Job:
    if sizes is None:
        why = f"no image folder for dataset {dataset!r} yet (datasets.{dataset}.acquire.source or CNNLAB_MIRROR)"
        return Job(name, stage, target, None, epochs, None, key, why)
    return Job(name, stage, target, sizes[0], epochs, sizes[1], key)


def backbone_of_left_out(params: Params, transfer: str, left_out: set[str]) -> bool:
    backbone = params.transfer[transfer].backbone
    return backbone.weights == "pipeline" and backbone.name in left_out


def make_plan(params: Params, root: Path, device: torch.device, everything: bool = False) -> Plan:
    every = jobs(params, root)
    if everything or device.type == "cuda":
        return Plan(device, every, [])
    gpu_sized = {n for n, e in params.experiments.items() if e.study in GPU_SIZED_STUDIES}
    gpu_sized |= {r for r, e in params.replicates.items() if e.experiment in gpu_sized}
    gpu_sized |= {t for t in params.transfer if backbone_of_left_out(params, t, gpu_sized)}
    return Plan(device, [j for j in every if j.name not in gpu_sized], [j for j in every if j.name in gpu_sized])


# --------------------------------------------------------------------------
# Timing on this machine
# --------------------------------------------------------------------------


def training_images_per_second(params: Params, job: Job, runtime: Runtime, cpu_batch: int = CPU_TIMING_BATCH) -> float:
    """The engine's training speed for `job`'s setup, on generated inputs of its shape: the best of TIMINGS
    calls of the engine, each long enough (TIMING_SECONDS) that its own start-up hardly counts."""
    experiment = params.experiments.get(job.name) or params.experiments[params.replicates[job.name].experiment]
    shape = input_shape(params.dataset(experiment.dataset))
    device = runtime.device
    full_batch = experiment.train.batch_size == 0
    batch = (job.images or 1) if full_batch else experiment.train.batch_size
    if device.type == "cpu" and not full_batch:
        batch = min(batch, cpu_batch)
    torch.manual_seed(0)
    model = build_model(experiment.model, shape, 10, **experiment.model_args).to(device)
    normalize = constant_normalizer((0.0,) * shape[0], (1.0,) * shape[0], len(shape) == 3, device)
    config = replace(experiment.train, epochs=1, batch_size=batch)
    one_batch = _generated_split(shape, batch, device)

    def seconds_per_batch(batches: int) -> float:
        # A whole-split batch trains one step per epoch: more steps are more epochs of the same split.
        data = one_batch if full_batch else _generated_split(shape, batch * batches, device)
        run = replace(config, epochs=batches) if full_batch else config
        return train(model, data, normalize, run, runtime, progress=False).train_seconds / batches

    first = seconds_per_batch(1)  # also the warm-up: first calls allocate and pick kernels
    batches = max(1, min(MAX_TIMED_BATCHES, math.ceil(TIMING_SECONDS / max(first, 1e-6))))
    best = min(seconds_per_batch(batches) for _ in range(TIMINGS))
    return batch / best


def _generated_split(shape: tuple[int, ...], count: int, device: torch.device) -> DeviceSplit:
    generator = torch.Generator().manual_seed(0)
    if len(shape) == 3:
        inputs = torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator)
    else:
        inputs = torch.randn(count, *shape, generator=generator)
    return DeviceSplit(inputs.to(device), torch.randint(0, 2, (count,), generator=generator).to(device))


def forward_images_per_second(params: Params, job: Job, runtime: Runtime) -> float:
    """A transfer backbone's features (the features stage's own code) of generated images of the dataset's
    shape, after a warm-up batch."""
    entry = params.transfer[job.name]
    shape = input_shape(params.dataset(entry.dataset))
    device = runtime.device
    backbone_shape: tuple[int, ...] | None = None
    if entry.backbone.weights == "pipeline":
        source = params.experiments[entry.backbone.name]
        backbone_shape = input_shape(params.dataset(source.dataset))  # images are resized to what it trained on
        backbone = headless(build_model(source.model, backbone_shape, 10, **source.model_args))[0]
    elif entry.backbone.name in TORCHVISION_BACKBONES:
        backbone = torchvision_backbone(entry.backbone.name, None)[0]
    else:
        raise CnnlabError(f"transfer.{job.name}.backbone.name: unknown backbone {entry.backbone.name!r}")
    backbone = backbone.to(device)
    batch = 4 if device.type == "cpu" else 64
    images = _generated_split(shape, batch * (TIMED_BATCHES + 1), device).inputs
    normalize = constant_normalizer((0.0,) * shape[0], (1.0,) * shape[0], True, device)
    backbone_features(backbone, images[:batch], normalize, backbone_shape, runtime, batch)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    backbone_features(backbone, images[batch:], normalize, backbone_shape, runtime, batch)
    synchronize(device)
    return batch * TIMED_BATCHES / (time.perf_counter() - started)


@dataclass
class Stopwatch:
    """Each training setup's images/s on `device`, timed once and kept."""

    device: torch.device
    cpu_batch: int = CPU_TIMING_BATCH
    speeds: dict[tuple[object, ...], float] = field(default_factory=dict)

    def images_per_second(self, params: Params, job: Job) -> float:
        if job.timing_key not in self.speeds:
            runtime = _runtime(params, job, self.device)
            if job.train_stage.startswith("features@"):
                self.speeds[job.timing_key] = forward_images_per_second(params, job, runtime)
            else:
                self.speeds[job.timing_key] = training_images_per_second(params, job, runtime, self.cpu_batch)
        return self.speeds[job.timing_key]


def seconds_for(params: Params, job: Job, stopwatch: Stopwatch) -> float | None:
    """`job`'s estimated seconds on the stopwatch's device; None when its data's size is not known yet."""
    if job.images is None or job.test_images is None:
        return None
    rate = stopwatch.images_per_second(params, job)
    if job.train_stage.startswith("features@"):
        return (job.images + job.test_images) / rate
    return (job.images * job.epochs + job.test_images * EVALUATION_SHARE) / rate


def _runtime(params: Params, job: Job, device: torch.device) -> Runtime:
    if job.train_stage.startswith("features@"):
        precision = params.transfer[job.name].backbone.precision
    else:
        experiment = params.experiments.get(job.name) or params.experiments[params.replicates[job.name].experiment]
        precision = experiment.train.precision
    return resolve_runtime(params.runtime, device, precision)


def up_to_date(root: Path, stages: Iterable[str]) -> set[str]:
    """The stages of root's dvc.yaml that `dvc repro` would not run: neither they nor any stage before them
    changed (a stage alone looks unchanged until the one before it has run again)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        changed_addresses = set(repo.status())  # one pass over the whole pipeline
        graph = repo.index.graph  # an edge runs from a stage to each stage it depends on
        changed = {stage for stage in graph if stage.addressing in changed_addresses}
        by_name = {stage.name: stage for stage in graph}
        return {name for name in stages if not ({by_name[name], *networkx.descendants(graph, by_name[name])} & changed)}


# --------------------------------------------------------------------------
# Saying it
# --------------------------------------------------------------------------


def describe_jobs(
    params: Params, jobs_: list[Job], stopwatch: Stopwatch, done: set[str], say: Callable[[str], None]
) -> float:
    """One line per job, with its estimate; returns the total seconds of those that will run."""
    total = 0.0
    for job in jobs_:
        size = f"{job.images:,} images x {job.epochs}" if job.images is not None else "?"
        if job.train_stage in done:
            say(f"  {job.target:<44} {size:<22} up to date")
            continue
        seconds = seconds_for(params, job, stopwatch)
        if seconds is None:
            say(f"  {job.target:<44} {size:<22} unknown: {job.why_unknown}")
            continue
        total += seconds
        say(f"  {job.target:<44} {size:<22} {format_duration(seconds)}")
    return total


def machine(device: torch.device) -> str:
    cores = usable_cores()
    return f"{describe_device(device)}, {cores} CPU cores" if device.type == "cuda" else f"CPU only, {cores} cores"


def show_plan(
    params: Params, plan: Plan, root: Path, stopwatch: Stopwatch, time_left_out: bool, say: Callable[[str], None]
) -> None:
    done = up_to_date(root, [j.train_stage for j in plan.run + plan.left_out])
    scope = "everything" if not plan.left_out else "the course's experiments (no CUDA GPU here)"
    say(f"make repro on this machine ({machine(plan.device)}): {scope}, {len(plan.run)} experiment(s)")
    load, cores = os.getloadavg()[0], usable_cores()
    if load > cores / 2:  # other work competes for the cores the timing measures
        say(f"note: this machine is busy (load {load:.1f} on {cores} cores); the estimates below may run long")
    started = time.perf_counter()
    total = describe_jobs(params, plan.run, stopwatch, done, say)
    say(
        f"estimate: about {format_duration(total)} of training and evaluation: each setup's speed on generated "
        f"images, timed here in {time.perf_counter() - started:.0f} s, times its images and epochs (downloads and "
        "data preparation not counted; docs/performance.md)"
    )
    if plan.left_out:
        studies = ", ".join(GPU_SIZED_STUDIES)
        say(f"left out, sized for a GPU: {len(plan.left_out)} experiment(s) of study {studies} and what builds on them")
        if time_left_out:
            rest = describe_jobs(params, plan.left_out, stopwatch, done, say)
            say(f"the rest here: about {format_duration(rest)}")
        else:
            say("  " + ", ".join(j.name for j in plan.left_out))
            say("their times here: make plan")
        say("run them too: make repro-all")


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", action="store_true", help="print the DVC stages to reproduce, one per line")
    parser.add_argument("--brief", action="store_true", help="do not time what the plan leaves out")
    parser.add_argument("--all", action="store_true", help="plan everything, whatever the machine")
    parser.add_argument(
        "--cpu-batch", type=int, default=CPU_TIMING_BATCH, help="the largest batch timed on a CPU (default %(default)s)"
    )
    args = parser.parse_args(argv)
    root = Path.cwd()
    params = load_params(root / "params.yaml")
    device = select_device()
    plan = make_plan(params, root, device, everything=args.all)
    if args.targets:
        print("\n".join(job.target for job in plan.run))
        return
    show_plan(params, plan, root, Stopwatch(device, args.cpu_batch), time_left_out=not args.brief, say=print)


if __name__ == "__main__":
    main()
