"""evaluate_head@NAME: a `transfer:` entry's model tested: accuracy, confusion, image grids and, with
ImageNet weights, the untouched model's top-5 ImageNet classes for a few validation images."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab import plots
from cnnlab.config.params import Params
from cnnlab.data.loader import make_normalizer, to_device
from cnnlab.data.prepared import load_prepared
from cnnlab.data.tensorfiles import load_tensor_file
from cnnlab.engine.cores import cores_shared
from cnnlab.engine.evaluation import evaluate, latency_ms
from cnnlab.engine.runtime import select_device
from cnnlab.io import md5sum, read_json
from cnnlab.models.complexity import count_macs
from cnnlab.paths import Layout
from cnnlab.pipeline.artifacts import CHECKPOINT, TRAIN_INFO, diverged_info
from cnnlab.pipeline.backbones import TransferModel, backbone_architecture, load_record, new_head
from cnnlab.pipeline.evaluation import EvaluateStageResult, diverged_evaluation, publish_evaluation, test_metrics
from cnnlab.tracking.client import open_run


def evaluate_head(params: Params, name: str, layout: Layout) -> EvaluateStageResult:
    config = params.transfer_experiment(name)
    if (diverged := diverged_info(layout, name)) is not None:
        facts = {"study": config.study, "dataset": config.dataset, "model": f"{config.backbone.name} + new head"}
        return diverged_evaluation(layout, name, diverged, **facts)
    record = load_record(layout, name)
    prepared = load_prepared(layout.prepared(config.dataset))
    saved = load_tensor_file(layout.model_dir(name) / CHECKPOINT, f"dvc repro head@{name}")
    train_info = read_json(layout.model_dir(name) / TRAIN_INFO)
    model_md5 = md5sum(layout.model_dir(name) / CHECKPOINT)
    device = select_device()
    # Opened first: the tracking worker starts MLflow while this process evaluates.
    with open_run(config.study, run_name=name, model_md5=model_md5) as tracker, cores_shared(device):
        head = new_head(record.feature_dim, prepared.meta.num_classes, 0.0)
        if saved["finetuned"]:
            model: nn.Module = TransferModel(
                backbone_architecture(record), head, record.input_shape, record.config.finetune_layers
            )
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
        evaluation = evaluate(model, test_split, normalize, config.evaluate.batch_size, prepared.meta.num_classes)
        metrics = test_metrics(
            evaluation,
            prepared,
            train_info,
            study=config.study,
            model=f"{record.config.name} ({record.config.weights}) + new head",
            macs_per_image=record.macs_per_image + count_macs(head, (record.feature_dim,)),
            model_md5=model_md5,
            trainable_param_count=train_info["trainable_param_count"],
            backbone=record.config.name,
            backbone_weights=record.config.weights,
            mode=train_info["mode"],
            imagenet_preview=record.imagenet_preview,
        )
        # On cached features this stage never loads the backbone: its latency is timed (and printed) by features@.
        latency = "inference_ms_per_image" if saved["finetuned"] else "head_inference_ms_per_image"
        timings = {
            "eval_images_per_second": evaluation.images_per_second,
            latency: latency_ms(model, normalize(test_split.inputs[:1])),
        }

        def preview(out: Path) -> None:
            if record.imagenet_preview:
                indices = torch.tensor([row["test_index"] for row in record.imagenet_preview])
                captions = [
                    "\n".join(f"{label[:18]} {p:.0%}" for label, p in row["top5"]) for row in record.imagenet_preview
                ]
                plots.image_grid_png(
                    prepared.test_inputs[indices],
                    captions,
                    f"{record.config.name} on ImageNet, untouched: top 5 classes",
                    out / "imagenet_top5.png",
                )

        publish_evaluation(
            tracker,
            layout,
            f"evaluate_head@{name}",
            name,
            config.study,
            evaluation,
            prepared,
            config.evaluate,
            metrics,
            timings,
            preview,
        )
    return EvaluateStageResult(metrics, timings, tracker.run_id)
