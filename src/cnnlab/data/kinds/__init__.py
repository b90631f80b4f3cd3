"""The dataset kinds a `datasets:` entry can name: one module each, found by the kind's name.

A kind's module has two functions:
  acquire(dataset, acquire_options, raw_dir) -> list[str]   download, copy or generate the raw files
                                                          (the download stage); returns where each came from
  read(acquire_options, prepare_options, raw_dir) -> Splits  the raw files as tensors (the prepare stage);
                                                          never called on files that failed their md5

A stage imports only its dataset's kind, by name: DVC then re-runs a dataset's stages when that kind's code
changes, and not when another kind's does (dvc.yaml lists `src/cnnlab/data/kinds/${item.kind}.py`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast

from cnnlab.config.datasets import DATASET_KINDS
from cnnlab.data.splits import Splits
from cnnlab.errors import ConfigError


class DatasetKind(Protocol):
    def acquire(self, dataset: str, options: Any, raw_dir: Path) -> list[str]: ...
    def read(self, options: Any, prepare: Any, raw_dir: Path) -> Splits: ...


def load_kind(name: str) -> DatasetKind:
    if name not in DATASET_KINDS:
        raise ConfigError(f"unknown dataset kind {name!r}; use one of {', '.join(sorted(DATASET_KINDS))}")
    return cast(DatasetKind, importlib.import_module(f"{__name__}.{name}"))
