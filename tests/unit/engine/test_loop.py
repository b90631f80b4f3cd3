"""The training loop on real tensors: the course's spiral result, determinism, and what a CNN needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cnnlab.config.datasets import SpiralOptions, SyntheticSizes
from cnnlab.config.experiments import OptimizerConfig, TrainConfig
from cnnlab.data import synthetic
from cnnlab.data.kinds import spiral
from cnnlab.data.loader import DeviceSplit, make_normalizer, permute_pixels
from cnnlab.data.prepared import DatasetMeta, channel_stats
from cnnlab.engine import loop
from cnnlab.engine.distributed import World
from cnnlab.engine.evaluation import evaluate
from cnnlab.errors import ConfigError
from cnnlab.models.registry import build_model

CPU = torch.device("cpu")


def spiral_splits(points: int = 1000):
    generator = torch.Generator().manual_seed(0)
    options = SpiralOptions(points_per_class=points)
    return DeviceSplit(*spiral.make_spiral(options, generator)), DeviceSplit(*spiral.make_spiral(options, generator))


def meta(shape, is_image, mean=(0.0,), std=(1.0,), course=None) -> DatasetMeta:
    return DatasetMeta("t", "t", tuple("abc"), shape, is_image, mean, std, course, course and (0.3081,), {}, "synthetic")


def train_spiral(model_name: str, optimizer: OptimizerConfig, seed: int = 0, epochs: int = 1000):
    train, test = spiral_splits()
    normalize = make_normalizer(meta((2,), False, (0.0, 0.0), (1.0, 1.0)), "none", CPU)
    torch.manual_seed(seed)
    model = build_model(model_name, (2,), 3, hidden=100)
    config = TrainConfig(optimizer=optimizer, epochs=epochs, batch_size=0, seed=seed)
    result = loop.train(model, train, normalize, config, progress=False)
    return result, evaluate(model, test, normalize, 0, 3)


def test_spiral_reproduces_the_course():
    linear, linear_eval = train_spiral("linear", OptimizerConfig(name="sgd", lr=1e-3, weight_decay=1e-5))
    mlp, mlp_eval = train_spiral("two_layer", OptimizerConfig(name="adam", lr=1e-3, weight_decay=1e-5))
    assert 0.40 <= linear.history[-1].train_accuracy <= 0.60  # "tops out around 50%"
    assert 0.40 <= linear_eval.accuracy <= 0.60
    assert mlp.history[-1].train_accuracy > 0.90  # "well above 90%"
    assert mlp_eval.accuracy > 0.90


def test_same_seed_gives_identical_metrics_on_cpu():
    first, first_eval = train_spiral("two_layer", OptimizerConfig(name="adam", lr=1e-3), seed=3, epochs=50)
    second, second_eval = train_spiral("two_layer", OptimizerConfig(name="adam", lr=1e-3), seed=3, epochs=50)
    other, _ = train_spiral("two_layer", OptimizerConfig(name="adam", lr=1e-3), seed=4, epochs=50)
    losses = [r.train_loss for r in first.history]
    assert losses == [r.train_loss for r in second.history]
    assert first_eval.loss == second_eval.loss and first_eval.confusion == second_eval.confusion
    assert losses != [r.train_loss for r in other.history]










def synthetic_accuracy(model_name: str, permute: bool) -> float:
    train_x, train_y, test_x, test_y = synthetic.make_dataset(SyntheticSizes(4000, 1000, 0), 10, 1, 28)
    mean, std = channel_stats(train_x)
    info = meta((1, 28, 28), True, mean, std)
    if permute:
        permutation = torch.randperm(784, generator=torch.Generator().manual_seed(0))
        train_x, test_x = permute_pixels(train_x, permutation), permute_pixels(test_x, permutation)
    normalize = make_normalizer(info, "train_stats", CPU)
    torch.manual_seed(0)
    model = build_model(model_name, (1, 28, 28), 10)
    config = TrainConfig(optimizer=OptimizerConfig(name="adam", lr=3e-3), epochs=3, batch_size=64)
    loop.train(model, DeviceSplit(train_x, train_y), normalize, config, progress=False)
    return evaluate(model, DeviceSplit(test_x, test_y), normalize, 1000, 10).accuracy


def test_synthetic_images_have_spatial_structure_a_cnn_needs():
    cnn = synthetic_accuracy("course_cnn", permute=False)
    cnn_permuted = synthetic_accuracy("course_cnn", permute=True)
    assert cnn > 0.8, "a small CNN learns the synthetic classes well above chance (10%)"
    assert cnn - cnn_permuted > 0.1, f"permuting pixels must hurt the CNN: {cnn:.3f} vs {cnn_permuted:.3f}"


def test_engine_imports_and_runs_without_mlflow_or_dvc():
    code = (
        "import sys; sys.modules['mlflow'] = None; sys.modules['dvc'] = None\n"
        "import cnnlab.engine.loop, cnnlab.pipeline.train, cnnlab.pipeline.evaluate\n"
        "from cnnlab.tracking.client import open_run, NullTracker\n"
        "assert isinstance(open_run('s', 'r'), NullTracker)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mlflow is not installed" in done.stderr


def test_a_batchnorm_model_as_several_cpu_processes_is_refused_before_it_trains():
    """BatchNorm's statistics are shared across ranks only on GPUs (SyncBatchNorm); per-rank statistics would
    make the result depend on the number of processes."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 6 * 6, 2))
    data = DeviceSplit(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    normalize = make_normalizer(meta((1, 8, 8), True), "none", CPU)
    with pytest.raises(ConfigError, match=r"^this model has BatchNorm, whose statistics several processes share "
                                          r"only on GPUs \(torch's SyncBatchNorm\); unset CNNLAB_NPROC"):
        loop.train(model, data, normalize, TrainConfig(), world=World(rank=0, size=2, backend="gloo"), progress=False)
    # One CPU process in a process group normalises its whole batch itself: nothing to refuse. (No DDP here:
    # `_synchronised_batchnorm` alone, as no process group is joined in this test.)
    assert loop._synchronised_batchnorm(model, CPU, World(rank=0, size=1, backend="gloo")) is model
