"""features@NAME: a frozen backbone's output for every image of a `transfer:` entry's dataset, computed once.

Written to data/features/NAME (a DVC output, shared through the remote) with backbone.json saying which
backbone made it; with backbone.finetune_layers > 0 the head trains from the images instead, and only
backbone.json is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.config.params import Params
from cnnlab.config.transfer import BackboneConfig
from cnnlab.data.loader import make_normalizer, to_device
from cnnlab.data.prepared import PreparedData, load_prepared, write_prepared
from cnnlab.data.splits import Splits
from cnnlab.engine.evaluation import latency_ms
from cnnlab.engine.runtime import resolve_runtime, select_device
from cnnlab.errors import ConfigError
from cnnlab.io import replaced_atomically, write_json
from cnnlab.models.complexity import count_macs, count_parameters
from cnnlab.models.pretrained import imagenet_top_classes, weights_of
from cnnlab.paths import Layout
from cnnlab.pipeline.backbones import (
    BACKBONE_RECORD,
    BackboneRecord,
    LoadedBackbone,
    backbone_features,
    fit_to_backbone,
    freeze_all_but_last,
    load_backbone,
)


def _check_channels(loaded: LoadedBackbone, prepared: PreparedData, name: str) -> None:
    if not prepared.meta.is_image:
        raise ConfigError(f"transfer.{name}.dataset: {prepared.meta.name!r} is not an image dataset")
    channels = prepared.meta.input_shape[0]
    wanted = loaded.input_shape[0] if loaded.input_shape is not None else 3
    if channels != wanted:
        raise ConfigError(
            f"transfer.{name}: the backbone takes {wanted}-channel images, dataset "
            f"{prepared.meta.name!r} has {channels}; pick a backbone trained on {channels}-channel images"
        )


@dataclass(frozen=True)
class FeatureTimings:
    """How long this execution took: printed, never stored in the (content-cached) features."""

    seconds: float  # computing every image's features (0 when fine-tuning bypasses the cache)
    latency_ms: float  # one batch-1 forward pass of the backbone


def compute_features(params: Params, name: str, layout: Layout) -> tuple[BackboneRecord, FeatureTimings]:
    config = params.transfer_experiment(name)
    # First: an unknown backbone or a missing weights file stops the stage before any work.
    loaded = load_backbone(config.backbone, layout, f"transfer.{name}.backbone")
    prepared = load_prepared(layout.prepared(config.dataset))
    _check_channels(loaded, prepared, name)
    if not config.uses_feature_cache:
        freeze_all_but_last(loaded.module, config.backbone.finetune_layers)  # a count too high fails here, not in head@
    device = select_device()
    normalize = make_normalizer(prepared.meta, config.inputs.normalize, device)
    image_shape = loaded.input_shape or prepared.meta.input_shape
    macs = count_macs(loaded.module, image_shape)
    runtime = resolve_runtime(params.runtime, device, config.backbone.precision)
    backbone = loaded.module.to(device)
    if runtime.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    train_split, test_split = to_device(prepared, device, permute=False)
    example = fit_to_backbone(normalize(test_split.inputs[:1]), loaded.input_shape)
    latency = latency_ms(
        backbone, example.contiguous(memory_format=torch.channels_last) if runtime.channels_last else example
    )

    out = layout.features(name)
    seconds, images = 0.0, 0
    if config.uses_feature_cache:
        started = time.perf_counter()
        train_features = backbone_features(backbone, train_split.inputs, normalize, loaded.input_shape, runtime).cpu()
        test_features = backbone_features(backbone, test_split.inputs, normalize, loaded.input_shape, runtime).cpu()
        seconds, images = time.perf_counter() - started, len(train_split) + len(test_split)  # .cpu() waited for it
        preview_features = test_features[: config.backbone.imagenet_preview].to(device)
    else:
        preview_features = backbone_features(
            backbone, test_split.inputs[: config.backbone.imagenet_preview], normalize, loaded.input_shape, runtime
        )
    record = BackboneRecord(
        config=config.backbone,
        inputs=config.inputs,
        digest=loaded.digest,
        feature_dim=loaded.feature_dim,
        input_shape=loaded.input_shape,
        pipeline_spec=loaded.pipeline_spec,
        precision=runtime.precision,
        param_count=count_parameters(loaded.module),
        macs_per_image=macs,
        images=images,
        imagenet_preview=_imagenet_preview(loaded, preview_features, config.backbone),
    )
    if config.uses_feature_cache:
        splits = Splits(
            train_features,
            prepared.train_targets,
            test_features,
            prepared.test_targets,
            class_names=prepared.meta.class_names,
            origin="features",
        )
        write_prepared(name, "features", splits, out, None, extra_json={BACKBONE_RECORD: record.to_json()})
    else:
        with replaced_atomically(out) as tmp:  # fine-tuning trains from the images: only the record is kept
            tmp.mkdir(parents=True)
            write_json(tmp / BACKBONE_RECORD, record.to_json())
    return record, FeatureTimings(seconds, latency)


def _imagenet_preview(loaded: LoadedBackbone, features: torch.Tensor, config: BackboneConfig) -> list[dict[str, Any]]:
    """The untouched ImageNet model's top 5 classes for the first validation images, as the course prints."""
    if loaded.imagenet_layer is None or not len(features):
        return []
    layer = loaded.imagenet_layer.to(features.device).eval()
    with torch.no_grad():
        logits = layer(features)
    categories = list(weights_of(config.name).meta["categories"])
    return [
        {"test_index": i, "top5": [[label, round(p, 4)] for label, p in top]}
        for i, top in enumerate(imagenet_top_classes(logits, categories, 5))
    ]
