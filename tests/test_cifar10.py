"""CIFAR-10's pickled batches are never parsed unverified, and the unpickler admits only numpy arrays."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import cifar10
from cnnlab.data.registry import PrepareOptions
from cnnlab.data.synthetic import SourceOptions
from cnnlab.errors import DataError


def batch_bytes(count: int = 4) -> bytes:
    rng = np.random.default_rng(0)
    batch = {b"batch_label": b"testing", b"labels": [int(x) for x in rng.integers(0, 10, count)],
             b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), b"filenames": [b"a.png"] * count}
    return pickle.dumps(batch, protocol=4)


class RunsCode:
    """What an attacker would put in a tampered batch: unpickling it calls os.system."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_loader_reads_a_well_formed_batch():
    images, labels = cifar10.load_batch(batch_bytes(), "batch")
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.shape == (4,)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({b"data": RunsCode(), b"labels": []}, protocol=2),
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [Path("x")]}, protocol=4),
        pickle.dumps(torch.zeros(3), protocol=4),
    ],
    ids=["os.system", "pathlib", "torch"],
)
def test_loader_refuses_any_other_type(payload):
    with pytest.raises(DataError, match="refusing to unpickle"):
        cifar10.load_batch(payload, "tampered batch")


def test_loader_refuses_wrong_shapes():
    bad = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=4)
    with pytest.raises(DataError, match="not a uint8 array of N x 3072"):
        cifar10.load_batch(bad, "batch")


def write_archive(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_batch_whose_md5_does_not_match_is_refused_before_it_is_parsed(tmp_path):
    # The batch is a valid pickle of a malicious object; if it were parsed, find_class would refuse it
    # with "refusing to unpickle". The md5 check must stop it first.
    evil = pickle.dumps(RunsCode(), protocol=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_archive(archive, {"data_batch_1": evil})
    with pytest.raises(DataError) as raised:
        cifar10.read_archive(archive, cifar10.TRAIN_BATCHES[:1])
    message = str(raised.value)
    assert "data_batch_1: md5" in message and "expected c99cafc152244af753f735de768cd75f" in message
    assert "refusing to parse it" in message and "unpickle" not in message


def test_archive_whose_md5_does_not_match_is_refused_by_prepare(tmp_path):
    raw = tmp_path / "cifar10"
    raw.mkdir()
    write_archive(raw / cifar10.ARCHIVE.name, {"data_batch_1": batch_bytes()})
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: md5 .* expected c58f30108f718f92721af3b95e74349a"):
        cifar10.read(SourceOptions(), PrepareOptions(), raw)


def test_batches_with_matching_md5_are_read(tmp_path):
    import hashlib

    data = batch_bytes(3)
    archive = tmp_path / "archive.tar.gz"
    write_archive(archive, {"data_batch_1": data})
    expected = (cifar10.RemoteFile("data_batch_1", hashlib.md5(data).hexdigest()),)
    images, labels = cifar10.read_archive(archive, expected)
    assert images.shape == (3, 3, 32, 32) and len(labels) == 3


def test_offline_download_names_the_archive_and_the_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    with pytest.raises(DataError) as raised:
        cifar10.acquire("cifar10", SourceOptions(), tmp_path / "raw")
    message = str(raised.value)
    assert "cifar-10-python.tar.gz" in message and "https://www.cs.toronto.edu/~kriz/" in message
    assert "CNNLAB_MIRROR" in message
