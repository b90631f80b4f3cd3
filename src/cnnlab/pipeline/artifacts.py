"""The files a trained model leaves in models/NAME, and how to rebuild and feed the model from them.

The train stage saves a self-describing checkpoint (model name and options, input shape, normalisation,
study), so the evaluate stage rebuilds exactly what was trained and reads only its own params.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.config.experiments import InputConfig
from cnnlab.data.loader import DeviceSplit, Normalizer, make_normalizer, to_device
from cnnlab.data.prepared import DatasetMeta, PreparedData
from cnnlab.data.tensorfiles import load_tensor_file
from cnnlab.io import directory_digest, read_json
from cnnlab.models.registry import build_model
from cnnlab.paths import Layout
from cnnlab.schema import parse_dataclass
from cnnlab.tracking.client import DatasetRecord

CHECKPOINT = "model.pt"  # models/NAME/model.pt: weights (and what the model is)
TRAIN_INFO = "train.json"  # models/NAME/train.json: how it was trained, deterministic facts only


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and feed a trained model."""

    experiment: str
    study: str
    dataset: str
    model: str
    model_args: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    inputs: InputConfig

    def build(self) -> nn.Module:
        return build_model(self.model, self.input_shape, self.num_classes, **self.model_args)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        inputs = parse_dataclass(InputConfig, data["inputs"], "checkpoint spec.inputs")
        return cls(**{**data, "input_shape": tuple(data["input_shape"]), "inputs": inputs})

    def inputs_on(self, prepared: PreparedData, device: torch.device) -> tuple[DeviceSplit, DeviceSplit, Normalizer]:
        """Both splits on the device, permuted if the model was trained so, and the model's normaliser."""
        train, test = to_device(prepared, device, self.inputs.permute_pixels)
        return train, test, make_normalizer(prepared.meta, self.inputs.normalize, device)


def save_trained(spec: ModelSpec, model: nn.Module, path: Path) -> None:
    torch.save({"spec": spec.to_json(), "state_dict": model.state_dict()}, path)


def load_trained(layout: Layout, name: str) -> tuple[ModelSpec, nn.Module, dict[str, Any]]:
    """The model train@NAME wrote, rebuilt with its weights (on the CPU), and its train.json."""
    model_dir = layout.model_dir(name)
    checkpoint = load_tensor_file(model_dir / CHECKPOINT, f"dvc repro train@{name}")
    spec = ModelSpec.from_json(checkpoint["spec"])
    model = spec.build()
    model.load_state_dict(checkpoint["state_dict"])
    return spec, model, read_json(model_dir / TRAIN_INFO)


def diverged_info(layout: Layout, name: str) -> dict[str, Any] | None:
    """models/NAME's train.json if its training diverged (then it holds no model file), else None."""
    info_file = layout.model_dir(name) / TRAIN_INFO
    info = read_json(info_file) if info_file.is_file() else {}
    return info if "diverged" in info else None


def dataset_record(prepared_dir: Path, meta: DatasetMeta) -> DatasetRecord:
    """The prepared data as MLflow will show it: generated stand-ins are named so, and the source is the
    DVC output's path in the project (a queued experiment runs in a temporary copy of it)."""
    name = meta.name if meta.origin != "synthetic" else f"{meta.name} (synthetic)"
    return DatasetRecord(name, directory_digest(prepared_dir), prepared_dir, meta.origin, meta.sizes)
