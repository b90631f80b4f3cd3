"""The whole params.yaml: its sections validated, and the references between them checked.

A typo fails in the first stage that reads the file, in one line naming the key's path. What needs the
library to check (a model's options, a torchvision backbone's name) is checked by the pipeline before the
stage that uses it does any work (cnnlab.pipeline.checks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.config.datasets import DatasetConfig, parse_dataset
from cnnlab.config.experiments import ExperimentConfig
from cnnlab.config.replicates import ReplicateConfig
from cnnlab.config.report import ReportConfig
from cnnlab.config.runtime import RuntimeConfig
from cnnlab.config.transfer import TORCHVISION_BACKBONE_SOURCE, TransferConfig
from cnnlab.errors import ConfigError
from cnnlab.schema import parse_dataclass

PARAMS_FILE = "params.yaml"
TOP_LEVEL_KEYS = ("datasets", "experiments", "replicates", "report", "runtime", "transfer")


@dataclasses.dataclass(frozen=True)
class Params:
    datasets: dict[str, DatasetConfig]
    experiments: dict[str, ExperimentConfig]
    report: ReportConfig
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    transfer: dict[str, TransferConfig] = field(default_factory=dict)
    replicates: dict[str, ReplicateConfig] = field(default_factory=dict)

    def check_replicate(self, key: str, experiment: str) -> ReplicateConfig:
        """Replicate `key`, which must be one of `experiment`'s."""
        if key not in self.replicates:
            known = ", ".join(self.replicates) or "none"
            raise ConfigError(f"replicate {key!r} is not in {PARAMS_FILE}'s replicates: (known: {known})")
        replicate = self.replicates[key]
        if replicate.experiment != experiment:
            raise ConfigError(f"replicate {key!r} is a seed of {replicate.experiment}, not of {experiment}")
        return replicate

    def seeds(self, experiment: str) -> dict[str, int]:
        """Every run of `experiment` (its own, named as it is, and its replicates) and its seed."""
        runs = {experiment: self.experiment(experiment).train.seed}
        runs |= {key: r.seed for key, r in self.replicates.items() if r.experiment == experiment}
        return runs

    def transfer_experiment(self, name: str) -> TransferConfig:
        if name not in self.transfer:
            raise ConfigError(
                f"transfer experiment {name!r} is not in {PARAMS_FILE}; known: {', '.join(self.transfer)}"
            )
        return self.transfer[name]

    def experiment(self, name: str) -> ExperimentConfig:
        if name not in self.experiments:
            raise ConfigError(f"experiment {name!r} is not in {PARAMS_FILE}; known: {', '.join(self.experiments)}")
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"dataset {name!r} is not in {PARAMS_FILE}; known: {', '.join(self.datasets)}")
        return self.datasets[name]


def parse_params(raw: Any) -> Params:
    """Validate a whole params.yaml mapping, the references between its sections included."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{PARAMS_FILE}: expected a mapping at the top level")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{key}: unknown top-level key in {PARAMS_FILE}; accepted keys: {', '.join(TOP_LEVEL_KEYS)}"
            )
    datasets_raw = raw.get("datasets") or {}
    experiments_raw = raw.get("experiments") or {}
    transfer_raw = raw.get("transfer") or {}
    if not isinstance(datasets_raw, dict) or not isinstance(experiments_raw, dict):
        raise ConfigError("datasets and experiments must be mappings of name -> settings")
    if not isinstance(transfer_raw, dict):
        raise ConfigError("transfer must be a mapping of name -> settings")
    datasets = {name: parse_dataset(name, data) for name, data in datasets_raw.items()}
    experiments = {
        name: parse_dataclass(ExperimentConfig, data, f"experiments.{name}") for name, data in experiments_raw.items()
    }
    for name, experiment in experiments.items():
        if experiment.dataset not in datasets:
            raise ConfigError(
                f"experiments.{name}.dataset: unknown dataset {experiment.dataset!r}; use one of {', '.join(datasets)}"
            )
    transfer = {name: parse_dataclass(TransferConfig, data, f"transfer.{name}") for name, data in transfer_raw.items()}
    for name, config in transfer.items():
        _check_transfer(name, config, datasets, experiments)
    replicates_raw = raw.get("replicates") or {}
    if not isinstance(replicates_raw, dict):
        raise ConfigError("replicates must be a mapping of name -> {experiment, dataset, seed}")
    replicates = {
        key: parse_dataclass(ReplicateConfig, data, f"replicates.{key}") for key, data in replicates_raw.items()
    }
    _check_replicates(replicates, experiments, transfer)
    report = parse_dataclass(ReportConfig, raw.get("report"), "report")
    runs = [*experiments, *transfer]
    for i, comparison in enumerate(report.comparisons):
        for side in (comparison.baseline, comparison.candidate):
            if side not in runs:
                raise ConfigError(f"report.comparisons[{i}]: unknown experiment {side!r}; use one of {', '.join(runs)}")
    runtime = parse_dataclass(RuntimeConfig, raw.get("runtime"), "runtime")
    return Params(
        datasets=datasets,
        experiments=experiments,
        report=report,
        runtime=runtime,
        transfer=transfer,
        replicates=replicates,
    )


def _check_replicates(
    replicates: dict[str, ReplicateConfig],
    experiments: dict[str, ExperimentConfig],
    transfer: dict[str, TransferConfig],
) -> None:
    """Each replicate names an experiment and its dataset, a seed no other run of it has, and a name of its own."""
    seen = {name: {config.train.seed} for name, config in experiments.items()}
    for key, replicate in replicates.items():
        where = f"replicates.{key}"
        if key in experiments or key in transfer:
            raise ConfigError(f"{where}: {key!r} is also an experiment; both would write models/{key}, rename one")
        if replicate.experiment not in experiments:
            raise ConfigError(
                f"{where}.experiment: unknown experiment {replicate.experiment!r}; use one of {', '.join(experiments)}"
            )
        dataset = experiments[replicate.experiment].dataset
        if replicate.dataset != dataset:
            raise ConfigError(
                f"{where}.dataset: {replicate.dataset!r} is not {replicate.experiment}'s dataset; "
                f"set {dataset} (dvc.yaml tracks the data through it)"
            )
        if replicate.seed in seen[replicate.experiment]:
            raise ConfigError(
                f"{where}.seed: {replicate.experiment} already has a run with seed {replicate.seed}; "
                "give each replicate a seed of its own"
            )
        seen[replicate.experiment].add(replicate.seed)


def _check_transfer(
    name: str, config: TransferConfig, datasets: dict[str, DatasetConfig], experiments: dict[str, ExperimentConfig]
) -> None:
    """The references of one `transfer:` entry: its dataset, a pipeline backbone, and the DVC source naming it."""
    where = f"transfer.{name}"
    if name in experiments:
        raise ConfigError(f"{where}: {name!r} is also an experiment; both would write models/{name}, rename one")
    if config.dataset not in datasets:
        raise ConfigError(f"{where}.dataset: unknown dataset {config.dataset!r}; use one of {', '.join(datasets)}")
    if config.inputs.permute_pixels:
        raise ConfigError(
            f"{where}.inputs.permute_pixels: a pretrained backbone needs the images as they are; set false"
        )
    backbone = config.backbone
    if backbone.weights == "pipeline" and backbone.name not in experiments:
        raise ConfigError(
            f"{where}.backbone.name: with weights: pipeline, name an experiment of this pipeline "
            f"({', '.join(experiments)}), not {backbone.name!r}"
        )
    expected_source = f"models/{backbone.name}" if backbone.weights == "pipeline" else TORCHVISION_BACKBONE_SOURCE
    if backbone.source != expected_source:
        raise ConfigError(
            f"{where}.backbone.source: {backbone.source!r} is not where this backbone comes from; "
            f"set it to {expected_source} (DVC tracks the backbone through it)"
        )
    if config.evaluate.tta != "none":
        raise ConfigError(
            f"{where}.evaluate.tta: the head is evaluated on the backbone's features, which cannot be flipped; set none"
        )
    if config.uses_feature_cache and config.head.train.augment.active:
        raise ConfigError(
            f"{where}.head.train.augment: cached features cannot be augmented; "
            "turn augment off or set backbone.finetune_layers above 0"
        )


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the syntax") from None
    return parse_params(raw)
