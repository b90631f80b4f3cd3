"""Any folder of class subfolders, decoded once into uint8 tensors.

Accepted layouts (class names are the subfolder names, sorted):
  SOURCE/train/<class>/*  and  SOURCE/valid/<class>/* (or test/)
  SOURCE/<class>/*        split into train/test by a seeded fraction

The download stage copies the folder into data/raw/<dataset> (so it is in
DVC's cache and remote); the prepare stage decodes, resizes and crops every
image once. Training never touches an image file.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnlab.config.datasets import ImageFolderPrepare, ImageFolderSource
from cnnlab.data.sources import MIRROR_ENV, mirror_from_env
from cnnlab.data.splits import Splits
from cnnlab.errors import DataError
from cnnlab.io import replaced_atomically

TEST_SPLIT_NAMES = ("valid", "test")


def source_folder(dataset: str, options: ImageFolderSource) -> Path:
    if options.source:
        folder = Path(options.source).expanduser()
    elif mirror_from_env() and "://" not in (mirror_from_env() or ""):
        folder = Path(mirror_from_env() or "") / dataset
    else:
        raise DataError(
            f"dataset {dataset!r}: no image folder given; set datasets.{dataset}.acquire.source "
            f"or {MIRROR_ENV} to a directory holding {dataset}/<class>/<images> "
            f"(docs/data.md says where to get the course's cats-vs-dogs photos)"
        )
    if not folder.is_dir():
        raise DataError(f"dataset {dataset!r}: {folder} is not a directory; point acquire.source or {MIRROR_ENV} at it")
    return folder


def refuse_broken_links(folder: Path) -> None:
    """Symbolic links are followed (a class folder may link to images kept elsewhere), so refuse, before
    copying anything, a link to nothing and a link back into the folders that lead to it: a loop that
    copying would follow until the path is too long."""

    def visit(directory: Path, chain: frozenset[Path]) -> None:
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                continue  # the copy leaves hidden files out too
            if entry.is_symlink():
                target = entry.resolve()
                if not target.exists():
                    raise DataError(f"{entry}: a symbolic link to {target}, which does not exist; remove the link")
                if target in chain:
                    raise DataError(
                        f"{entry}: a symbolic link back to {target}, which contains it (a loop); remove the link"
                    )
            if entry.is_dir():
                visit(entry, chain | {entry.resolve()})

    visit(folder, frozenset({folder.resolve()}))


def acquire(dataset: str, options: ImageFolderSource, raw_dir: Path) -> list[str]:
    folder = source_folder(dataset, options)
    refuse_broken_links(folder)
    with replaced_atomically(raw_dir) as tmp:
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns(".*"))
    count = sum(1 for p in raw_dir.rglob("*") if p.is_file())
    return [f"{count} files copied from {folder}"]


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class subfolders; expected {root}/<class>/<images>")
    return dirs


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _find_splits(raw_dir: Path, options: ImageFolderPrepare) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Class names and (file, label) lists per split."""
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: missing; run `dvc repro download@{raw_dir.name}` first")
    if (raw_dir / "train").is_dir():
        test_dirs = [raw_dir / name for name in TEST_SPLIT_NAMES if (raw_dir / name).is_dir()]
        if not test_dirs:
            raise DataError(f"{raw_dir}: has train/ but no valid/ or test/ folder beside it")
        classes = [d.name for d in _class_dirs(raw_dir / "train")]
        test_classes = [d.name for d in _class_dirs(test_dirs[0])]
        if test_classes != classes:
            raise DataError(f"{test_dirs[0]}: classes {test_classes} differ from train/'s {classes}")
        given = {
            split: [(f, label) for label, name in enumerate(classes) for f in _files(root / name)]
            for split, root in (("train", raw_dir / "train"), ("test", test_dirs[0]))
        }
        return classes, given
    classes = [d.name for d in _class_dirs(raw_dir)]
    rng = random.Random(options.split_seed)
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, name in enumerate(classes):
        files = _files(raw_dir / name)
        rng.shuffle(files)
        n_test = max(1, round(len(files) * options.test_fraction))
        splits["test"] += [(f, label) for f in files[:n_test]]
        splits["train"] += [(f, label) for f in files[n_test:]]
    return classes, splits


def split_sizes(folder: Path, options: ImageFolderPrepare) -> tuple[int, int]:
    """(train, test) files that prepare will split `folder` into, found without decoding any."""
    _, splits = _find_splits(folder, options)
    return len(splits["train"]), len(splits["test"])


def decode(path: Path, options: ImageFolderPrepare) -> torch.Tensor:
    """One image as uint8 (3, crop, crop); raises DataError naming the file if it is not a readable image."""
    if path.suffix.lower() not in options.extensions:
        raise DataError(
            f"{path}: not an image file (extension {path.suffix or 'none'}); remove it or set prepare.on_bad_file: skip"
        )
    try:
        with Image.open(path) as opened:
            pixels = np.asarray(opened.convert("RGB"))  # convert() decodes fully: truncation shows here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:80]
        raise DataError(
            f"{path}: cannot be decoded as an image ({reason}); remove or replace it, or set prepare.on_bad_file: skip"
        ) from None
    # Imported here: importing torchvision costs every stage seconds (it loads torch._dynamo), and
    # only the prepare stage of an image folder needs it.
    from torchvision.transforms.v2 import functional as TF

    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    if options.resize:
        image = TF.resize(image, [options.resize], antialias=True)
    return TF.center_crop(image, [options.crop, options.crop])


def _decode_split(
    files: list[tuple[Path, int]], options: ImageFolderPrepare, skipped: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path, label in files:
        try:
            images.append(decode(path, options))
        except DataError:
            if options.on_bad_file == "error":
                raise
            skipped.append(str(path))
            continue
        labels.append(label)
    if not images:
        raise DataError("no readable images in a split; check the folder's contents")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def read(options: ImageFolderSource, prepare: ImageFolderPrepare, raw_dir: Path) -> Splits:
    classes, files = _find_splits(raw_dir, prepare)
    skipped: list[str] = []
    train = _decode_split(files["train"], prepare, skipped)
    test = _decode_split(files["test"], prepare, skipped)
    if skipped:
        print(
            f"{raw_dir.name}: skipped {len(skipped)} unreadable file(s): {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else "")
        )
    return Splits(*train, *test, class_names=tuple(classes), origin="folder", skipped_files=tuple(skipped))
