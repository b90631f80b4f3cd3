"""A trained model as MLflow serves it: the data as the dataset stores it in, class indices out.

The pixel permutation and the normalisation the model was trained with are
inside, so `mlflow.pyfunc.load_model(...).predict(images)` takes raw uint8
images (N, C, H, W), or the raw features (N, D) of a non-image dataset, and
returns each one's class index. The saved model carries cnnlab's code
(`code_paths`), so it loads in a fresh process that has torch but not
cnnlab. Saving is a state dict and a few small files: no tracing, no
environment inference. The pyfunc class is in serving_model.py, the code
MLflow loads; the tracking worker saves the model (tracking.store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.loader import Normalizer, permute_pixels
from cnnlab.models.registry import build_model

CLASSIFIER_FILE = "classifier.pt"


class RawInputClassifier(nn.Module):
    """net(normalise(permute(x))): what the pipeline trained and evaluated, from raw inputs."""

    multiplier: torch.Tensor
    offset: torch.Tensor
    permutation: torch.Tensor | None

    def __init__(self, net: nn.Module, normalizer: Normalizer, permutation: torch.Tensor | None) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("multiplier", normalizer.multiplier.cpu())
        self.register_buffer("offset", normalizer.offset.cpu())
        self.register_buffer("permutation", permutation.cpu() if permutation is not None else None)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.permutation is not None:
            inputs = permute_pixels(inputs, self.permutation)
        return self.net(Normalizer(self.multiplier, self.offset)(inputs))


def classifier_state(
    model: str,
    model_args: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    net: nn.Module,
    normalizer: Normalizer,
    permutation: torch.Tensor | None,
) -> dict[str, Any]:
    """What `load_classifier` rebuilds the RawInputClassifier from (a torch.save-able dict)."""
    return {
        "model": model,
        "model_args": dict(model_args),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
        "multiplier": normalizer.multiplier.cpu(),
        "offset": normalizer.offset.cpu(),
        "permutation": permutation.cpu() if permutation is not None else None,
    }


def load_classifier(path: str | Path) -> RawInputClassifier:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = build_model(state["model"], tuple(state["input_shape"]), state["num_classes"], **state["model_args"])
    net.load_state_dict(state["state_dict"])
    return RawInputClassifier(net, Normalizer(state["multiplier"], state["offset"]), state["permutation"]).eval()


def pip_requirements() -> list[str]:
    """What a served model needs installed (named, so MLflow skips its slow requirement inference)."""
    return [f"torch=={torch.__version__.split('+')[0]}", "numpy"]
