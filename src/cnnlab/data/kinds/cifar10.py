"""CIFAR-10: torchvision's official python archive, or its training images as JPEG files.

Sources (`acquire.source`): `official`, the python archive torchvision
downloads (train and test splits as published); `images`, the 50,000
training images as an archive of <class>/<n>.jpg files (../shared/data's
cifar10-train-jpg.tar.gz), with a seeded share of each class held out as the
split the pipeline tests on; `synthetic`, a generated stand-in.

The official archive's batches are pickles. Nothing in them is unpickled unless the
archive matched its md5 at download and each batch matches torchvision's
per-batch md5 at read time, and even then the unpickler admits only the
numpy types those files contain, so a tampered mirror cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.config.datasets import Cifar10Source, ImagesOptions, PrepareOptions
from cnnlab.data import synthetic
from cnnlab.data.sources import MIRROR_ENV, RemoteFile, fetch_files, mirror_from_env, verify_md5
from cnnlab.data.splits import Splits
from cnnlab.errors import DataError

# torchvision.datasets.CIFAR10's URL and md5s (torchvision 0.29).
OFFICIAL_BASES = ("https://www.cs.toronto.edu/~kriz/",)
ARCHIVE = RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = (
    RemoteFile("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    RemoteFile("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    RemoteFile("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    RemoteFile("data_batch_4", "634d18415352ddfa80567beed471001a"),
    RemoteFile("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
)
TEST_BATCHES = (RemoteFile("test_batch", "40351d587109b95175f43aff81a1287e"),)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The course's VGG constants; its LeNet notebook used 0.5/0.5, set per experiment in params.yaml.
COURSE_MEAN, COURSE_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# The training images as JPEG files, <top>/<class>/<n>.jpg, class folders named as CLASS_NAMES.
IMAGES_ARCHIVE = RemoteFile("cifar10-train-jpg.tar.gz", "64bcba998a3ed7276af33098cf3488a4")
IMAGE_SIZE = 32
IMAGE_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)


try:  # numpy >= 2 moved the array reconstructor; the 2009 pickles name the old module
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds: dicts, lists, bytes, ints and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only numpy arrays and lists")
        return _ALLOWED_GLOBALS[(module, name)]


def load_batch(data: bytes, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,32,32) uint8 images and int64 labels from one batch file's bytes."""
    try:
        batch = BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    except Exception as error:  # a damaged pickle raises many types
        raise DataError(f"{where}: not a CIFAR batch ({type(error).__name__})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{where}: not a CIFAR batch (no data/labels)")
    images, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise DataError(f"{where}: data is not a uint8 array of N x 3072")
    if not isinstance(labels, list) or len(labels) != len(images) or not all(isinstance(x, int) for x in labels):
        raise DataError(f"{where}: labels are not {len(images)} integers")
    return torch.from_numpy(images.reshape(-1, 3, 32, 32).copy()), torch.tensor(labels, dtype=torch.int64)


def read_archive(archive: Path, batches: tuple[RemoteFile, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Check each batch's md5 inside the archive before parsing it; nothing is extracted to disk."""
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for batch in batches:
            member = f"{FOLDER}/{batch.name}"
            try:
                handle = tar.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise DataError(f"{archive}: has no {member}; delete it and re-run download@{archive.parent.name}")
            data = handle.read()
            actual = hashlib.md5(data).hexdigest()
            if actual != batch.md5:
                raise DataError(f"{archive}:{member}: md5 {actual}, expected {batch.md5}; refusing to parse it")
            batch_images, batch_labels = load_batch(data, f"{archive}:{member}")
            images.append(batch_images)
            labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


def read_image_archive(archive: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every <class>/<file>.jpg of the archive as (N,3,32,32) uint8, in sorted path order, and its labels."""
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    with tarfile.open(archive, "r:*") as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")), key=lambda m: m.name
        )
        for member in members:
            class_name = Path(member.name).parent.name
            if class_name not in CLASS_NAMES:
                raise DataError(
                    f"{archive}:{member.name}: folder {class_name!r} is not a CIFAR-10 class ({', '.join(CLASS_NAMES)})"
                )
            handle = tar.extractfile(member)
            try:
                with Image.open(io.BytesIO(handle.read() if handle else b"")) as opened:
                    pixels = np.asarray(opened.convert("RGB"))
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(
                    f"{archive}:{member.name}: not a readable image ({error}); "
                    f"delete {archive} and re-run download@{archive.parent.name}"
                ) from None
            if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise DataError(
                    f"{archive}:{member.name}: {pixels.shape[1]}x{pixels.shape[0]} pixels, "
                    f"CIFAR-10 images are {IMAGE_SIZE}x{IMAGE_SIZE}"
                )
            images.append(pixels)
            labels.append(CLASS_NAMES.index(class_name))
    if not images:
        raise DataError(f"{archive}: holds no <class>/<image>.jpg files")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def hold_out(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out): round(fraction x n) of each class's n images, drawn by `seed`, held out."""
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in range(int(targets.max()) + 1):
        members = (targets == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = round(len(members) * fraction)
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def _images_bases(options: ImagesOptions) -> tuple[tuple[str, ...], str | None]:
    """Where to look for the JPEG archive: the configured directory, else the mirror."""
    if options.directory:
        return (str(Path(options.directory).expanduser()),), None
    mirror = mirror_from_env()
    if not mirror:
        raise DataError(
            f"dataset 'cifar10': source images needs {IMAGES_ARCHIVE.name}; set "
            f"datasets.cifar10.acquire.images.directory or {MIRROR_ENV} to the directory holding it"
        )
    return (mirror,), mirror  # $CNNLAB_MIRROR/cifar10/ first, then $CNNLAB_MIRROR itself


def acquire(dataset: str, options: Cifar10Source, raw_dir: Path) -> list[str]:
    if options.source == "synthetic":
        return synthetic.write_synthetic(raw_dir, options.synthetic, num_classes=10, channels=3, size=32)
    if options.source == "images":
        bases, mirror = _images_bases(options.images)
        return fetch_files(dataset, (IMAGES_ARCHIVE,), bases, raw_dir, mirror)
    offline = (
        f"use the training images as JPEG files instead: -S datasets.{dataset}.acquire.source=images, with "
        f"{IMAGES_ARCHIVE.name} in {MIRROR_ENV} or datasets.{dataset}.acquire.images.directory"
    )
    return fetch_files(dataset, (ARCHIVE,), OFFICIAL_BASES, raw_dir, mirror_from_env(), offline)


def read(options: Cifar10Source, prepare: PrepareOptions, raw_dir: Path) -> Splits:
    if options.source == "synthetic":
        tensors = synthetic.read_synthetic(raw_dir)
    elif options.source == "images":
        archive = raw_dir / IMAGES_ARCHIVE.name
        verify_md5(archive, IMAGES_ARCHIVE.md5)
        images, labels = read_image_archive(archive)
        kept, held = hold_out(labels, options.images.holdout, options.images.split_seed)
        tensors = (images[kept], labels[kept], images[held], labels[held])
    else:
        archive = raw_dir / ARCHIVE.name
        verify_md5(archive, ARCHIVE.md5)
        tensors = (*read_archive(archive, TRAIN_BATCHES), *read_archive(archive, TEST_BATCHES))
    return Splits(
        *tensors, class_names=CLASS_NAMES, origin=options.source, course_mean=COURSE_MEAN, course_std=COURSE_STD
    )
