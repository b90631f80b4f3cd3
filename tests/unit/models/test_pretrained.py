"""Backbone weights: torchvision's file, verified by its published hash, or a one-line error saying where to put it."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import pretrained
from cnnlab.models.registry import build_model

VGG16_FILE = "vgg16-397923af.pth"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch.hub cache and no way out: downloads go to a proxy on a closed local port."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    for variable in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


def test_missing_weights_name_the_file_and_where_to_put_it(empty_hub):
    with pytest.raises(CnnlabError) as error:
        pretrained.locate_imagenet_weights("vgg16")
    message = str(error.value)
    assert "\n" not in message
    assert str(empty_hub / VGG16_FILE) in message
    assert f"https://download.pytorch.org/models/{VGG16_FILE}" in message
    assert "weights_file" in message and "weights: none" in message


def test_weights_whose_hash_does_not_match_are_refused(empty_hub):
    empty_hub.mkdir(parents=True)
    (empty_hub / VGG16_FILE).write_bytes(b"not the published file")
    with pytest.raises(CnnlabError, match=r"vgg16-397923af\.pth: SHA-256 .* does not start with 397923af"):
        pretrained.locate_imagenet_weights("vgg16")


def test_a_weights_file_given_in_params_must_exist(tmp_path):
    with pytest.raises(CnnlabError, match=r"backbone\.weights_file: .*missing\.pth does not exist; put vgg16-397923af"):
        pretrained.locate_imagenet_weights("vgg16", str(tmp_path / "missing.pth"))


def test_a_file_matching_its_published_hash_is_accepted(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"some weights")
    prefix = hashlib.sha256(b"some weights").hexdigest()[:8]
    pretrained.verify_weights(path, f"https://example.invalid/models/net-{prefix}.pth")
    with pytest.raises(CnnlabError):
        pretrained.verify_weights(path, "https://example.invalid/models/net-00000000.pth")


def test_vgg16_backbone_outputs_the_4096_features_its_last_layer_took():
    torch.manual_seed(0)
    backbone, replaced = pretrained.torchvision_backbone("vgg16", None)
    assert (replaced.in_features, replaced.out_features) == (4096, 1000)
    backbone.eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 224, 224)).shape == (1, 4096)


def test_a_pipeline_model_loses_its_last_linear_layer():
    model = build_model("lenet", (3, 32, 32), 10)
    backbone, width = pretrained.headless(model)
    assert width == 84
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 84)
    with pytest.raises(CnnlabError, match="no Linear layer"):
        pretrained.headless(nn.Sequential(nn.Conv2d(3, 4, 3)))
