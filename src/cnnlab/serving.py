"""A trained model as MLflow serves it: the data as the dataset stores it in, class indices out.

The pixel permutation and the normalisation the model was trained with are
inside, so `mlflow.pyfunc.load_model(...).predict(images)` takes raw uint8
images (N, C, H, W), or the raw features (N, D) of a non-image dataset, and
returns each one's class index. The saved model carries cnnlab's code
(`code_paths`), so it loads in a fresh process that has torch but not
cnnlab. Saving is a state dict and a few small files: no tracing, no
environment inference.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from torch import nn

from cnnlab.data.loader import Normalizer, permute_pixels
from cnnlab.models import build_model

CLASSIFIER_FILE = "classifier.pt"
PACKAGE_DIR = Path(__file__).resolve().parent


class RawInputClassifier(nn.Module):
    """net(normalise(permute(x))): what the pipeline trained and evaluated, from raw inputs."""

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


def classifier_state(model: str, model_args: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                     net: nn.Module, normalizer: Normalizer, permutation: torch.Tensor | None) -> dict[str, Any]:
    """What `load_classifier` rebuilds the RawInputClassifier from (a torch.save-able dict)."""
    return {"model": model, "model_args": dict(model_args), "input_shape": list(input_shape),
            "num_classes": num_classes, "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
            "multiplier": normalizer.multiplier.cpu(), "offset": normalizer.offset.cpu(),
            "permutation": permutation.cpu() if permutation is not None else None}


def load_classifier(path: str | Path) -> RawInputClassifier:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = build_model(state["model"], tuple(state["input_shape"]), state["num_classes"], **state["model_args"])
    net.load_state_dict(state["state_dict"])
    return RawInputClassifier(net, Normalizer(state["multiplier"], state["offset"]), state["permutation"]).eval()


# MLflow asks for predict's type hints to infer a schema; the model is saved with an explicit signature instead.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)

    class ClassifierModel(mlflow.pyfunc.PythonModel):
        """The pyfunc flavour: predict(raw inputs) -> class indices (int64)."""

        def load_context(self, context: Any) -> None:
            self.classifier = load_classifier(context.artifacts["classifier"])

        def predict(self, context, model_input, params=None):  # noqa: ANN001  (MLflow reads type hints as a schema)
            inputs = torch.as_tensor(np.asarray(model_input))
            with torch.no_grad():
                return self.classifier(inputs).argmax(dim=1).numpy()


def save_pyfunc(out_dir: Path, state: dict[str, Any], input_dtype: np.dtype) -> Path:
    """An MLflow model directory (pyfunc flavour) holding `state` (see classifier_state) and cnnlab's code."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    weights = out_dir.parent / CLASSIFIER_FILE
    torch.save(state, weights)
    signature = ModelSignature(inputs=Schema([TensorSpec(input_dtype, (-1, *state["input_shape"]))]),
                               outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]))
    # The signature says what the model takes, so MLflow's advice on type hints and input examples (an
    # example would cost a prediction at every save) is noise here, also in the process it loads the code in.
    quiet = "ignore::UserWarning:mlflow.pyfunc.utils.data_validation"
    with warnings.catch_warnings(), _environment(PYTHONWARNINGS=quiet):
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
        mlflow.pyfunc.save_model(
            path=str(out_dir), python_model=str(PACKAGE_DIR / "serving_model.py"),
            artifacts={"classifier": str(weights)}, code_paths=[str(PACKAGE_DIR)], signature=signature,
            # Naming the requirement skips MLflow's slow requirement inference.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        )
    return out_dir


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
