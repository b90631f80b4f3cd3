"""Backbones for transfer learning: torchvision's ImageNet VGG16, or a model this pipeline trained.

A backbone maps a batch of images to one feature vector per image: for
VGG16 the 4096 activations that feed its last classifier layer
(classifier[6], which the course replaces by Linear(4096, 2)). With
`weights: imagenet` the state dict is torchvision's file, taken from
torch.hub's cache (or `weights_file`), and checked against the SHA-256
prefix torchvision publishes in its file name before it is loaded.
"""

from __future__ import annotations

import hashlib
import re
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError, DataError

DOWNLOAD_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class TorchvisionBackbone:
    """What cnnlab needs to know of one torchvision architecture."""

    builder: str  # torchvision.models function
    weights_enum: str  # torchvision.models weights class
    weights_member: str
    feature_layer: str  # the module replaced by Identity to expose the features
    feature_dim: int


TORCHVISION_BACKBONES = {
    "vgg16": TorchvisionBackbone("vgg16", "VGG16_Weights", "IMAGENET1K_V1", "classifier.6", 4096),
}


def weights_of(name: str) -> Any:
    import torchvision.models

    spec = TORCHVISION_BACKBONES[name]
    return getattr(getattr(torchvision.models, spec.weights_enum), spec.weights_member)


def published_hash_prefix(url: str) -> str:
    """torchvision's convention: the file name ends in the first hex digits of its SHA-256."""
    match = re.search(r"-([a-f0-9]{6,})\.", url.rsplit("/", 1)[-1])
    if match is None:  # a bug in the table above, not user input
        raise ValueError(f"{url} carries no hash in its file name")
    return match.group(1)


def cached_weights_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(path: Path, url: str) -> str:
    """The file's SHA-256, after checking it starts with the prefix torchvision publishes for `url`."""
    expected = published_hash_prefix(url)
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise DataError(
            f"{path}: SHA-256 {actual[:16]}... does not start with {expected}, the hash torchvision publishes for "
            f"{url.rsplit('/', 1)[-1]}; delete it and download it again from {url}"
        )
    return actual


def locate_imagenet_weights(name: str, weights_file: str = "") -> tuple[Path, str]:
    """The verified local file of `name`'s ImageNet weights and its SHA-256, downloaded into torch.hub's cache
    if it is not there and the network allows.

    Raises a one-line error naming the expected file and where to put it when
    there is none and no network; called before any other work of a stage.
    """
    url = weights_of(name).url
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"backbone.weights_file: {path} does not exist; put {url.rsplit('/', 1)[-1]} "
                f"(from {url}) there, or clear weights_file to use torch.hub's cache"
            )
        return path, verify_weights(path, url)
    path = cached_weights_path(url)
    if not path.is_file():
        _download(url, path)
    return path, verify_weights(path, url)


def _download(url: str, path: Path) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=published_hash_prefix(url), progress=False)
    except (OSError, urllib.error.URLError, RuntimeError) as error:
        path.unlink(missing_ok=True)
        raise DataError(
            f"ImageNet weights {path.name} are not on this machine and could not be downloaded ({error}); "
            f"put {url} at {path} (torch.hub's cache), or set backbone.weights_file to a copy, "
            "or use backbone.weights: none"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def torchvision_model(name: str, weights_path: Path | None) -> nn.Module:
    """torchvision's `name` whole, with the ImageNet state dict at `weights_path`, or as initialised."""
    import torchvision.models

    model = getattr(torchvision.models, TORCHVISION_BACKBONES[name].builder)(weights=None)
    if weights_path is not None:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model


def torchvision_backbone(name: str, weights_path: Path | None) -> tuple[nn.Module, nn.Linear]:
    """`name` with its last classifier layer replaced by Identity, and that layer (for ImageNet predictions)."""
    model = torchvision_model(name, weights_path)
    spec = TORCHVISION_BACKBONES[name]
    last = model.get_submodule(spec.feature_layer)
    assert isinstance(last, nn.Linear), f"{name}.{spec.feature_layer} is not the Linear layer cnnlab replaces"
    _replace(model, spec.feature_layer, nn.Identity())
    return model, last


def imagenet_top_classes(logits: torch.Tensor, categories: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """Per row of ImageNet logits, the k most probable class names with their softmax probability."""
    probabilities, indices = logits.float().softmax(dim=1).topk(k, dim=1)
    return [
        [(categories[i], p) for i, p in zip(row_i.tolist(), row_p.tolist(), strict=True)]
        for row_i, row_p in zip(indices, probabilities, strict=True)
    ]


def headless(model: nn.Module) -> tuple[nn.Module, int]:
    """A trained classifier without its last Linear layer, and the width of the features it then outputs."""
    last_name, last = None, None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name, last = module_name, module
    if last is None or last_name is None:
        raise ConfigError(f"backbone: model {type(model).__name__} has no Linear layer to remove")
    _replace(model, last_name, nn.Identity())
    return model, last.in_features


def _replace(model: nn.Module, dotted: str, replacement: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
