"""The training engine on real tensors: determinism, the course's spiral result, normalisation."""

from __future__ import annotations

import subprocess
import sys

import torch

from cnnlab import engine
from cnnlab.config import OptimizerConfig, TrainConfig
from cnnlab.data import spiral, synthetic
from cnnlab.data.loader import DeviceSplit, batch_indices, make_normalizer, permute_pixels
from cnnlab.data.prepared import DatasetMeta, channel_stats
from cnnlab.models import build_model

CPU = torch.device("cpu")


def spiral_splits(points: int = 1000):
    generator = torch.Generator().manual_seed(0)
    options = spiral.SpiralOptions(points_per_class=points)
    return DeviceSplit(*spiral.make_spiral(options, generator)), DeviceSplit(*spiral.make_spiral(options, generator))


def meta(shape, is_image, mean=(0.0,), std=(1.0,), course=None) -> DatasetMeta:
    return DatasetMeta("t", "t", tuple("abc"), shape, is_image, mean, std, course, course and (0.3081,), {}, "synthetic")


def train_spiral(model_name: str, optimizer: OptimizerConfig, seed: int = 0, epochs: int = 1000):
    train, test = spiral_splits()
    normalize = make_normalizer(meta((2,), False, (0.0, 0.0), (1.0, 1.0)), "none", CPU)
    torch.manual_seed(seed)
    model = build_model(model_name, (2,), 3, hidden=100)
    config = TrainConfig(optimizer=optimizer, epochs=epochs, batch_size=0, seed=seed)
    result = engine.train(model, train, normalize, config, progress=False)
    return result, engine.evaluate(model, test, normalize, 0, 3)


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


def test_minibatch_shuffling_is_seeded_and_covers_every_sample_once():
    generator = torch.Generator().manual_seed(0)
    batches = list(batch_indices(130, 64, CPU, generator))
    assert [len(b) for b in batches] == [64, 64, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(130))
    again = list(batch_indices(130, 64, CPU, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_normalizer_matches_totensor_then_normalize():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    normalize = make_normalizer(meta((1, 28, 28), True, course=(0.1307,)), "course", CPU)
    expected = (images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(normalize(images), expected, atol=1e-5)


def test_pixel_permutation_is_one_fixed_permutation_for_all_images():
    images = torch.arange(2 * 9, dtype=torch.uint8).view(2, 1, 3, 3)
    permutation = torch.tensor([8, 7, 6, 5, 4, 3, 2, 1, 0])
    permuted = permute_pixels(images, permutation)
    assert permuted[0, 0].flatten().tolist() == list(range(8, -1, -1))
    assert permuted[1, 0].flatten().tolist() == list(range(17, 8, -1))


def test_evaluation_counts_confusion_and_per_class_accuracy():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0].long(), 3).float()

    inputs = torch.tensor([[0.0], [1.0], [1.0], [2.0]])
    targets = torch.tensor([0, 1, 2, 2])
    normalize = make_normalizer(meta((1,), False), "none", CPU)
    result = engine.evaluate(Fixed(), DeviceSplit(inputs, targets), normalize, 2, 3)
    assert result.confusion == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert result.per_class_accuracy == [1.0, 1.0, 0.5]
    assert result.accuracy == 0.75


def synthetic_accuracy(model_name: str, permute: bool) -> float:
    train_x, train_y, test_x, test_y = synthetic.make_dataset(synthetic.SyntheticSizes(4000, 1000, 0), 10, 1, 28)
    mean, std = channel_stats(train_x)
    info = meta((1, 28, 28), True, mean, std)
    if permute:
        permutation = torch.randperm(784, generator=torch.Generator().manual_seed(0))
        train_x, test_x = permute_pixels(train_x, permutation), permute_pixels(test_x, permutation)
    normalize = make_normalizer(info, "train_stats", CPU)
    torch.manual_seed(0)
    model = build_model(model_name, (1, 28, 28), 10)
    config = TrainConfig(optimizer=OptimizerConfig(name="adam", lr=3e-3), epochs=3, batch_size=64)
    engine.train(model, DeviceSplit(train_x, train_y), normalize, config, progress=False)
    return engine.evaluate(model, DeviceSplit(test_x, test_y), normalize, 1000, 10).accuracy


def test_synthetic_images_have_spatial_structure_a_cnn_needs():
    cnn = synthetic_accuracy("course_cnn", permute=False)
    cnn_permuted = synthetic_accuracy("course_cnn", permute=True)
    assert cnn > 0.8, "a small CNN learns the synthetic classes well above chance (10%)"
    assert cnn - cnn_permuted > 0.1, f"permuting pixels must hurt the CNN: {cnn:.3f} vs {cnn_permuted:.3f}"


def test_engine_imports_and_runs_without_mlflow_or_dvc():
    code = (
        "import sys; sys.modules['mlflow'] = None; sys.modules['dvc'] = None\n"
        "import cnnlab.engine, cnnlab.workflow\n"
        "from cnnlab.tracking import open_run, NullTracker\n"
        "assert isinstance(open_run('s', 'r'), NullTracker)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mlflow is not installed" in done.stderr
