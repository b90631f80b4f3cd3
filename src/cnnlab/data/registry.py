"""The dataset kinds a params.yaml `datasets:` entry can name.

A kind knows its acquire options, how to acquire its raw files (download, or
generate) and how to read them into tensors. Adding a dataset kind means
adding a module with those three things and one line in DATASET_KINDS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Splits:
    """Raw data read into memory: uint8 images (N,C,H,W) or float features (N,D)."""

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor
    class_names: tuple[str, ...]
    # The normalisation constants the course used for this data, if any.
    course_mean: tuple[float, ...] | None = None
    course_std: tuple[float, ...] | None = None
    skipped_files: tuple[str, ...] = ()  # unreadable files left out at the user's request

    @property
    def is_image(self) -> bool:
        return self.train_inputs.dtype == torch.uint8


@dataclass(frozen=True)
class PrepareOptions:
    """`prepare:` settings every dataset kind accepts."""

    permutation_seed: int = 0  # seeds the fixed pixel permutation of the permuted-pixel experiments


@dataclass(frozen=True)
class DatasetKind:
    name: str
    acquire_options: type  # dataclass of the `acquire:` settings in params.yaml (download stage)
    # (dataset name, acquire options, raw dir): download or generate the raw files.
    acquire: Callable[[str, Any, Path], list[str]]
    # (acquire options, prepare options, raw dir) -> tensors; never called on files that failed their md5.
    read: Callable[[Any, Any, Path], Splits]
    prepare_options: type = PrepareOptions  # dataclass of the `prepare:` settings (prepare stage)


def _kinds() -> dict[str, DatasetKind]:
    from cnnlab.data import cifar10, imagefolder, mnist, spiral

    return {kind.name: kind for kind in (mnist.KIND, cifar10.KIND, imagefolder.KIND, spiral.KIND)}


def dataset_kinds() -> list[str]:
    return sorted(_kinds())


def dataset_kind(name: str) -> DatasetKind:
    from cnnlab.errors import ConfigError

    kinds = _kinds()
    if name not in kinds:
        raise ConfigError(f"unknown dataset kind {name!r}; use one of {', '.join(sorted(kinds))}")
    return kinds[name]
