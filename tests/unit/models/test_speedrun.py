"""The speedrun recipe (params.yaml `cifar_speedrun`) on CPU: its whitening stem, a few steps, flip TTA."""

from __future__ import annotations

import dataclasses

import torch

from cnnlab.config.datasets import SyntheticSizes
from cnnlab.config.params import parse_params
from cnnlab.data import synthetic
from cnnlab.data.kinds import cifar10
from cnnlab.data.loader import DeviceSplit, Normalizer
from cnnlab.engine import loop
from cnnlab.engine.evaluation import predict
from cnnlab.engine.runtime import Runtime
from cnnlab.models.registry import build_model
from conftest import committed_params

CPU = torch.device("cpu")


def cifar_normalizer() -> Normalizer:
    mean = torch.tensor(cifar10.COURSE_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(cifar10.COURSE_STD).view(1, -1, 1, 1)
    return Normalizer(multiplier=1 / (255 * std), offset=-mean / std)


def synthetic_cifar(count: int) -> DeviceSplit:
    images, labels, _, _ = synthetic.make_dataset(SyntheticSizes(count, 1, seed=0), 10, 3, 32)
    return DeviceSplit(images, labels)


def test_the_stem_whitens_two_by_two_patches_of_the_data_it_was_fitted_to():
    data = synthetic_cifar(512)
    images = cifar_normalizer()(data.inputs)
    model = build_model("speedrun_net", (3, 32, 32), 10)
    model.fit_to_data(images)
    with torch.no_grad():
        whitened = model.whiten(images)[:, :12]  # the other 12 filters are these negated
    channels = whitened.transpose(0, 1).reshape(12, -1)
    covariance = torch.cov(channels)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05), covariance.diagonal()
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])
    assert not any(p.requires_grad for p in model.whiten.parameters())


def test_the_recipe_trains_a_few_steps_and_its_loss_falls():
    """The committed recipe (Nesterov SGD, label smoothing, shifts, flips), 6 steps of 256 on CPU.

    Its rate is airbench's per-image rate times the batch: at a quarter of the batch, a quarter of the rate.
    """
    recipe = parse_params(committed_params()).experiment("cifar_speedrun")
    optimizer = dataclasses.replace(recipe.train.optimizer, lr=recipe.train.optimizer.lr * 256 / recipe.train.batch_size)
    config = dataclasses.replace(recipe.train, optimizer=optimizer, epochs=3, batch_size=256)
    torch.manual_seed(0)
    model = build_model(recipe.model, (3, 32, 32), 10, **recipe.model_args)
    losses: list[float] = []
    runtime = Runtime(CPU, "fp32", channels_last=True)
    loop.train(model, synthetic_cifar(512), cifar_normalizer(), config, runtime,
                 on_epoch=lambda record: losses.append(record.train_loss), progress=False)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] * 0.9, losses
    assert model.whiten.weight.abs().sum() > 0, "fitted to the data before the first step"


def test_flip_tta_averages_each_image_with_its_mirror_image():
    torch.manual_seed(0)
    model = build_model("speedrun_net", (3, 32, 32), 10).eval()
    data = synthetic_cifar(8)
    normalize = cifar_normalizer()
    plain = predict(model, data.inputs, normalize, 4)
    mirrored = predict(model, data.inputs.flip(-1), normalize, 4)
    both = predict(model, data.inputs, normalize, 4, tta="flip")
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-5) and not torch.allclose(both, plain, atol=1e-3)


def test_flip_translate_tta_adds_the_image_shifted_a_pixel_each_way():
    torch.manual_seed(0)
    model = build_model("speedrun_net", (3, 32, 32), 10).eval()
    data = synthetic_cifar(8)
    normalize = cifar_normalizer()
    both = predict(model, data.inputs, normalize, 4, tta="flip")
    padded = torch.nn.functional.pad(normalize(data.inputs), (1, 1, 1, 1), mode="reflect")
    identity = Normalizer(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
    shifted = [predict(model, padded[..., :32, :32], identity, 4, tta="flip"),
               predict(model, padded[..., 2:, 2:], identity, 4, tta="flip")]
    expected = (both + (shifted[0] + shifted[1]) / 2) / 2
    assert torch.allclose(predict(model, data.inputs, normalize, 4, tta="flip_translate"), expected, atol=1e-5)


def test_the_whitening_bias_trains_for_its_first_epochs_only():
    model = build_model("speedrun_net", (3, 32, 32), 10, whiten_bias_epochs=3)
    assert model.whiten.bias.requires_grad and not model.whiten.weight.requires_grad
    model.start_epoch(3)
    assert model.whiten.bias.requires_grad
    model.start_epoch(4)
    assert not model.whiten.bias.requires_grad
    assert not build_model("speedrun_net", (3, 32, 32), 10).whiten.bias.requires_grad, "by default: never"
