"""The models params.yaml can name (`model:`), with the options it may pass them (`model_args:`).

Every builder takes `input_shape` (without the batch dimension) and
`num_classes`, plus keyword options that params.yaml may set.

Models that end in LogSoftmax (as the course's MNIST nets do) are trained
with cross-entropy like the others: log_softmax is idempotent, so
cross_entropy(log_softmax(z)) equals the course's nll_loss(log_softmax(z)).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import alexnet, course_cnn, googlenet, lenet, mlp, mobilenet, resnet, speedrun, vgg

ModelBuilder = Callable[..., nn.Module]

MODELS: Mapping[str, ModelBuilder] = {
    "linear": mlp.linear,
    "two_layer": mlp.two_layer,
    "fc2layer": mlp.FC2Layer,
    "course_cnn": course_cnn.CourseCNN,
    "lenet": lenet.LeNet,
    "alexnet": alexnet.alexnet,
    "zfnet": alexnet.zfnet,
    "vgg_course": vgg.vgg_course,
    "vgg16_bn": vgg.vgg16_bn,
    "googlenet": googlenet.googlenet,
    "resnet18": resnet.resnet18,
    "mobilenet_v2": mobilenet.mobilenet_v2,
    "speedrun_net": speedrun.speedrun_net,
}

_FIXED_ARGS = ("input_shape", "num_classes")


def model_names() -> list[str]:
    return sorted(MODELS)


def _builder(name: str, where: str) -> ModelBuilder:
    if name not in MODELS:
        raise ConfigError(f"{where}.model: unknown model {name!r}; use one of {', '.join(model_names())}")
    return MODELS[name]


def model_options(name: str) -> dict[str, object]:
    """The keyword options of a model and their defaults."""
    signature = inspect.signature(_builder(name, "model"))
    return {p.name: p.default for p in signature.parameters.values() if p.name not in _FIXED_ARGS}


def check_model_args(name: str, args: Mapping[str, object], where: str) -> None:
    _builder(name, where)
    options = model_options(name)
    for key, value in args.items():
        if key not in options:
            accepted = ", ".join(options) or "none"
            raise ConfigError(f"{where}.model_args.{key}: unknown option for model {name!r}; accepted: {accepted}")
        default = options[key]
        if default is not inspect.Parameter.empty and type(value) is not type(default):
            raise ConfigError(
                f"{where}.model_args.{key}: expected {type(default).__name__} for model {name!r}, got {value!r}"
            )
        # Every int option is a size (at least 1), or a count whose default is 0 (at least 0).
        least = 0 if default == 0 else 1
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            kind = "a size" if least else "a count"
            raise ConfigError(f"{where}.model_args.{key}: {value} is not accepted; {kind} must be at least {least}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.model_args.{key}: {value} is not accepted; it must be a finite number")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **args: object) -> nn.Module:
    check_model_args(name, args, "model")
    return _builder(name, "model")(input_shape=tuple(input_shape), num_classes=num_classes, **args)
