"""Image folders: layouts, decoding once to uint8 tensors, and clear errors for bad files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from cnnlab.config.datasets import ImageFolderPrepare, ImageFolderSource
from cnnlab.data.kinds import imagefolder
from cnnlab.errors import DataError
from conftest import SHARED_DATA, committed_params_file, write_image_folder


def test_folder_without_splits_is_split_by_seeded_fraction(tmp_path):
    folder = write_image_folder(tmp_path / "shapes", per_class=8)
    options = ImageFolderPrepare(resize=40, crop=32, test_fraction=0.25, split_seed=1)
    splits = imagefolder.read(ImageFolderSource(), options, folder)
    assert splits.class_names == ("circles", "squares")
    assert splits.train_inputs.shape == (12, 3, 32, 32) and splits.train_inputs.dtype == torch.uint8
    assert splits.test_inputs.shape == (4, 3, 32, 32)
    assert splits.test_targets.tolist().count(0) == 2
    again = imagefolder.read(ImageFolderSource(), options, folder)
    assert torch.equal(splits.test_inputs, again.test_inputs), "the split is seeded"


def test_train_and_valid_folders_are_used_as_given(tmp_path):
    write_image_folder(tmp_path / "data" / "train", per_class=5)
    write_image_folder(tmp_path / "data" / "valid", per_class=3)
    splits = imagefolder.read(ImageFolderSource(), ImageFolderPrepare(crop=24), tmp_path / "data")
    assert len(splits.train_targets) == 10 and len(splits.test_targets) == 6
    assert splits.train_inputs.shape[1:] == (3, 24, 24)


def test_corrupt_image_gets_a_clear_error_naming_it(tmp_path):
    folder = write_image_folder(tmp_path / "shapes", per_class=4)
    bad = folder / "squares" / "squares_2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG
    with pytest.raises(DataError) as raised:
        imagefolder.read(ImageFolderSource(), ImageFolderPrepare(), folder)
    message = str(raised.value)
    assert message.startswith(f"{bad}: cannot be decoded as an image")
    assert "on_bad_file: skip" in message and "\n" not in message


def test_non_image_file_is_an_error_unless_skipped_and_counted(tmp_path):
    folder = write_image_folder(tmp_path / "shapes", per_class=4)
    (folder / "circles" / "notes.txt").write_text("not an image")
    broken = folder / "squares" / "squares_0.png"
    broken.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"notes.txt: not an image file \(extension .txt\)"):
        imagefolder.read(ImageFolderSource(), ImageFolderPrepare(), folder)
    splits = imagefolder.read(ImageFolderSource(), ImageFolderPrepare(on_bad_file="skip", test_fraction=0.25), folder)
    assert sorted(p.rsplit("/", 1)[1] for p in splits.skipped_files) == ["notes.txt", "squares_0.png"]
    assert len(splits.train_targets) + len(splits.test_targets) == 7


def test_acquire_copies_the_folder_from_the_mirror(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "mirror" / "shapes", per_class=2)
    monkeypatch.setenv("CNNLAB_MIRROR", str(tmp_path / "mirror"))
    origins = imagefolder.acquire("shapes", ImageFolderSource(), tmp_path / "raw" / "shapes")
    assert origins == [f"4 files copied from {tmp_path / 'mirror' / 'shapes'}"]
    monkeypatch.delenv("CNNLAB_MIRROR")
    with pytest.raises(DataError, match=r"set datasets\.shapes\.acquire\.source or CNNLAB_MIRROR .*docs/data\.md says where"):
        imagefolder.acquire("shapes", ImageFolderSource(), tmp_path / "raw2")


@pytest.mark.slow
def test_real_cats_and_dogs_folder(tmp_path):
    """The real photos of ../shared/data/catsdogs, decoded at the zoo's 32x32 (`make test-slow`)."""
    if not (SHARED_DATA / "catsdogs").is_dir():
        pytest.skip("no ../shared/data/catsdogs on this machine")
    raw = tmp_path / "catsdogs"
    shutil.copytree(SHARED_DATA / "catsdogs", raw)
    splits = imagefolder.read(ImageFolderSource(), ImageFolderPrepare(resize=36, crop=32), raw)
    assert splits.class_names == ("cats", "dogs")
    assert splits.train_inputs.shape == (400, 3, 32, 32) and splits.test_inputs.shape == (200, 3, 32, 32)
    assert splits.train_targets.bincount().tolist() == [200, 200]


def test_stages_load_params_without_importing_torchvision(tmp_path):
    # Every stage parses params.yaml, which registers this reader; torchvision (and the
    # torch._dynamo it loads) would add seconds to each stage that never decodes an image.
    code = ("import sys; from cnnlab.config.params import load_params; import cnnlab.pipeline.train, "
            "cnnlab.pipeline.evaluate, cnnlab.data.kinds.imagefolder; "
            f"load_params({str(committed_params_file(tmp_path))!r}); print(sorted(m for m in sys.modules if m.startswith('torchvision')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_link_loop_in_the_folder_is_refused_in_one_line_naming_the_link(tmp_path):
    """`ln -s .. loop` inside a class folder: copying would follow it until the path is too long."""
    folder = write_image_folder(tmp_path / "shapes", per_class=2)
    loop = folder / "circles" / "loop"
    loop.symlink_to("..")
    with pytest.raises(DataError) as raised:
        imagefolder.acquire("shapes", ImageFolderSource(source=str(folder)), tmp_path / "raw")
    assert str(raised.value) == f"{loop}: a symbolic link back to {folder}, which contains it (a loop); remove the link"
    assert not (tmp_path / "raw").exists(), "refused before copying anything"


def test_links_to_images_kept_elsewhere_are_followed_and_a_dangling_one_is_named(tmp_path):
    folder = write_image_folder(tmp_path / "shapes", per_class=2)
    elsewhere = write_image_folder(tmp_path / "more", per_class=1)
    (folder / "squares" / "more").symlink_to(elsewhere / "squares")
    imagefolder.acquire("shapes", ImageFolderSource(source=str(folder)), tmp_path / "raw")
    assert (tmp_path / "raw" / "squares" / "more").is_dir() and not (tmp_path / "raw" / "squares" / "more").is_symlink()
    dangling = folder / "circles" / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"gone.png: a symbolic link to .*nowhere.png, which does not exist; remove"):
        imagefolder.acquire("shapes", ImageFolderSource(source=str(folder)), tmp_path / "raw2")
