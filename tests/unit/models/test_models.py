import pytest
import torch

from cnnlab.config.params import Params, parse_params
from cnnlab.data.kinds import cifar10, mnist
from cnnlab.errors import ConfigError
from cnnlab.models.complexity import count_parameters
from cnnlab.models.registry import build_model, check_model_args, model_names
from conftest import committed_params

PARAMS = parse_params(committed_params())


@pytest.mark.parametrize(
    ("name", "input_shape", "args", "params"),
    [
        ("linear", (2,), {"hidden": 100}, 2 * 100 + 100 + 100 * 3 + 3),
        ("two_layer", (2,), {"hidden": 100}, 603),
        ("fc2layer", (1, 28, 28), {"hidden": 8}, 6442),  # the course's count
        ("course_cnn", (1, 28, 28), {"n_feature": 6}, 6422),  # the course's count
    ],
)
def test_course_models_have_the_course_parameter_counts_and_shapes(name, input_shape, args, params):
    classes = 3 if input_shape == (2,) else 10
    model = build_model(name, input_shape, classes, **args)
    assert count_parameters(model) == params
    assert model(torch.zeros(5, *input_shape)).shape == (5, classes)


def test_log_softmax_models_output_log_probabilities():
    for name in ("fc2layer", "course_cnn"):
        out = build_model(name, (1, 28, 28), 10)(torch.randn(4, 1, 28, 28))
        assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-5)


def test_registry_lists_every_model():
    assert model_names() == [
        "alexnet",
        "course_cnn",
        "fc2layer",
        "googlenet",
        "lenet",
        "linear",
        "mobilenet_v2",
        "resnet18",
        "speedrun_net",
        "two_layer",
        "vgg16_bn",
        "vgg_course",
        "zfnet",
    ]


def _prepared_shape(params: Params, dataset: str) -> tuple[int, ...]:
    """The input shape the prepare stage writes for `dataset`."""
    config = params.dataset(dataset)
    if config.kind == "imagefolder":
        return (3, config.prepare.crop, config.prepare.crop)
    return {"mnist": mnist.IMAGE_SHAPE, "cifar10": cifar10.IMAGE_SHAPE, "spiral": (2,)}[config.kind]


# The pipeline test trains only some of these through DVC; this builds every one params.yaml declares.
@pytest.mark.parametrize("name", sorted(PARAMS.experiments))
def test_every_experiment_in_params_builds_its_model_for_its_data(name):
    experiment = PARAMS.experiment(name)
    shape = _prepared_shape(PARAMS, experiment.dataset)
    model = build_model(experiment.model, shape, 7, **experiment.model_args).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize(("model", "args", "expected"), [
    ("resnet9000", {}, "experiments.mnist_cnn.model: unknown model 'resnet9000'; use one of alexnet, course_cnn"),
    ("course_cnn", {"n_features": 6},
     "experiments.mnist_cnn.model_args.n_features: unknown option for model 'course_cnn'; accepted: n_feature"),
    ("course_cnn", {"n_feature": 0},
     "experiments.mnist_cnn.model_args.n_feature: 0 is not accepted; a size must be at least 1"),
])
def test_a_bad_model_or_option_is_one_line_naming_its_key(model, args, expected):
    """Checked by the train stage before any work (the params model cannot: models sit above it)."""
    with pytest.raises(ConfigError) as raised:
        check_model_args(model, args, "experiments.mnist_cnn")
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)
