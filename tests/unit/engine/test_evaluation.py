"""Evaluation counts what a model got right, per class and in the confusion matrix."""

from __future__ import annotations

import torch

from cnnlab.data.loader import DeviceSplit, make_normalizer
from cnnlab.data.prepared import DatasetMeta
from cnnlab.engine.evaluation import evaluate

CPU = torch.device("cpu")


def meta(shape, is_image, mean=(0.0,), std=(1.0,), course=None) -> DatasetMeta:
    return DatasetMeta("t", "t", tuple("abc"), shape, is_image, mean, std, course, course and (0.3081,), {}, "synthetic")


def test_evaluation_counts_confusion_and_per_class_accuracy():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0].long(), 3).float()

    inputs = torch.tensor([[0.0], [1.0], [1.0], [2.0]])
    targets = torch.tensor([0, 1, 2, 2])
    normalize = make_normalizer(meta((1,), False), "none", CPU)
    result = evaluate(Fixed(), DeviceSplit(inputs, targets), normalize, 2, 3)
    assert result.confusion == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert result.per_class_accuracy == [1.0, 1.0, 0.5]
    assert result.accuracy == 0.75
