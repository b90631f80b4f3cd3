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
    # BatchNorm's shifts (biases) learn this many times faster, with the same decay per step (airbench's
    # "bias_scaler": 64); 1 treats them as every other parameter
    norm_bias_lr_scale: PositiveFloat = 1.0

    def __post_init__(self) -> None:
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("optimizer.nesterov needs name: sgd and a positive momentum")


@section
class ScheduleConfig:
    """Learning rate over training, as a factor of `optimizer.lr`: a linear warm-up from `initial_factor` to 1,
    then constant, or a cosine or linear (onecycle) decay from 1 to `final_factor`."""

    name: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_fraction: Fraction = 0.0  # share of all steps spent ramping up
    initial_factor: Fraction = 0.0  # where the warm-up starts
    final_factor: Fraction = 0.0  # where a decay ends


@section
class LookaheadConfig:
    """An exponential moving average of the weights that the weights are reset to every `every_steps` steps
    (airbench's lookahead): ema += (1 - d) (w - ema), w = ema, with d = decay x (share of training done)^3, so
    it starts off and tightens towards the end; the last step leaves the average. every_steps 0: off."""

    every_steps: NonNegativeInt = 0
    decay: Fraction = 0.0


@section
class AugmentConfig:
    """Random per-image augmentation, applied to whole batches on the training device."""

    crop_padding: NonNegativeInt = 0  # RandomCrop(size, padding=crop_padding); 0 = off
    padding_mode: Literal["zeros", "reflect"] = "zeros"  # what a crop shows beyond the image's edge
    # true: RandomHorizontalFlip(p=0.5); alternate: each image flipped at random in the first epoch and
    # the other way round in each epoch after (airbench's alternating flip: every image seen both ways)
    flip: bool | Literal["alternate"] = False

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
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    seed: int = 0
    precision: Precision = "fp32"


@section
class EvaluateConfig:
    batch_size: NonNegativeInt = 1000  # 0 means the whole test split in one batch
    grid_images: NonNegativeInt = 8  # test images shown with true and predicted labels (image datasets)
    # flip: average the predictions for each image and its mirror image; flip_translate: and, with equal weight,
    # those of the image shifted one pixel up-left and down-right (edges reflected), as airbench's level 2
    tta: Literal["none", "flip", "flip_translate"] = "none"


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
