"""head@NAME: the new last layer of a `transfer:` entry, trained on the cached features.

With backbone.finetune_layers > 0 it trains from the images instead, together with the backbone's last
layers. Changing the head's settings re-runs only this stage and evaluate_head@: the features stay cached.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from cnnlab.config.params import Params
from cnnlab.data.loader import make_normalizer, to_device
from cnnlab.data.prepared import load_prepared
from cnnlab.engine.runtime import resolve_runtime, select_device
from cnnlab.io import directory_digest, json_digest
from cnnlab.models.complexity import count_parameters
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import dataset_record
from cnnlab.pipeline.backbones import BACKBONE_RECORD, TransferModel, load_backbone, load_record, new_head
from cnnlab.pipeline.training import StageRun, TrainStageResult, train_tracked
from cnnlab.tracking.client import Tracker


def train_head(params: Params, name: str, layout: Layout) -> TrainStageResult:
    config = params.transfer_experiment(name)
    record = load_record(layout, name)
    device = select_device()
    cached = record.config.finetune_layers == 0
    data = load_prepared(layout.features(name) if cached else layout.prepared(config.dataset))
    torch.manual_seed(config.head.train.seed)
    head = new_head(record.feature_dim, data.meta.num_classes, config.head.dropout)
    train_split, _ = to_device(data, device, permute=False)
    if cached:
        model: nn.Module = head
        normalize = make_normalizer(data.meta, "none", device)
        mode = "cached features"
    else:
        loaded = load_backbone(record.config, layout, f"transfer.{name}.backbone")
        model = TransferModel(loaded.module, head, loaded.input_shape, record.config.finetune_layers)
        normalize = make_normalizer(data.meta, record.inputs.normalize, device)
        mode = f"fine-tuning the last {record.config.finetune_layers} backbone layers from images"
    runtime = resolve_runtime(params.runtime, device, config.head.train.precision)
    model = model.to(device)
    images = load_prepared(layout.prepared(config.dataset)).meta
    features_md5 = directory_digest(layout.features(name))
    stage_params = {
        "transfer": name,
        "study": config.study,
        "dataset": config.dataset,
        "backbone": asdict(record.config),
        "inputs": asdict(record.inputs),
        "head": asdict(config.head),
    }
    run = StageRun(
        name,
        config.study,
        f"head@{name}",
        stage_params,
        dataset_record(layout.prepared(config.dataset), images),
        tags={"transfer.mode": mode, "data.features_md5": features_md5, **record.tags},
        # What a resumable state must match to be continued: the head's settings, its backbone and features.
        fingerprint=json_digest({"head": asdict(config.head), "backbone": record.to_json(), "features": features_md5}),
    )

    def save(trained: nn.Module, path: Path) -> None:
        torch.save({"state_dict": trained.state_dict(), "finetuned": record.config.finetune_layers > 0}, path)

    def publish(tracker: Tracker, trained: nn.Module) -> None:
        tracker.log_artifact(layout.features(name) / BACKBONE_RECORD)

    info = {
        "mode": mode,
        "param_count": record.param_count + count_parameters(head),
        "trainable_param_count": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return train_tracked(
        layout,
        run,
        model,
        train_split,
        normalize,
        config.head.train,
        runtime,
        params.runtime.checkpoint_every_s,
        save,
        info,
        publish,
    )
