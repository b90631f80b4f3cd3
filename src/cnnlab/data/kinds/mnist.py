"""MNIST: the four official IDX files, or a synthetic stand-in of the same shape."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from cnnlab.config.datasets import PrepareOptions, SourceOptions
from cnnlab.data import synthetic
from cnnlab.data.sources import RemoteFile, fetch_files, mirror_from_env, verify_md5
from cnnlab.data.splits import Splits
from cnnlab.errors import DataError

# The URLs and md5s torchvision.datasets.MNIST checks (torchvision 0.29), kept
# here so that downloading needs no torchvision import.
OFFICIAL_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
COURSE_MEAN, COURSE_STD = (0.1307,), (0.3081,)
IMAGE_SHAPE = (1, 28, 28)
CLASS_NAMES = tuple(str(d) for d in range(10))


def acquire(dataset: str, options: SourceOptions, raw_dir: Path) -> list[str]:
    if options.source == "synthetic":
        return synthetic.write_synthetic(raw_dir, options.synthetic, num_classes=10, channels=1, size=28)
    stand_in = f"run on generated MNIST-shaped data: -S datasets.{dataset}.acquire.source=synthetic (make demo)"
    return fetch_files(dataset, FILES, OFFICIAL_BASES, raw_dir, mirror_from_env(), stand_in)


def read_idx(path: Path) -> torch.Tensor:
    """Parse a gzipped IDX file (the format of the official MNIST files)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file; delete it and re-run the download stage")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: holds {body.size} values, header says {shape}; delete it and re-download")
    return torch.from_numpy(body.reshape(shape).copy())


def read(options: SourceOptions, prepare: PrepareOptions, raw_dir: Path) -> Splits:
    if options.source == "synthetic":
        tensors = synthetic.read_synthetic(raw_dir)
    else:
        for remote in FILES:
            verify_md5(raw_dir / remote.name, remote.md5)
        images = [read_idx(raw_dir / FILES[i].name).unsqueeze(1) for i in (0, 2)]
        labels = [read_idx(raw_dir / FILES[i].name).long() for i in (1, 3)]
        tensors = (images[0], labels[0], images[1], labels[1])
    return Splits(
        *tensors, class_names=CLASS_NAMES, origin=options.source, course_mean=COURSE_MEAN, course_std=COURSE_STD
    )
