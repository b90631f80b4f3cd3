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

from cnnlab.config.datasets import Cifar10Source as SourceOptions
from cnnlab.config.datasets import PrepareOptions
from cnnlab.data.kinds import cifar10
from cnnlab.errors import DataError
from conftest import committed_params


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
    assert "\n" not in message
    assert "cifar-10-python.tar.gz" in message and "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "Fix: connect to the internet, or set CNNLAB_MIRROR to a directory or URL holding cifar10/<file name>" in message
    assert "; or use the training images as JPEG files instead: -S datasets.cifar10.acquire.source=images" in message


def test_the_default_source_is_the_official_archive_with_its_test_split():
    """What a fresh machine with internet gets: torchvision's archive, not a file only our lab has."""
    assert SourceOptions().source == "official"
    assert committed_params()["datasets"]["cifar10"]["acquire"]["source"] == "official"


# --- source: images (the training images as JPEG files) ----------------------------------------------


def write_jpeg_archive(path: Path, per_class: dict[str, int], size: int = 32) -> Path:
    """An archive in the layout of cifar10-train-jpg.tar.gz: top/<class>/NNNN.jpg, each image one flat colour."""
    from PIL import Image

    with tarfile.open(path, "w:gz") as tar:
        for label, (name, count) in enumerate(per_class.items()):
            for i in range(count):
                buffer = io.BytesIO()
                Image.new("RGB", (size, size), (20 * label, 8 * i, 100)).save(buffer, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"cifar10-train/{name}/{i:04d}.jpg")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


def test_image_archive_is_read_in_path_order_with_labels_from_class_folders(tmp_path):
    archive = write_jpeg_archive(tmp_path / "a.tar.gz", {"truck": 2, "airplane": 3})
    images, labels = cifar10.read_image_archive(archive)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 0, 9, 9]  # airplane before truck, each by its CIFAR-10 label
    assert abs(int(images[1, 1].float().mean()) - 8) <= 3  # airplane/0001.jpg: green 8, through JPEG


def test_image_archive_refuses_unknown_classes_and_wrong_sizes(tmp_path):
    with pytest.raises(DataError, match=r"folder 'cats' is not a CIFAR-10 class"):
        cifar10.read_image_archive(write_jpeg_archive(tmp_path / "a.tar.gz", {"cats": 1}))
    with pytest.raises(DataError, match=r"0000.jpg: 40x40 pixels, CIFAR-10 images are 32x32"):
        cifar10.read_image_archive(write_jpeg_archive(tmp_path / "b.tar.gz", {"cat": 1}, size=40))


def test_hold_out_takes_the_same_share_of_every_class_by_seed():
    targets = torch.arange(10).repeat_interleave(50)
    kept, held = cifar10.hold_out(targets, 0.1, seed=0)
    assert torch.bincount(targets[held]).tolist() == [5] * 10 and len(kept) == 450
    assert set(kept.tolist()).isdisjoint(held.tolist()) and len(set(kept.tolist()) | set(held.tolist())) == 500
    again, _ = cifar10.hold_out(targets, 0.1, seed=0)
    other, _ = cifar10.hold_out(targets, 0.1, seed=1)
    assert torch.equal(again, kept) and not torch.equal(other, kept)


def test_images_source_is_found_through_the_mirror_and_checked_by_md5(tmp_path, monkeypatch):
    """The archive's md5 is the published one: a different file is refused at download, naming both."""
    (tmp_path / "mirror").mkdir()
    write_jpeg_archive(tmp_path / "mirror" / cifar10.IMAGES_ARCHIVE.name, {"cat": 1})
    monkeypatch.setenv("CNNLAB_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(DataError) as raised:
        cifar10.acquire("cifar10", SourceOptions(source="images"), tmp_path / "raw")
    message = str(raised.value)
    assert f"{tmp_path}/mirror/{cifar10.IMAGES_ARCHIVE.name}" in message
    assert f"expected {cifar10.IMAGES_ARCHIVE.md5}" in message and "\n" not in message


def test_images_source_without_a_place_to_look_names_the_two_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    with pytest.raises(DataError, match=r"cifar10-train-jpg.tar.gz; set datasets.cifar10.acquire.images.directory "
                                        r"or CNNLAB_MIRROR"):
        cifar10.acquire("cifar10", SourceOptions(source="images"), tmp_path / "raw")
