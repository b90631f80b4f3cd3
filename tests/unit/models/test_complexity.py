"""The MAC counter: per group for grouped convolutions, flags restored, and torch's FLOP counter agrees."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.models.complexity import count_macs
from cnnlab.models.registry import build_model, model_names

CIFAR = (3, 32, 32)
SHAPES = {"linear": (2,), "two_layer": (2,), "fc2layer": (1, 28, 28), "course_cnn": (1, 28, 28)}


@pytest.mark.parametrize("name", model_names())
def test_the_counter_agrees_with_torchs_flop_counter_on_every_model(name):
    shape = SHAPES.get(name, CIFAR)
    model = build_model(name, shape, 10, **({"hidden": 100} if shape == (2,) else {})).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape))
    assert count_macs(model, shape) * 2 == counter.get_total_flops()


def test_count_macs_counts_grouped_and_depthwise_convs_per_group():
    depthwise = nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=8)
    assert count_macs(depthwise, (8, 5, 5)) == 8 * 5 * 5 * 1 * 3 * 3
    grouped = nn.Sequential(nn.Conv2d(4, 6, kernel_size=3, groups=2), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    assert count_macs(grouped, (4, 6, 6)) == 6 * 4 * 4 * 2 * 3 * 3 + 96 * 3


def test_count_macs_restores_training_flags_and_removes_its_hooks():
    model = build_model("resnet18", CIFAR, 10).train()
    frozen = model.stem[1].eval()
    count_macs(model, CIFAR)
    assert not frozen.training
    assert all(m.training for m in model.modules() if m is not frozen)
    assert not any(m._forward_hooks for m in model.modules())
