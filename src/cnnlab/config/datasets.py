"""`datasets:` entries: a kind, and that kind's `acquire:` (download stage) and `prepare:` (prepare stage) options.

Keeping acquire and prepare apart lets DVC re-run only the stage whose settings changed. Adding a dataset
kind means its option sections here, one line in DATASET_KINDS, and its module in cnnlab/data/kinds/.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Literal

from cnnlab.errors import ConfigError
from cnnlab.schema import parse_dataclass, section


@section
class PrepareOptions:
    """`prepare:` settings every dataset kind accepts."""

    permutation_seed: int = 0  # seeds the fixed pixel permutation of the permuted-pixel experiments


@section
class SyntheticSizes:
    """A generated stand-in for an image dataset (offline demos and tests)."""

    train_size: int = 60000
    test_size: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_size < 1 or self.test_size < 1:
            raise ValueError("synthetic train_size and test_size must be positive")


@section
class SourceOptions:
    """`acquire:` of MNIST: the official files, or a synthetic stand-in."""

    source: Literal["official", "synthetic"] = "official"
    synthetic: SyntheticSizes = field(default_factory=SyntheticSizes)


@section
class ImagesOptions:
    """`acquire.images:` of CIFAR-10: where the JPEG archive is and how much of it is held out."""

    # A directory holding cifar10-train-jpg.tar.gz; empty: $CNNLAB_MIRROR/cifar10/ or $CNNLAB_MIRROR itself
    directory: str = ""
    holdout: float = 0.1  # share of each class held out as the evaluation split
    split_seed: int = 0  # seeds which images are held out

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise ValueError(f"images.holdout must be between 0 and 1, got {self.holdout}")


@section
class Cifar10Source:
    """`acquire:` of CIFAR-10: the official archive, the training images as JPEG files, or a stand-in."""

    source: Literal["official", "images", "synthetic"] = "official"
    images: ImagesOptions = field(default_factory=ImagesOptions)
    synthetic: SyntheticSizes = field(default_factory=SyntheticSizes)


@section
class ImageFolderSource:
    """`acquire:` of an image folder."""

    # A local directory; empty means $CNNLAB_MIRROR/<dataset>, so each machine can keep it elsewhere.
    source: str = ""


@section
class ImageFolderPrepare(PrepareOptions):
    """`prepare:` of an image folder: how images become tensors."""

    resize: int = 0  # shorter side resized to this many pixels first; 0 keeps the original size
    crop: int = 32  # then a centred square crop of this size (zero-padded if the image is smaller)
    test_fraction: float = 0.2  # only for a folder without train/ and valid/ (or test/)
    split_seed: int = 0
    on_bad_file: Literal["error", "skip"] = "error"  # skip: leave out unreadable files and count them
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

    def __post_init__(self) -> None:
        if self.crop < 1 or self.resize < 0:
            raise ValueError("crop must be positive and resize 0 or positive")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")


@section
class SpiralOptions:
    """`acquire:` of the course's generated 2-D spiral."""

    classes: int = 3
    points_per_class: int = 1000
    noise: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classes < 2 or self.points_per_class < 2:
            raise ValueError("classes and points_per_class must be at least 2")


# kind -> (its `acquire:` section, its `prepare:` section)
DATASET_KINDS: dict[str, tuple[type, type]] = {
    "mnist": (SourceOptions, PrepareOptions),
    "cifar10": (Cifar10Source, PrepareOptions),
    "imagefolder": (ImageFolderSource, ImageFolderPrepare),
    "spiral": (SpiralOptions, PrepareOptions),
}


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """One entry of `datasets:`, its options validated by its kind's sections."""

    name: str
    kind: str
    acquire: Any
    prepare: Any


def parse_dataset(name: str, data: Any) -> DatasetConfig:
    where = f"datasets.{name}"
    kinds = ", ".join(sorted(DATASET_KINDS))
    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{where}.kind: required key is missing; use one of {kinds}")
    kind = data["kind"]
    if kind not in DATASET_KINDS:
        raise ConfigError(f"{where}.kind: unknown dataset kind {kind!r}; use one of {kinds}")
    for key in data:
        if key not in ("kind", "acquire", "prepare"):
            raise ConfigError(f"{where}.{key}: unknown key; accepted keys: kind, acquire, prepare")
    acquire_options, prepare_options = DATASET_KINDS[kind]
    return DatasetConfig(
        name=name,
        kind=kind,
        acquire=parse_dataclass(acquire_options, data.get("acquire"), f"{where}.acquire"),
        prepare=parse_dataclass(prepare_options, data.get("prepare"), f"{where}.prepare"),
    )
