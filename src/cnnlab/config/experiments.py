"""`experiments:` entries: a model trained on a dataset, and how it is fed, trained and evaluated.

Each section is tracked by the DVC stage that reads it: train@ reads study, dataset, model, model_args,
inputs and train; evaluate@ reads evaluate.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from cnnlab.schema import Field, Fraction, Name, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, section

ScalarArg = bool | int | float | str
# The arithmetic a model trains in: fp32, or bf16 autocast (faster on GPUs and on CPUs with avx512_bf16 or
# amx_bf16). A decision of the experiment, not of the machine: the same params give the same kind of result
# on every machine, so DVC's run-cache may hand one machine's result to another.
Precision = Literal["fp32", "bf16"]


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
    normalize: NormalizeMode | NormalizeConstants = "course"
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
    precision: Precision = "fp32"


@section
class EvaluateConfig:
    batch_size: NonNegativeInt = 1000  # 0 means the whole test split in one batch
    grid_images: NonNegativeInt = 8  # test images shown with true and predicted labels (image datasets)
    tta: Literal["none", "flip"] = "none"  # flip: average the predictions for each image and its mirror image


@section
class ExperimentConfig:
    """One entry of `experiments:`."""

    study: Name  # the MLflow experiment that groups its runs
    dataset: Name
    model: Name
    model_args: dict[str, ScalarArg]
    inputs: InputConfig
    train: TrainConfig
    evaluate: EvaluateConfig
