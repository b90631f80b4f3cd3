"""Typed, validated params.yaml.

Every section is a frozen dataclass. `parse_dataclass` turns a YAML mapping
into one, rejecting unknown keys and wrong types with the key's full path, so
a typo in params.yaml fails in the first stage that reads it, in one line.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from cnnlab.errors import ConfigError

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


# --------------------------------------------------------------------------
# Generic YAML -> dataclass conversion
# --------------------------------------------------------------------------


def parse_dataclass(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a YAML mapping; `where` is its key path."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(fields)}, got {data!r}")
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key; accepted keys: {', '.join(fields)}")
    hints = get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = convert(hints[name], data[name], f"{where}.{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{name}: required key is missing")
    try:
        return cls(**values)
    except ValueError as error:  # raised by a dataclass's __post_init__ range checks
        raise ConfigError(f"{where}: {error}") from None


def convert(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against type `tp` and return it in that type."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, where)  # type: ignore[arg-type]
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not accepted; use one of {', '.join(map(repr, choices))}")
        return value
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return convert(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not accepted; use {_describe(tp)}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        item_type = get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(convert(item_type, item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        _, value_type = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): convert(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    raise TypeError(f"config type {tp!r} at {where} is not supported")  # a bug, not user input


def _describe(tp: Any) -> str:
    """What a user may write for type `tp`, in params.yaml terms."""
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


# --------------------------------------------------------------------------
# The params.yaml schema
# --------------------------------------------------------------------------

ScalarArg = Union[bool, int, float, str]


@dataclass(frozen=True)
class DatasetConfig:
    """One entry of `datasets:`.

    `acquire` (read by the download stage) and `prepare` (read by the
    prepare stage) are the kind's own options dataclasses. Keeping them apart
    lets DVC re-run only the stage whose settings changed.
    """

    name: str
    kind: str
    acquire: Any
    prepare: Any


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be positive, got {self.lr}")
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("optimizer.nesterov needs name: sgd and a positive momentum")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate over training: linear warm-up, then constant, cosine or linear decay to zero."""

    name: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_fraction: float = 0.0  # share of all steps spent ramping up from zero

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"schedule.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass(frozen=True)
class AugmentConfig:
    """Random per-image augmentation, applied to whole batches on the training device."""

    crop_padding: int = 0  # RandomCrop(size, padding=crop_padding); 0 = off
    flip: bool = False  # RandomHorizontalFlip(p=0.5)

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"augment.crop_padding must be 0 or positive, got {self.crop_padding}")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip)


@dataclass(frozen=True)
class NormalizeConstants:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("normalize needs as many positive std values as mean values")


NormalizeMode = Literal["course", "train_stats", "none"]


@dataclass(frozen=True)
class InputConfig:
    """How prepared data is fed to the model, at training and at evaluation alike."""

    # course: the dataset's constants from the course; train_stats: computed by prepare; or {mean, std}
    normalize: Union[NormalizeMode, NormalizeConstants] = "course"
    permute_pixels: bool = False


@dataclass(frozen=True)
class TrainConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 1
    batch_size: int = 64  # 0 means the whole training split in one batch
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 0:
            raise ValueError("batch_size must be 0 (whole split) or positive")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 1000  # 0 means the whole test split in one batch
    grid_images: int = 8  # test images shown with true and predicted labels (image datasets)
    tta: Literal["none", "flip"] = "none"  # flip: average the predictions for each image and its mirror image

    def __post_init__(self) -> None:
        if self.batch_size < 0 or self.grid_images < 0:
            raise ValueError("batch_size and grid_images must be 0 or positive")


@dataclass(frozen=True)
class ExperimentConfig:
    """One entry of `experiments:`. Each section is tracked by the DVC stage that reads it:
    train reads study, dataset, model, model_args, inputs and train; evaluate reads evaluate."""

    study: str  # the MLflow experiment that groups its runs
    dataset: str
    model: str
    model_args: dict[str, ScalarArg]
    inputs: InputConfig
    train: TrainConfig
    evaluate: EvaluateConfig


@dataclass(frozen=True)
class Comparison:
    """A course question answered from two experiments' test accuracy."""

    question: str
    baseline: str
    candidate: str


@dataclass(frozen=True)
class ReportConfig:
    tolerance_points: float = 1.0  # accuracy gaps below this many points count as "about the same"
    comparisons: tuple[Comparison, ...] = ()


@dataclass(frozen=True)
class RuntimeConfig:
    """How the engine runs on this machine: speed, not results (see each field).

    Only `precision` is tracked by DVC, as it changes the numbers a little;
    the rest change how fast the same numbers come out.
    """

    # auto: bf16 autocast on CUDA with bf16 and on CPUs with amx_bf16 or avx512_bf16, for models of
    # at least 10M multiply-accumulates per image (smaller ones only pay for the casts); else fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # auto: NHWC for image models on every device (faster convolutions and pooling in cuDNN and oneDNN)
    channels_last: Union[Literal["auto"], bool] = "auto"
    compile: bool = False  # torch.compile the model: worth it for long GPU runs, not for minutes on CPU
    deterministic: bool = False  # bit-identical reruns on CUDA too, at the cost of slower kernels
    checkpoint_every_s: float = 30.0  # save resumable state after an epoch once this long since the last save

    def __post_init__(self) -> None:
        if self.checkpoint_every_s < 0:
            raise ValueError(f"runtime.checkpoint_every_s must be 0 or positive, got {self.checkpoint_every_s}")


TORCHVISION_BACKBONE_SOURCE = "src/cnnlab/models/pretrained.py"


@dataclass(frozen=True)
class BackboneConfig:
    """The frozen feature extractor of a transfer experiment.

    `source` exists for DVC: dvc.yaml cannot pick a dependency per case, so each
    entry names the file or output its backbone comes from, and it is checked here.
    """

    name: str  # a torchvision architecture (vgg16), or with weights: pipeline an experiment of this pipeline
    weights: Literal["imagenet", "none", "pipeline"]
    source: str  # src/cnnlab/models/pretrained.py for torchvision's; models/<name> for weights: pipeline
    weights_file: str = ""  # imagenet: a local copy of torchvision's file instead of torch.hub's cache
    seed: int = 0  # weights: none: seeds the random initialisation
    finetune_layers: int = 0  # > 0: also train the backbone's last N layers with weights, from images (no cache)
    imagenet_preview: int = 5  # imagenet: validation images the untouched model labels with its top 5 classes

    def __post_init__(self) -> None:
        if self.finetune_layers < 0 or self.imagenet_preview < 0:
            raise ValueError("backbone.finetune_layers and backbone.imagenet_preview must be 0 or positive")
        if self.weights_file and self.weights != "imagenet":
            raise ValueError("backbone.weights_file is only read with weights: imagenet; clear it")


@dataclass(frozen=True)
class HeadConfig:
    """The new last layer: Dropout(dropout) -> Linear(features, classes), trained on the backbone's features."""

    # VGG16 has Dropout(0.5) right before the layer the course replaces, active while it trains the new one
    dropout: float = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"head.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TransferConfig:
    """One entry of `transfer:`. Stage features@ reads dataset, inputs and backbone;
    head@ reads study and head; evaluate_head@ reads evaluate."""

    study: str
    dataset: str
    backbone: BackboneConfig
    inputs: InputConfig
    head: HeadConfig
    evaluate: EvaluateConfig

    @property
    def uses_feature_cache(self) -> bool:
        return self.backbone.finetune_layers == 0


@dataclass(frozen=True)
class Params:
    datasets: dict[str, DatasetConfig]
    experiments: dict[str, ExperimentConfig]
    report: ReportConfig
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    transfer: dict[str, TransferConfig] = field(default_factory=dict)

    def transfer_experiment(self, name: str) -> TransferConfig:
        if name not in self.transfer:
            raise ConfigError(f"transfer experiment {name!r} is not in {PARAMS_FILE}; known: {', '.join(self.transfer)}")
        return self.transfer[name]

    def experiment(self, name: str) -> ExperimentConfig:
        if name not in self.experiments:
            raise ConfigError(f"experiment {name!r} is not in {PARAMS_FILE}; known: {', '.join(self.experiments)}")
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"dataset {name!r} is not in {PARAMS_FILE}; known: {', '.join(self.datasets)}")
        return self.datasets[name]


def _parse_dataset(name: str, data: Any) -> DatasetConfig:
    from cnnlab.data.registry import dataset_kind, dataset_kinds

    where = f"datasets.{name}"
    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{where}.kind: required key is missing; use one of {', '.join(dataset_kinds())}")
    kind_name = data["kind"]
    if kind_name not in dataset_kinds():
        raise ConfigError(f"{where}.kind: unknown dataset kind {kind_name!r}; use one of {', '.join(dataset_kinds())}")
    for key in data:
        if key not in ("kind", "acquire", "prepare"):
            raise ConfigError(f"{where}.{key}: unknown key; accepted keys: kind, acquire, prepare")
    kind = dataset_kind(kind_name)
    return DatasetConfig(
        name=name,
        kind=kind_name,
        acquire=parse_dataclass(kind.acquire_options, data.get("acquire"), f"{where}.acquire"),
        prepare=parse_dataclass(kind.prepare_options, data.get("prepare"), f"{where}.prepare"),
    )


def parse_params(raw: Any) -> Params:
    """Validate a whole params.yaml mapping, cross-references included."""
    from cnnlab.models import check_model_args

    if not isinstance(raw, dict):
        raise ConfigError(f"{PARAMS_FILE}: expected a mapping at the top level")
    allowed = {"datasets", "experiments", "report", "runtime", "transfer"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{key}: unknown top-level key in {PARAMS_FILE}; accepted keys: {', '.join(sorted(allowed))}")
    datasets_raw = raw.get("datasets") or {}
    experiments_raw = raw.get("experiments") or {}
    if not isinstance(datasets_raw, dict) or not isinstance(experiments_raw, dict):
        raise ConfigError("datasets and experiments must be mappings of name -> settings")
    datasets = {name: _parse_dataset(name, data) for name, data in datasets_raw.items()}
    experiments = {
        name: parse_dataclass(ExperimentConfig, data, f"experiments.{name}") for name, data in experiments_raw.items()
    }
    for name, exp in experiments.items():
        if exp.dataset not in datasets:
            raise ConfigError(
                f"experiments.{name}.dataset: unknown dataset {exp.dataset!r}; use one of {', '.join(datasets)}"
            )
        check_model_args(exp.model, exp.model_args, f"experiments.{name}")
    transfer_raw = raw.get("transfer") or {}
    if not isinstance(transfer_raw, dict):
        raise ConfigError("transfer must be a mapping of name -> settings")
    transfer = {name: parse_dataclass(TransferConfig, data, f"transfer.{name}") for name, data in transfer_raw.items()}
    for name, config in transfer.items():
        _check_transfer(name, config, datasets, experiments)
    report = parse_dataclass(ReportConfig, raw.get("report"), "report")
    runs = [*experiments, *transfer]
    for i, comparison in enumerate(report.comparisons):
        for side in (comparison.baseline, comparison.candidate):
            if side not in runs:
                raise ConfigError(f"report.comparisons[{i}]: unknown experiment {side!r}; use one of {', '.join(runs)}")
    runtime = parse_dataclass(RuntimeConfig, raw.get("runtime"), "runtime")
    return Params(datasets=datasets, experiments=experiments, report=report, runtime=runtime, transfer=transfer)


def _check_transfer(
    name: str, config: TransferConfig, datasets: dict[str, DatasetConfig], experiments: dict[str, ExperimentConfig]
) -> None:
    """Cross-references of one `transfer:` entry: its dataset, its backbone and the DVC source naming it."""
    from cnnlab.models.pretrained import TORCHVISION_BACKBONES

    where = f"transfer.{name}"
    if name in experiments:
        raise ConfigError(f"{where}: {name!r} is also an experiment; both would write models/{name}, rename one")
    if config.dataset not in datasets:
        raise ConfigError(f"{where}.dataset: unknown dataset {config.dataset!r}; use one of {', '.join(datasets)}")
    if config.inputs.permute_pixels:
        raise ConfigError(f"{where}.inputs.permute_pixels: a pretrained backbone needs the images as they are; set false")
    backbone = config.backbone
    if backbone.weights == "pipeline":
        if backbone.name not in experiments:
            raise ConfigError(f"{where}.backbone.name: with weights: pipeline, name an experiment of this pipeline "
                              f"({', '.join(experiments)}), not {backbone.name!r}")
        expected_source = f"models/{backbone.name}"
    else:
        if backbone.name not in TORCHVISION_BACKBONES:
            raise ConfigError(f"{where}.backbone.name: {backbone.name!r} is not a torchvision backbone cnnlab knows; "
                              f"use one of {', '.join(TORCHVISION_BACKBONES)}, or weights: pipeline with an experiment")
        expected_source = TORCHVISION_BACKBONE_SOURCE
    if backbone.source != expected_source:
        raise ConfigError(f"{where}.backbone.source: {backbone.source!r} is not where this backbone comes from; "
                          f"set it to {expected_source} (DVC tracks the backbone through it)")
    if config.evaluate.tta != "none":
        raise ConfigError(f"{where}.evaluate.tta: the head is evaluated on the backbone's features, which cannot "
                          "be flipped; set none")
    if config.uses_feature_cache and config.head.train.augment.active:
        raise ConfigError(f"{where}.head.train.augment: cached features cannot be augmented; "
                          "turn augment off or set backbone.finetune_layers above 0")



def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the syntax") from None
    return parse_params(raw)
