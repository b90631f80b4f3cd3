"""The CIFAR model zoo: shapes, pinned sizes, and that each model learns."""

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.complexity import count_macs, count_parameters
from cnnlab.models.registry import build_model, check_model_args
from cnnlab_tools.complexity import zoo_models
from conftest import committed_params_file

CIFAR = (3, 32, 32)

# Parameters and MACs per image for 3x32x32 and 10 classes. lenet is the course's
# count; vgg_course and resnet18 equal kuangliu/pytorch-cifar's VGG11 and ResNet18.
# mobilenet_v2 follows the paper's blocks, 60,240 fewer than kuangliu's 2,296,922
# (see cnnlab/models/mobilenet.py).
SIZES = {
    "lenet": (62_006, 651_720),
    "alexnet": (23_272_266, 62_742_528),
    "zfnet": (35_855_178, 200_515_584),
    "vgg_course": (9_231_114, 152_769_536),
    "vgg16_bn": (14_728_266, 313_201_664),
    "googlenet": (5_879_066, 1_447_241_728),
    "resnet18": (11_173_962, 555_422_720),
    "mobilenet_v2": (2_236_682, 87_976_448),
    "speedrun_net": (1_972_792, 118_147_360),
}


ZOO = sorted(SIZES)


def test_every_zoo_model_is_pinned(tmp_path):
    """The zoo is params.yaml's zoo study; each of its models has its sizes pinned here."""
    assert sorted(zoo_models(str(committed_params_file(tmp_path)))) == sorted(SIZES)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_shape_parameters_and_macs(name):
    torch.manual_seed(0)
    model = build_model(name, CIFAR, 10)
    params, macs = SIZES[name]
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    assert count_parameters(model) == params
    assert count_macs(model, CIFAR) == macs


# Adam at 1e-3 overshoots on the AlexNet family's 4096-wide FC layers in a handful of steps.
LEARNING_RATES = {"alexnet": 1e-4, "zfnet": 1e-4}


@pytest.mark.parametrize("name", [name for name in ZOO if name != "speedrun_net"])  # its own recipe: test_speedrun
def test_a_few_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = build_model(name, CIFAR, 10)
    images, labels = torch.randn(8, *CIFAR), torch.randint(0, 10, (8,))
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATES.get(name, 1e-3))
    model.train()
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = nn.functional.cross_entropy(model(images), labels).item()
    assert final < losses[0], [*losses, final]


def test_lenet_is_the_course_net_with_its_hand_counted_macs():
    model = build_model("lenet", CIFAR, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (5, 5)), (6, 16, (5, 5))]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(400, 120), (120, 84), (84, 10)]
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in model.modules())
    conv1, conv2 = 6 * 28 * 28 * (3 * 5 * 5), 16 * 10 * 10 * (6 * 5 * 5)
    assert (conv1, conv2) == (352_800, 240_000)
    assert count_macs(model, CIFAR) == conv1 + conv2 + 400 * 120 + 120 * 84 + 84 * 10 == 651_720


def test_lenet_takes_its_flatten_size_from_the_input_shape():
    model = build_model("lenet", (1, 28, 28), 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # 28 -> 24 -> 12 -> 8 -> 4: the first Linear sees 16*4*4 = 256 features, not 400.
    assert next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features == 256
    assert count_parameters(model) == 44_426


@pytest.mark.parametrize("name", ["lenet", "alexnet", "zfnet", "googlenet", "resnet18", "mobilenet_v2"])
def test_models_without_a_fixed_flatten_size_take_one_channel_28x28(name):
    model = build_model(name, (1, 28, 28), 10).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["vgg_course", "vgg16_bn"])
def test_vgg_refuses_inputs_its_five_pools_would_erase(name):
    with pytest.raises(ConfigError, match="32x32"):
        build_model(name, (1, 28, 28), 10)






def test_the_true_vgg16_costs_more_than_the_course_vgg():
    vgg16, vgg11 = build_model("vgg16_bn", CIFAR, 10), build_model("vgg_course", CIFAR, 10)
    assert count_macs(vgg16, CIFAR) > count_macs(vgg11, CIFAR)


def test_zoo_options_are_typed_and_checked():
    check_model_args("alexnet", {"dropout": 0.2}, "experiment")
    check_model_args("mobilenet_v2", {"width_mult": 0.5}, "experiment")
    with pytest.raises(ConfigError, match="expected float"):
        check_model_args("googlenet", {"dropout": 0}, "experiment")
    with pytest.raises(ConfigError, match="unknown option"):
        check_model_args("resnet18", {"width_mult": 0.5}, "experiment")
    half = build_model("mobilenet_v2", CIFAR, 10, width_mult=0.5)
    assert count_parameters(half) < count_parameters(build_model("mobilenet_v2", CIFAR, 10))
    assert half(torch.zeros(2, *CIFAR)).shape == (2, 10)


