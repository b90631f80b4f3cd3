"""`replicates:`: more seeds of an experiment, each trained and evaluated by stages of its own.

An entry `mnist_cnn-seed1: {experiment: mnist_cnn, dataset: mnist, seed: 1}` trains mnist_cnn's model
again with seed 1 (train_replicate@mnist_cnn-seed1) into models/mnist_cnn-seed1 and evaluates it
(evaluate_replicate@...) into metrics/mnist_cnn-seed1.json; the report gathers an experiment's seeds (its
own `train.seed` and its replicates') into a mean, a spread and intervals. `dataset` repeats the
experiment's, because dvc.yaml cannot look it up: it is checked. `python -m cnnlab_tools.replicates`
writes the entries.
"""

from __future__ import annotations

import dataclasses

from cnnlab.config.experiments import ExperimentConfig
from cnnlab.io import json_digest
from cnnlab.schema import Name, section


@section
class ReplicateConfig:
    experiment: Name
    dataset: Name
    seed: int


def replicate_key(experiment: str, seed: int) -> str:
    return f"{experiment}-seed{seed}"


def group_digest(config: ExperimentConfig) -> str:
    """What an experiment's seeds share: every training setting but the seed. Their parent run in MLflow is
    keyed by it, so seeds trained with other settings never average together."""
    settings = dataclasses.asdict(config)
    settings.pop("evaluate")
    settings["train"].pop("seed")
    return json_digest(settings)[:16]
