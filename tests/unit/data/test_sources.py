"""Official files from a mirror (a directory or a URL), checked by md5: a damaged file is named, deleted, never parsed."""

from __future__ import annotations

import shutil

import pytest

from cnnlab.config.datasets import PrepareOptions, SourceOptions
from cnnlab.data.kinds import mnist
from cnnlab.data.sources import fetch_files
from cnnlab.errors import DataError
from conftest import SHARED_DATA


def test_mirror_directory_is_accepted_by_md5(tmp_path):
    dest = tmp_path / "raw"
    origins = fetch_files("mnist", mnist.FILES, (), dest, str(SHARED_DATA))
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.name for f in mnist.FILES)
    assert all(str(SHARED_DATA / "mnist") in origin for origin in origins)
    splits = mnist.read(SourceOptions(), PrepareOptions(), dest)
    assert splits.train_inputs.shape == (60000, 1, 28, 28) and splits.test_targets.shape == (10000,)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_mirror_file_is_named_deleted_and_never_parsed(tmp_path, damage):
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED_DATA / "mnist", mirror / "mnist")
    bad = mirror / "mnist" / "train-labels-idx1-ubyte.gz"
    data = bad.read_bytes()
    bad.chmod(0o644)
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:100] + b"\x00" + data[101:])
    dest = tmp_path / "raw"
    with pytest.raises(DataError) as raised:
        fetch_files("mnist", mnist.FILES, (), dest, str(mirror))
    message = str(raised.value)
    assert "train-labels-idx1-ubyte.gz" in message and "md5" in message and "deleted" in message
    assert not (dest / "train-labels-idx1-ubyte.gz").exists()
    assert not list(dest.glob(".*partial"))
    # A stale bad copy already in the raw directory is refused by the prepare side too.
    (dest / "train-labels-idx1-ubyte.gz").write_bytes(bad.read_bytes())
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: md5 .* expected d53e105ee54ea40749a09fcbcd1e9432"):
        mnist.read(SourceOptions(), PrepareOptions(), dest)


def test_mirror_given_as_a_url_is_downloaded_and_checked(tmp_path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SHARED_DATA))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        origins = fetch_files("mnist", mnist.FILES, (), tmp_path / "raw", url)
    finally:
        server.shutdown()
    assert all(origin.split(": ", 1)[1].startswith(url + "mnist/") for origin in origins)
    assert len(list((tmp_path / "raw").iterdir())) == 4
