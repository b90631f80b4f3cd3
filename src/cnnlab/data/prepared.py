"""The prepare stage's files: uint8 tensors per split, stats, pixel permutation.

Layout of data/prepared/<dataset>/:
  train.pt, test.pt   {"inputs": uint8 (N,C,H,W) or float (N,D), "targets": int64 (N,)}
  meta.json           class names, input shape, train-split mean/std, the course's constants
  permutation.pt      {"pixels": int64 (H*W,)}: the fixed permutation, images only
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.splits import Splits
from cnnlab.data.tensorfiles import load_tensor_file
from cnnlab.errors import DataError
from cnnlab.io import read_json, replaced_atomically

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    kind: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    is_image: bool
    train_mean: tuple[float, ...]
    train_std: tuple[float, ...]
    course_mean: tuple[float, ...] | None
    course_std: tuple[float, ...] | None
    sizes: dict[str, int]
    origin: str  # see splits.Origin
    skipped_files: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetMeta:
        tuples = ("class_names", "input_shape", "train_mean", "train_std", "course_mean", "course_std", "skipped_files")
        values: dict[str, Any] = {k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class PreparedData:
    meta: DatasetMeta
    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor
    pixel_permutation: torch.Tensor | None


def channel_stats(inputs: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (images, on the [0, 1] scale) or per-feature mean and std."""
    if inputs.dtype == torch.uint8:
        values = inputs.transpose(0, 1).reshape(inputs.shape[1], -1).double() / 255.0
    else:
        values = inputs.double().T
    return tuple(values.mean(dim=1).tolist()), tuple(values.std(dim=1).tolist())


def pixel_permutation(height: int, width: int, seed: int) -> torch.Tensor:
    """The fixed permutation of the course's permuted-pixel experiments (torch.randperm(784))."""
    return torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))


def write_prepared(
    name: str,
    kind: str,
    splits: Splits,
    out_dir: Path,
    permutation_seed: int | None,
    extra_json: dict[str, Any] | None = None,
) -> DatasetMeta:
    """Write the prepare stage's outputs into `out_dir` all at once or not at all.

    `extra_json` maps more file names to contents written beside them (e.g. what made the data).
    """
    mean, std = channel_stats(splits.train_inputs)
    meta = DatasetMeta(
        name=name,
        kind=kind,
        class_names=splits.class_names,
        input_shape=tuple(splits.train_inputs.shape[1:]),
        is_image=splits.is_image,
        train_mean=mean,
        train_std=std,
        course_mean=splits.course_mean,
        course_std=splits.course_std,
        sizes={"train": len(splits.train_targets), "test": len(splits.test_targets)},
        origin=splits.origin,
        skipped_files=splits.skipped_files,
    )
    with replaced_atomically(out_dir) as tmp:
        tmp.mkdir(parents=True)
        torch.save({"inputs": splits.train_inputs.contiguous(), "targets": splits.train_targets}, tmp / "train.pt")
        torch.save({"inputs": splits.test_inputs.contiguous(), "targets": splits.test_targets}, tmp / "test.pt")
        if splits.is_image and permutation_seed is not None:
            height, width = meta.input_shape[-2:]
            torch.save({"pixels": pixel_permutation(height, width, permutation_seed)}, tmp / "permutation.pt")
        (tmp / "meta.json").write_text(json.dumps(meta.__dict__, indent=2) + "\n")
        for file_name, content in (extra_json or {}).items():
            (tmp / file_name).write_text(json.dumps(content, indent=2) + "\n")
    return meta


def check_learnable(name: str, splits: Splits) -> None:
    """Refuse data no classifier can learn from, before it is written: one class, or an input channel
    (a feature, for non-image data) with one value throughout the training split (normalising divides by
    its zero spread)."""
    present = sorted(set(splits.train_targets.tolist()))
    if len(splits.class_names) < 2 or len(present) < 2:
        found = ", ".join(splits.class_names[i] for i in present) or "none"
        raise DataError(
            f"dataset {name!r}: its training split holds one class ({found}); a classifier needs "
            "at least two: add a folder of images for another class"
        )
    _, std = channel_stats(splits.train_inputs)
    flat = [i for i, spread in enumerate(std) if spread == 0]
    if flat:
        what = "channel" if splits.is_image else "feature"
        raise DataError(
            f"dataset {name!r}: {what} {flat[0]} has the same value in every training sample "
            f"(zero variance), which normalisation would divide by; check the source files"
        )


def load_prepared(prepared_dir: Path) -> PreparedData:
    name = prepared_dir.name
    how = f"dvc repro prepare@{name}"
    if not (prepared_dir / "meta.json").is_file():
        raise DataError(f"{prepared_dir / 'meta.json'}: missing; run `{how}` first")
    meta = DatasetMeta.from_json(read_json(prepared_dir / "meta.json"))
    train, test = (load_tensor_file(prepared_dir / f"{split}.pt", how) for split in SPLITS)
    permutation = None
    if (prepared_dir / "permutation.pt").is_file():
        permutation = load_tensor_file(prepared_dir / "permutation.pt", how)["pixels"]
    return PreparedData(meta, train["inputs"], train["targets"], test["inputs"], test["targets"], permutation)
