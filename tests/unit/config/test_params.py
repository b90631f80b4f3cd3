"""params.yaml validated: every mistake is one line naming its key's path and what is accepted."""

from __future__ import annotations

import re

import pytest

from cnnlab.config.params import parse_params
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab_tools.sandbox import set_in
from conftest import committed_params


@pytest.mark.parametrize(
    ("key_path", "value", "expected"),
    [
        ("experiments.mnist_cnn.train.optimiser", {"lr": 0.1}, "experiments.mnist_cnn.train.optimiser: unknown key; accepted keys:"),
        ("experiments.mnist_cnn.train.optimizer.lr", "fast", "experiments.mnist_cnn.train.optimizer.lr: expected a number, got 'fast'"),
        ("experiments.mnist_cnn.train.epochs", 1.5, "experiments.mnist_cnn.train.epochs: expected an integer"),
        ("experiments.mnist_cnn.inputs.normalize", "zscore", "experiments.mnist_cnn.inputs.normalize: 'zscore' is not accepted; use one of 'course', 'train_stats', 'none' or a mapping with keys mean, std"),
        ("experiments.mnist_cnn.dataset", "imagenet", "experiments.mnist_cnn.dataset: unknown dataset 'imagenet'; use one of spiral, mnist, cifar10"),
        ("datasets.mnist.kind", "mnistt", "datasets.mnist.kind: unknown dataset kind 'mnistt'; use one of"),
        ("datasets.mnist.acquire.source", "s3", "datasets.mnist.acquire.source: 's3' is not accepted; use one of 'official', 'synthetic'"),
        ("experiments.mnist_cnn.train.optimizer.lr", -1, "experiments.mnist_cnn.train.optimizer.lr: -1 is not accepted; it must be greater than 0"),
        ("experiments.mnist_cnn.train.optimizer.lr", float("nan"), "experiments.mnist_cnn.train.optimizer.lr: nan is not accepted; it must be a finite number"),
        ("experiments.mnist_cnn.train.optimizer.momentum", -1, "experiments.mnist_cnn.train.optimizer.momentum: -1 is not accepted; it must be greater than or equal to 0"),
        ("experiments.mnist_cnn.train.optimizer.momentum", 1.0, "momentum: 1.0 is not accepted; it must be less than 1"),
        ("experiments.mnist_cnn.train.optimizer.weight_decay", -1, "experiments.mnist_cnn.train.optimizer.weight_decay: -1 is not accepted; it must be greater than or equal to 0"),
        ("experiments.mnist_cnn.train.epochs", 0, "experiments.mnist_cnn.train.epochs: 0 is not accepted; it must be greater than or equal to 1"),
        ("experiments.mnist_cnn.train.epochs", True, "experiments.mnist_cnn.train.epochs: expected an integer, got True"),
        ("experiments.mnist_cnn.train.epochs", "3", "experiments.mnist_cnn.train.epochs: expected an integer, got '3'"),
        ("experiments.mnist_cnn.study", "", "experiments.mnist_cnn.study: '' is not accepted; it must have at least 1 character"),
        ("experiments.mnist_cnn.inputs.normalize", {"mean": [0.1], "std": [0]}, "experiments.mnist_cnn.inputs.normalize.std[0]: 0 is not accepted; it must be greater than 0"),
        ("experiments.mnist_cnn.evaluate", {"tta": "rotate"}, "experiments.mnist_cnn.evaluate.tta: 'rotate' is not accepted; use one of 'none', 'flip'"),
        ("runtime.checkpoint_every_s", -5, "runtime.checkpoint_every_s: -5 is not accepted; it must be greater than or equal to 0"),
    ],
)
def test_bad_params_are_named_with_their_key_path(key_path, value, expected):
    params = committed_params()
    tree = params
    *parents, last = key_path.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value
    with pytest.raises(ConfigError) as raised:
        parse_params(params)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_precision_is_an_experiments_param_and_runtime_settings_are_checked():
    raw = committed_params()
    set_in(raw, "experiments.mnist_cnn.train.precision", "fp16")
    with pytest.raises(ConfigError, match=r"experiments\.mnist_cnn\.train\.precision: 'fp16' is not accepted; "
                                          r"use one of 'fp32', 'bf16'"):
        parse_params(raw)
    with pytest.raises(ConfigError, match=r"runtime\.precision: unknown key; accepted keys: channels_last, compile"):
        parse_params({"runtime": {"precision": "bf16"}})
    with pytest.raises(ConfigError, match=r"runtime\.channels_last: 'yes' is not accepted"):
        parse_params({"runtime": {"channels_last": "yes"}})
    with pytest.raises(ConfigError, match=r"runtime\.compiled: unknown key"):
        parse_params({"runtime": {"compiled": True}})


@pytest.mark.parametrize(("dotted", "value", "message"), [
    ("transfer.catsdogs_vgg16.backbone.source", "models/zoo_vgg16_bn",
     r"backbone\.source: .* set it to src/cnnlab/models/pretrained\.py"),
    ("transfer.catsdogs_cifar_vgg16_bn.backbone.name", "no_such_experiment",
     r"with weights: pipeline, name an experiment of this pipeline"),
    ("transfer.catsdogs_vgg16.head.train.augment", {"flip": True}, r"cached features cannot be augmented"),
    ("transfer.catsdogs_vgg16.dataset", "nope", r"transfer\.catsdogs_vgg16\.dataset: unknown dataset 'nope'"),
])
def test_bad_transfer_settings_are_one_line_errors(dotted: str, value: object, message: str):
    raw = committed_params()
    set_in(raw, dotted, value)
    with pytest.raises(CnnlabError, match=message) as error:
        parse_params(raw)
    assert "\n" not in str(error.value)



@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"experiment": "mnist_cnnn", "dataset": "mnist", "seed": 7},
         "replicates.x.experiment: unknown experiment 'mnist_cnnn'; use one of"),
        ({"experiment": "mnist_cnn", "dataset": "cifar10", "seed": 7},
         "replicates.x.dataset: 'cifar10' is not mnist_cnn's dataset; set mnist"),
        ({"experiment": "mnist_cnn", "dataset": "mnist", "seed": 1},
         "replicates.x.seed: mnist_cnn already has a run with seed 1; give each replicate a seed of its own"),
        ({"experiment": "mnist_cnn", "dataset": "mnist", "seed": 0},
         "replicates.x.seed: mnist_cnn already has a run with seed 0"),
        ({"experiment": "mnist_cnn", "dataset": "mnist"}, "replicates.x.seed: required key is missing"),
    ],
)
def test_a_bad_replicate_is_one_line_naming_it(entry, message):
    params = committed_params()
    params["replicates"]["x"] = entry
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(params)
    params["replicates"] = {"mnist_fc": {"experiment": "mnist_cnn", "dataset": "mnist", "seed": 9}}
    with pytest.raises(ConfigError, match=r"replicates\.mnist_fc: 'mnist_fc' is also an experiment"):
        parse_params(params)


def test_an_experiments_seeds_are_its_own_then_its_replicates():
    params = parse_params(committed_params())
    assert params.seeds("mnist_cnn") == {f"mnist_cnn{'' if s == 0 else f'-seed{s}'}": s for s in range(5)}
    assert params.seeds("cifar_vgg") == {"cifar_vgg": 0}, "GPU-sized experiments run once by default"
    assert all(len(params.seeds(name)) == 1 for name in params.experiments if name.startswith("zoo_"))
    assert params.check_replicate("mnist_cnn-seed2", "mnist_cnn").seed == 2
    with pytest.raises(ConfigError, match="replicate 'mnist_cnn-seed2' is a seed of mnist_cnn, not of mnist_fc"):
        params.check_replicate("mnist_cnn-seed2", "mnist_fc")
