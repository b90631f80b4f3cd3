"""Backbones for transfer learning, as modules: frozen feature extractors, and a new head on top.

A backbone maps a batch of images to one feature vector per image: torchvision's ImageNet model without
its last classifier layer (models/pretrained.py), or a model this pipeline trained without its last
Linear layer. Because it is frozen and run in eval mode, its features computed once equal features
computed every epoch: the features@ stage caches them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config.experiments import InputConfig
from cnnlab.config.transfer import BackboneConfig
from cnnlab.data.loader import Normalizer
from cnnlab.engine.runtime import Runtime
from cnnlab.errors import ConfigError, DataError
from cnnlab.io import directory_digest, read_json
from cnnlab.models.pretrained import TORCHVISION_BACKBONES, headless, locate_imagenet_weights, torchvision_backbone
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import ModelSpec, load_trained
from cnnlab.schema import parse_dataclass

FEATURE_BATCH = 64  # images per backbone forward pass: memory, not results
BACKBONE_RECORD = "backbone.json"  # in data/features/NAME: which backbone made the features


@dataclass(frozen=True)
class BackboneRecord:
    """Which backbone made a features directory; the head and evaluate stages rebuild from it."""

    config: BackboneConfig
    inputs: InputConfig
    digest: str  # SHA-256 of torchvision's weights file, md5 of the pipeline model's directory, or "seed N"
    feature_dim: int
    input_shape: tuple[int, ...] | None  # images are resized to this; None: the backbone takes any size
    pipeline_spec: dict[str, Any] | None  # weights: pipeline: the model's spec, to rebuild its architecture
    precision: str
    param_count: int
    macs_per_image: int
    images: int  # with features computed for them (0 when fine-tuning bypasses the cache)
    imagenet_preview: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackboneRecord:
        config = parse_dataclass(BackboneConfig, data["config"], "backbone.json config")
        inputs = parse_dataclass(InputConfig, data["inputs"], "backbone.json inputs")
        shape = tuple(data["input_shape"]) if data["input_shape"] is not None else None
        return cls(**{**data, "config": config, "inputs": inputs, "input_shape": shape})

    @property
    def tags(self) -> dict[str, str]:
        """The backbone's identity, as MLflow tags of the head's run."""
        return {
            "backbone.name": self.config.name,
            "backbone.weights": self.config.weights,
            "backbone.digest": self.digest,
            "backbone.source": self.config.source,
            "backbone.finetune_layers": str(self.config.finetune_layers),
        }


@dataclass
class LoadedBackbone:
    module: nn.Module  # images -> (N, feature_dim)
    feature_dim: int
    input_shape: tuple[int, ...] | None
    digest: str
    pipeline_spec: dict[str, Any] | None
    imagenet_layer: nn.Module | None  # the replaced ImageNet classifier layer, with weights: imagenet


def load_backbone(config: BackboneConfig, layout: Layout, where: str) -> LoadedBackbone:
    """The backbone with its weights. An unknown torchvision name, or missing or wrong ImageNet weights, fail
    here in one line (`where` is the backbone's params.yaml key), before any work."""
    if config.weights == "pipeline":
        spec, model, _ = load_trained(layout, config.name)
        module, width = headless(model)
        return LoadedBackbone(
            module, width, spec.input_shape, directory_digest(layout.model_dir(config.name)), spec.to_json(), None
        )
    if config.name not in TORCHVISION_BACKBONES:
        raise ConfigError(
            f"{where}.name: {config.name!r} is not a torchvision backbone cnnlab knows; "
            f"use one of {', '.join(TORCHVISION_BACKBONES)}, or weights: pipeline with an experiment"
        )
    weights_path, digest = None, f"seed {config.seed}"
    if config.weights == "imagenet":
        weights_path, digest = locate_imagenet_weights(config.name, config.weights_file)
    torch.manual_seed(config.seed)  # the initialisation of weights: none
    module, last = torchvision_backbone(config.name, weights_path)
    return LoadedBackbone(module, last.in_features, None, digest, None, last if weights_path else None)


def backbone_architecture(record: BackboneRecord) -> nn.Module:
    """The backbone's modules without its weights, for loading a fine-tuned state dict."""
    if record.pipeline_spec is not None:
        return headless(ModelSpec.from_json(record.pipeline_spec).build())[0]
    return torchvision_backbone(record.config.name, None)[0]


def fit_to_backbone(batch: torch.Tensor, input_shape: tuple[int, ...] | None) -> torch.Tensor:
    """Resize normalised images to the size a backbone was trained at (a pipeline model's, e.g. 32x32)."""
    if input_shape is None or tuple(batch.shape[-2:]) == tuple(input_shape[-2:]):
        return batch
    return F.interpolate(batch, size=tuple(input_shape[-2:]), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def backbone_features(
    backbone: nn.Module,
    images: torch.Tensor,
    normalize: Normalizer,
    input_shape: tuple[int, ...] | None,
    runtime: Runtime,
    batch_size: int = FEATURE_BATCH,
) -> torch.Tensor:
    """Features of uint8 `images` (on the device), in eval mode, batch by batch; float32 on the device."""
    backbone.eval()
    outputs = []
    for batch in images.split(batch_size):
        batch = fit_to_backbone(normalize(batch), input_shape)
        if runtime.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with runtime.autocast():
            outputs.append(backbone(batch).float())
    return torch.cat(outputs)


class TransferModel(nn.Module):
    """Backbone and new head in one module, for fine-tuning from images.

    The backbone's frozen layers stay in eval mode while training (their dropout off, their
    batch-norm statistics fixed), exactly as when features are cached; only the last
    `finetune_layers` layers with weights, and what follows them, train.
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, input_shape: tuple[int, ...] | None, finetune_layers: int
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.input_shape = backbone, head, input_shape
        self.frozen_modules = freeze_all_but_last(backbone, finetune_layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(fit_to_backbone(images, self.input_shape)))

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for module_name in self.frozen_modules:
            self.backbone.get_submodule(module_name).eval()
        return self


def freeze_all_but_last(backbone: nn.Module, layers: int) -> tuple[str, ...]:
    """Freeze `backbone` but for its last `layers` modules with weights; the names of the modules before them."""
    modules = [(module_name, module) for module_name, module in backbone.named_modules() if module_name]
    weighted = [i for i, (_, module) in enumerate(modules) if next(module.parameters(recurse=False), None) is not None]
    if layers > len(weighted):
        raise ConfigError(
            f"backbone.finetune_layers: {layers} is more than the backbone's {len(weighted)} layers with weights"
        )
    backbone.requires_grad_(False)
    first_trained = weighted[len(weighted) - layers] if layers else len(modules)
    for _, module in modules[first_trained:]:
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(True)
    return tuple(module_name for module_name, module in modules[:first_trained] if not list(module.children()))


def new_head(feature_dim: int, num_classes: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))


def load_record(layout: Layout, name: str) -> BackboneRecord:
    path = layout.features(name) / BACKBONE_RECORD
    if not path.is_file():
        raise DataError(f"{path}: missing; run `dvc repro features@{name}` first")
    return BackboneRecord.from_json(read_json(path))
