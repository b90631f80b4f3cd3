"""Typed, validated params.yaml.

Every section is a frozen pydantic dataclass with strict types and constrained
fields (`section` below). `parse_dataclass` validates a YAML mapping into one
and turns pydantic's report into one line naming the key's full path and what
is accepted, so a typo in params.yaml fails in the first stage that reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from cnnlab.errors import ConfigError

try:
    import pydantic
    import pydantic.dataclasses
    from pydantic import Field
except ImportError:  # the engine alone on a bare machine (say, a GPU box's own Python): the types, unvalidated
    pydantic = None  # type: ignore[assignment]

    def Field(**constraints: Any) -> None:  # noqa: N802  (stands in for pydantic.Field)
        return None

T = TypeVar("T")

PARAMS_FILE = "params.yaml"

if pydantic is not None:
    # YAML's own types, exactly: a number is a number (1 counts as 1.0), "1" is a string and true is no integer;
    # unknown keys are errors, not silently ignored.
    SECTION_CONFIG = pydantic.ConfigDict(extra="forbid", strict=True)
    section = functools.partial(pydantic.dataclasses.dataclass, frozen=True, config=SECTION_CONFIG)
else:
    section = functools.partial(dataclasses.dataclass, frozen=True)

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # in [0, 1)
Name = Annotated[str, Field(min_length=1)]


# --------------------------------------------------------------------------
# YAML -> dataclass, with pydantic's errors as one line each
# --------------------------------------------------------------------------


@functools.cache
def _adapter(cls: type) -> Any:
    return pydantic.TypeAdapter(cls, config=None if hasattr(cls, "__pydantic_config__") else SECTION_CONFIG)


def parse_dataclass(cls: type[T], data: Any, where: str) -> T:
    """Build `cls` from a YAML value; `where` is its key path in params.yaml."""
    if pydantic is None:
        raise ConfigError(f"{where}: validating params.yaml needs pydantic; pip install 'pydantic>=2.7'")
    try:
        # Validated as JSON: YAML's mappings, lists and scalars are JSON's, and pydantic's strict JSON mode
        # accepts a mapping for a nested section and a list for a tuple, and nothing looser.
        text = json.dumps({} if data is None else data, default=str)
        return _adapter(cls).validate_json(text)
    except pydantic.ValidationError as error:
        raise ConfigError(_one_line(error, cls, data, where)) from None


def _one_line(error: Any, cls: type, data: Any, where: str) -> str:
    """pydantic's ValidationError as one line: the first problem, at its params.yaml key path."""
    located = [(_locate(cls, data, e["loc"]), e) for e in error.errors(include_url=False)]
    if len(located) > 1:  # every branch of a union failed, or several keys did: one line about one of them
        shallow = min(located, key=lambda item: len(item[0][0]))
        deep = max(located, key=lambda item: len(item[0][0]))
        if len(deep[0][0]) == len(shallow[0][0]):
            path, tp, value, _ = located[0][0]
            return f"{where}{path}: {value!r} is not accepted; use {_describe(tp)}"
        located = [deep]  # the user wrote one branch's mapping: what is wrong inside it
    (path, tp, value, parent), first = located[0]
    name, kind, message = where + path, first["type"], first["msg"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{name}: unknown key; accepted keys: {', '.join(_field_names(parent))}"
    if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
        return f"{name}: required key is missing"
    if kind == "literal_error":
        return f"{name}: {value!r} is not accepted; use {_describe(tp)}"
    if kind == "value_error":
        return f"{name}: {message.removeprefix('Value error, ')}"
    if kind.endswith(("_type", "_parsing")):
        return f"{name}: expected {_describe(tp)}, got {value!r}"
    requirement = message.replace("Input should", "it must").replace("String should", "it must")
    return f"{name}: {value!r} is not accepted; {requirement}"


def _locate(cls: type, data: Any, loc: tuple[Any, ...]) -> tuple[str, Any, Any, Any]:
    """The params.yaml path of an error location (pydantic adds union branch names to it), the type
    expected there, the value found there and the type holding it."""
    path, tp, value, parent = "", cls, data, cls
    for item in loc:
        tp = _strip(tp)
        if dataclasses.is_dataclass(tp) and isinstance(item, str) and item in _field_names(tp):
            parent, tp = tp, get_type_hints(tp, include_extras=True)[item]
            path += f".{item}"
            value = value.get(item) if isinstance(value, dict) else None
        elif get_origin(tp) in (Union, types.UnionType):
            options = [o for o in get_args(tp) if getattr(_strip(o), "__name__", None) == item]
            if options:  # a union branch: same path, that branch's type
                tp = options[0]
        elif get_origin(tp) is dict and isinstance(item, str):
            tp, path = get_args(tp)[1], path + f".{item}"
            value = value.get(item) if isinstance(value, dict) else None
        elif get_origin(tp) is tuple and isinstance(item, int):
            tp, path = get_args(tp)[0], path + f"[{item}]"
            value = value[item] if isinstance(value, list) and item < len(value) else None
        elif dataclasses.is_dataclass(tp) and isinstance(item, str):  # an unknown key
            parent, path, value = tp, path + f".{item}", value.get(item) if isinstance(value, dict) else None
            tp = Any
    return path, _strip(tp), value, parent


def _strip(tp: Any) -> Any:
    """The type inside Annotated[...]."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _field_names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []


def _describe(tp: Any) -> str:
    """What a user may write for type `tp`, in params.yaml terms."""
    tp = _strip(tp)
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(_field_names(tp))
    if get_origin(tp) is tuple:
        return "a list"
    if get_origin(tp) is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


# --------------------------------------------------------------------------
# The params.yaml schema
# --------------------------------------------------------------------------

ScalarArg = Union[bool, int, float, str]


@dataclasses.dataclass(frozen=True)
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


@section
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PositiveFloat = 0.01
    momentum: Fraction = 0.0
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("optimizer.nesterov needs name: sgd and a positive momentum")


@section
class ScheduleConfig:
    """Learning rate over training: linear warm-up, then constant, cosine or linear decay to zero."""

    name: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_fraction: Fraction = 0.0  # share of all steps spent ramping up from zero


@section
class AugmentConfig:
    """Random per-image augmentation, applied to whole batches on the training device."""

    crop_padding: NonNegativeInt = 0  # RandomCrop(size, padding=crop_padding); 0 = off
    flip: bool = False  # RandomHorizontalFlip(p=0.5)

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip)


@section
class NormalizeConstants:
    mean: tuple[Annotated[float, Field(allow_inf_nan=False)], ...]
    std: tuple[PositiveFloat, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError("normalize needs as many std values as mean values")


NormalizeMode = Literal["course", "train_stats", "none"]


@section
class InputConfig:
    """How prepared data is fed to the model, at training and at evaluation alike."""

    # course: the dataset's constants from the course; train_stats: computed by prepare; or {mean, std}
    normalize: Union[NormalizeMode, NormalizeConstants] = "course"
    permute_pixels: bool = False


@section
class TrainConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: PositiveInt = 1
    batch_size: NonNegativeInt = 64  # 0 means the whole training split in one batch
    label_smoothing: Fraction = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0


@section
class EvaluateConfig:
    batch_size: NonNegativeInt = 1000  # 0 means the whole test split in one batch
    grid_images: NonNegativeInt = 8  # test images shown with true and predicted labels (image datasets)
    tta: Literal["none", "flip"] = "none"  # flip: average the predictions for each image and its mirror image


@section
class ExperimentConfig:
    """One entry of `experiments:`. Each section is tracked by the DVC stage that reads it:
    train reads study, dataset, model, model_args, inputs and train; evaluate reads evaluate."""

    study: Name  # the MLflow experiment that groups its runs
    dataset: Name
    model: Name
    model_args: dict[str, ScalarArg]
    inputs: InputConfig
    train: TrainConfig
    evaluate: EvaluateConfig


@section
class Comparison:
    """A course question answered from two experiments' test accuracy."""

    question: str
    baseline: str
    candidate: str


@section
class ReportConfig:
    tolerance_points: NonNegativeFloat = 1.0  # accuracy gaps below this many points count as "about the same"
    comparisons: tuple[Comparison, ...] = ()


@section
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
    checkpoint_every_s: NonNegativeFloat = 30.0  # save resumable state after an epoch once this long since the last save
    # with CNNLAB_NPROC > 1 on GPUs: BatchNorm statistics over the whole batch, not each process's part of it
    sync_batchnorm: bool = False


TORCHVISION_BACKBONE_SOURCE = "src/cnnlab/models/pretrained.py"


@section
class BackboneConfig:
    """The frozen feature extractor of a transfer experiment.

    `source` exists for DVC: dvc.yaml cannot pick a dependency per case, so each
    entry names the file or output its backbone comes from, and it is checked here.
    """

    name: Name  # a torchvision architecture (vgg16), or with weights: pipeline an experiment of this pipeline
    weights: Literal["imagenet", "none", "pipeline"]
    source: Name  # src/cnnlab/models/pretrained.py for torchvision's; models/<name> for weights: pipeline
    weights_file: str = ""  # imagenet: a local copy of torchvision's file instead of torch.hub's cache
    seed: int = 0  # weights: none: seeds the random initialisation
    finetune_layers: NonNegativeInt = 0  # > 0: also train the backbone's last N layers with weights, from images (no cache)
    imagenet_preview: NonNegativeInt = 5  # imagenet: validation images the untouched model labels with its top 5 classes

    def __post_init__(self) -> None:
        if self.weights_file and self.weights != "imagenet":
            raise ValueError("backbone.weights_file is only read with weights: imagenet; clear it")


@section
class HeadConfig:
    """The new last layer: Dropout(dropout) -> Linear(features, classes), trained on the backbone's features."""

    # VGG16 has Dropout(0.5) right before the layer the course replaces, active while it trains the new one
    dropout: Fraction = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)


@section
class TransferConfig:
    """One entry of `transfer:`. Stage features@ reads dataset, inputs and backbone;
    head@ reads study and head; evaluate_head@ reads evaluate."""

    study: Name
    dataset: Name
    backbone: BackboneConfig
    inputs: InputConfig
    head: HeadConfig
    evaluate: EvaluateConfig

    @property
    def uses_feature_cache(self) -> bool:
        return self.backbone.finetune_layers == 0


@dataclasses.dataclass(frozen=True)
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
