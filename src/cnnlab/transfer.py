"""Transfer learning: a frozen backbone's features computed once, a new last layer trained on them.

Three stages per entry of `transfer:` in params.yaml:
  features@NAME       the backbone's output for every image, a DVC output (data/features/NAME),
                      with backbone.json saying which backbone made it
  head@NAME           the new layer, Dropout -> Linear(features, classes), trained on those features;
                      with backbone.finetune_layers > 0, trained from the images together with the
                      backbone's last layers instead (the cache then holds only backbone.json)
  evaluate_head@NAME  accuracy, confusion, image grids and, with ImageNet weights, the untouched
                      model's top-5 ImageNet classes for a few validation images

Because the backbone is frozen and run in eval mode, features computed once equal features
computed every epoch: changing the head's settings re-runs only head@ (and evaluate_head@).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import engine
from cnnlab.config import BackboneConfig, InputConfig, Params, TransferConfig, parse_dataclass
from cnnlab.data.loader import Normalizer, make_normalizer, to_device
from cnnlab.data.prepared import PreparedData, load_prepared, load_tensor_file, write_prepared
from cnnlab.data.registry import Splits
from cnnlab.errors import ConfigError, DataError
from cnnlab.io import directory_digest, md5sum, read_json, replaced_atomically, write_json
from cnnlab.models import count_parameters
from cnnlab.models.complexity import count_macs
from cnnlab.models.pretrained import headless, imagenet_top_classes, locate_imagenet_weights, torchvision_backbone, weights_of
from cnnlab.paths import Layout
from cnnlab.tracking import Tracker, open_run
from cnnlab.workflow import (
    CHECKPOINT, TRAIN_INFO, Evaluated, ModelSpec, TrainedModel, TrainingRun, dataset_record, load_trained,
    publish_evaluation, train_tracked,
)

BACKBONE_RECORD = "backbone.json"
FEATURE_BATCH = 64  # images per backbone forward pass: memory, not results


# --------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------


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
    def from_json(cls, data: dict[str, Any]) -> "BackboneRecord":
        config = parse_dataclass(BackboneConfig, data["config"], "backbone.json config")
        inputs = parse_dataclass(InputConfig, data["inputs"], "backbone.json inputs")
        shape = tuple(data["input_shape"]) if data["input_shape"] is not None else None
        return cls(**{**data, "config": config, "inputs": inputs, "input_shape": shape})

    @property
    def tags(self) -> dict[str, str]:
        """The backbone's identity, as MLflow tags of the head's run."""
        return {"backbone.name": self.config.name, "backbone.weights": self.config.weights,
                "backbone.digest": self.digest, "backbone.source": self.config.source,
                "backbone.finetune_layers": str(self.config.finetune_layers)}


@dataclass
class LoadedBackbone:
    module: nn.Module  # images -> (N, feature_dim)
    feature_dim: int
    input_shape: tuple[int, ...] | None
    digest: str
    pipeline_spec: dict[str, Any] | None
    imagenet_layer: nn.Module | None  # the replaced ImageNet classifier layer, with weights: imagenet


def load_backbone(config: BackboneConfig, layout: Layout) -> LoadedBackbone:
    """The backbone with its weights. Missing or wrong ImageNet weights fail here, in one line, before any work."""
    if config.weights == "pipeline":
        spec, model, _ = load_trained(layout, config.name)
        module, width = headless(model)
        return LoadedBackbone(module, width, spec.input_shape, directory_digest(layout.model_dir(config.name)),
                              spec.to_json(), None)
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


def _check_channels(loaded: LoadedBackbone, prepared: PreparedData, name: str) -> None:
    if not prepared.meta.is_image:
        raise ConfigError(f"transfer.{name}.dataset: {prepared.meta.name!r} is not an image dataset")
    channels = prepared.meta.input_shape[0]
    wanted = loaded.input_shape[0] if loaded.input_shape is not None else 3
    if channels != wanted:
        raise ConfigError(f"transfer.{name}: the backbone takes {wanted}-channel images, dataset "
                          f"{prepared.meta.name!r} has {channels}; pick a backbone trained on {channels}-channel images")


@torch.no_grad()
def backbone_features(
    backbone: nn.Module, images: torch.Tensor, normalize: Normalizer, input_shape: tuple[int, ...] | None,
    runtime: engine.Runtime, batch_size: int = FEATURE_BATCH,
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


# --------------------------------------------------------------------------
# features@NAME
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureTimings:
    """How long this execution took: printed, never stored in the (content-cached) features."""

    seconds: float  # computing every image's features (0 when fine-tuning bypasses the cache)
    latency_ms: float  # one batch-1 forward pass of the backbone


def compute_features(params: Params, name: str, layout: Layout) -> tuple[BackboneRecord, FeatureTimings]:
    config = params.transfer_experiment(name)
    loaded = load_backbone(config.backbone, layout)  # first: a missing weights file stops the stage before any work
    prepared = load_prepared(layout.prepared(config.dataset))
    _check_channels(loaded, prepared, name)
    if not config.uses_feature_cache:
        freeze_all_but_last(loaded.module, config.backbone.finetune_layers)  # a count too high fails here, not in head@
    device = engine.select_device()
    normalize = make_normalizer(prepared.meta, config.inputs.normalize, device)
    image_shape = loaded.input_shape or prepared.meta.input_shape
    macs = count_macs(loaded.module, image_shape)
    runtime = engine.resolve_runtime(params.runtime, device, macs)
    backbone = loaded.module.to(device)
    if runtime.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    train_split, test_split = to_device(prepared, device, permute=False)
    example = fit_to_backbone(normalize(test_split.inputs[:1]), loaded.input_shape)
    latency = engine.latency_ms(backbone, example.contiguous(memory_format=torch.channels_last)
                                if runtime.channels_last else example)

    out = layout.features(name)
    seconds, images = 0.0, 0
    if config.uses_feature_cache:
        started = time.perf_counter()
        train_features = backbone_features(backbone, train_split.inputs, normalize, loaded.input_shape, runtime).cpu()
        test_features = backbone_features(backbone, test_split.inputs, normalize, loaded.input_shape, runtime).cpu()
        seconds, images = time.perf_counter() - started, len(train_split) + len(test_split)  # .cpu() waited for it
        preview_features = test_features[: config.backbone.imagenet_preview].to(device)
    else:
        preview_features = backbone_features(backbone, test_split.inputs[: config.backbone.imagenet_preview],
                                             normalize, loaded.input_shape, runtime)
    record = BackboneRecord(
        config=config.backbone, inputs=config.inputs, digest=loaded.digest, feature_dim=loaded.feature_dim,
        input_shape=loaded.input_shape, pipeline_spec=loaded.pipeline_spec, precision=runtime.precision,
        param_count=count_parameters(loaded.module), macs_per_image=macs, images=images,
        imagenet_preview=_imagenet_preview(loaded, preview_features, config.backbone),
    )
    if config.uses_feature_cache:
        splits = Splits(train_features, prepared.train_targets, test_features, prepared.test_targets,
                        class_names=prepared.meta.class_names, origin="features")
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
    return [{"test_index": i, "top5": [[label, round(p, 4)] for label, p in top]}
            for i, top in enumerate(imagenet_top_classes(logits, categories, 5))]


def load_record(layout: Layout, name: str) -> BackboneRecord:
    path = layout.features(name) / BACKBONE_RECORD
    if not path.is_file():
        raise DataError(f"{path}: missing; run `dvc repro features@{name}` first")
    return BackboneRecord.from_json(read_json(path))


# --------------------------------------------------------------------------
# head@NAME
# --------------------------------------------------------------------------


class TransferModel(nn.Module):
    """Backbone and new head in one module, for fine-tuning from images.

    The backbone's frozen layers stay in eval mode while training (their dropout off, their
    batch-norm statistics fixed), exactly as when features are cached; only the last
    `finetune_layers` layers with weights, and what follows them, train.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, input_shape: tuple[int, ...] | None,
                 finetune_layers: int) -> None:
        super().__init__()
        self.backbone, self.head, self.input_shape = backbone, head, input_shape
        self.frozen_modules = freeze_all_but_last(backbone, finetune_layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(fit_to_backbone(images, self.input_shape)))

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        for module_name in self.frozen_modules:
            self.backbone.get_submodule(module_name).eval()
        return self


def freeze_all_but_last(backbone: nn.Module, layers: int) -> tuple[str, ...]:
    """Freeze `backbone` but for its last `layers` modules with weights; the names of the modules before them."""
    modules = [(module_name, module) for module_name, module in backbone.named_modules() if module_name]
    weighted = [i for i, (_, module) in enumerate(modules) if next(module.parameters(recurse=False), None) is not None]
    if layers > len(weighted):
        raise ConfigError(f"backbone.finetune_layers: {layers} is more than the backbone's {len(weighted)} layers with weights")
    backbone.requires_grad_(False)
    first_trained = weighted[len(weighted) - layers] if layers else len(modules)
    for _, module in modules[first_trained:]:
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(True)
    return tuple(module_name for module_name, module in modules[:first_trained] if not list(module.children()))


def new_head(feature_dim: int, num_classes: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))


def train_head(params: Params, name: str, layout: Layout) -> TrainedModel:
    config = params.transfer_experiment(name)
    record = load_record(layout, name)
    device = engine.select_device()
    cached = record.config.finetune_layers == 0
    data = load_prepared(layout.features(name) if cached else layout.prepared(config.dataset))
    torch.manual_seed(config.head.train.seed)
    head = new_head(record.feature_dim, data.meta.num_classes, config.head.dropout)
    train_split, _ = to_device(data, device, permute=False)
    if cached:
        model: nn.Module = head
        normalize = make_normalizer(data.meta, "none", device)
        macs, mode = count_macs(head, (record.feature_dim,)), "cached features"
    else:
        loaded = load_backbone(record.config, layout)
        model = TransferModel(loaded.module, head, loaded.input_shape, record.config.finetune_layers)
        normalize = make_normalizer(data.meta, record.inputs.normalize, device)
        macs = record.macs_per_image + count_macs(head, (record.feature_dim,))
        mode = f"fine-tuning the last {record.config.finetune_layers} backbone layers from images"
    runtime = engine.resolve_runtime(params.runtime, device, macs)
    model = model.to(device)
    images = load_prepared(layout.prepared(config.dataset)).meta
    features_md5 = directory_digest(layout.features(name))
    stage_params = {"transfer": name, "study": config.study, "dataset": config.dataset,
                    "backbone": asdict(record.config), "inputs": asdict(record.inputs), "head": asdict(config.head),
                    "runtime": {"precision": params.runtime.precision}}
    run = TrainingRun(
        name, config.study, f"head@{name}", stage_params, dataset_record(layout.prepared(config.dataset), images),
        tags={"transfer.mode": mode, "data.features_md5": features_md5, **record.tags},
        fingerprint=_fingerprint(config, record, runtime.precision, features_md5),
    )

    def save(trained: nn.Module, path: Path) -> None:
        torch.save({"state_dict": trained.state_dict(), "finetuned": record.config.finetune_layers > 0}, path)

    def publish(tracker: Tracker, trained: nn.Module) -> None:
        tracker.log_artifact(layout.features(name) / BACKBONE_RECORD)

    info = {"mode": mode, "param_count": record.param_count + count_parameters(head),
            "trainable_param_count": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return train_tracked(layout, run, model, train_split, normalize, config.head.train, runtime,
                         params.runtime.checkpoint_every_s, save, info, publish)


def _fingerprint(config: TransferConfig, record: BackboneRecord, precision: str, features_md5: str) -> str:
    identity = {"head": asdict(config.head), "backbone": record.to_json(), "precision": precision,
                "features": features_md5}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------
# evaluate_head@NAME
# --------------------------------------------------------------------------


def evaluate_head(params: Params, name: str, layout: Layout) -> Evaluated:
    from cnnlab import plots

    config = params.transfer_experiment(name)
    record = load_record(layout, name)
    prepared = load_prepared(layout.prepared(config.dataset))
    saved = load_tensor_file(layout.model_dir(name) / CHECKPOINT, f"dvc repro head@{name}")
    train_info = read_json(layout.model_dir(name) / TRAIN_INFO)
    model_md5 = md5sum(layout.model_dir(name) / CHECKPOINT)
    # Opened first: the tracking worker starts MLflow while this process evaluates.
    with open_run(config.study, run_name=name, model_md5=model_md5) as tracker:
        device = engine.select_device()
        head = new_head(record.feature_dim, prepared.meta.num_classes, 0.0)
        if saved["finetuned"]:
            model: nn.Module = TransferModel(backbone_architecture(record), head, record.input_shape,
                                             record.config.finetune_layers)
            model.load_state_dict(saved["state_dict"])
            _, test_split = to_device(prepared, device, permute=False)
            normalize = make_normalizer(prepared.meta, record.inputs.normalize, device)
        else:
            head.load_state_dict(saved["state_dict"])
            model = head
            features = load_prepared(layout.features(name))
            _, test_split = to_device(features, device, permute=False)
            normalize = make_normalizer(features.meta, "none", device)
        model = model.to(device)
        evaluation = engine.evaluate(model, test_split, normalize, config.evaluate.batch_size, prepared.meta.num_classes)
        head_macs = count_macs(head, (record.feature_dim,))
        metrics = {
            "test_accuracy": evaluation.accuracy,
            "test_loss": evaluation.loss,
            "param_count": train_info["param_count"],
            "trainable_param_count": train_info["trainable_param_count"],
            "macs_per_image": record.macs_per_image + head_macs,
            "device": train_info["device"],
            "precision": train_info["precision"],
            "study": config.study,
            "dataset": config.dataset,
            "data_origin": prepared.meta.origin,
            "model": f"{record.config.name} ({record.config.weights}) + new head",
            "backbone": record.config.name,
            "backbone_weights": record.config.weights,
            "mode": train_info["mode"],
            "epochs": train_info["epochs"],
            "final_train_accuracy": train_info["final_train_accuracy"],
            "per_class_accuracy": dict(zip(prepared.meta.class_names, evaluation.per_class_accuracy)),
            "imagenet_preview": record.imagenet_preview,
            "model_md5": model_md5,
        }
        # On cached features this stage never loads the backbone: its latency is timed (and printed) by features@.
        latency = "inference_ms_per_image" if saved["finetuned"] else "head_inference_ms_per_image"
        timings = {"eval_images_per_second": evaluation.images_per_second,
                   latency: engine.latency_ms(model, normalize(test_split.inputs[:1]))}

        def preview(out: Path) -> None:
            if record.imagenet_preview:
                indices = torch.tensor([row["test_index"] for row in record.imagenet_preview])
                captions = ["\n".join(f"{label[:18]} {p:.0%}" for label, p in row["top5"]) for row in record.imagenet_preview]
                plots.image_grid_png(prepared.test_inputs[indices], captions,
                                     f"{record.config.name} on ImageNet, untouched: top 5 classes", out / "imagenet_top5.png")

        publish_evaluation(tracker, layout, f"evaluate_head@{name}", name, config.study, evaluation, prepared,
                           config.evaluate, metrics, timings, preview)
    return Evaluated(metrics, timings, tracker.run_id)
