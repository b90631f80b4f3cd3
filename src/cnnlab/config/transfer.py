"""`transfer:` entries: a frozen backbone's features computed once, and a new last layer trained on them.

Stage features@ reads dataset, inputs and backbone; head@ reads study and head; evaluate_head@ reads evaluate.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from cnnlab.config.experiments import EvaluateConfig, InputConfig, Precision, TrainConfig
from cnnlab.schema import Fraction, Name, NonNegativeInt, section

# What dvc.yaml tracks a torchvision backbone by (the code that loads and checks its weights).
TORCHVISION_BACKBONE_SOURCE = "src/cnnlab/models/pretrained.py"


@section
class BackboneConfig:
    """The frozen feature extractor of a transfer experiment.

    `source` exists for DVC: dvc.yaml cannot pick a dependency per case, so each
    entry names the file or output its backbone comes from, and it is checked here.
    """

    name: Name  # a torchvision architecture (vgg16), or with weights: pipeline an experiment of this pipeline
    weights: Literal["imagenet", "none", "pipeline"]
    source: Name  # src/cnnlab/models/pretrained.py for torchvision's; models/<name> for weights: pipeline
    weights_file: str = ""  # imagenet: a local copy of torchvision's file instead of torch.hub's cache
    seed: int = 0  # weights: none: seeds the random initialisation
    finetune_layers: NonNegativeInt = (
        0  # > 0: also train the backbone's last N layers with weights, from images (no cache)
    )
    imagenet_preview: NonNegativeInt = (
        5  # imagenet: validation images the untouched model labels with its top 5 classes
    )
    precision: Precision = "fp32"  # of the forward passes that compute the features

    def __post_init__(self) -> None:
        if self.weights_file and self.weights != "imagenet":
            raise ValueError("backbone.weights_file is only read with weights: imagenet; clear it")


@section
class HeadConfig:
    """The new last layer: Dropout(dropout) -> Linear(features, classes), trained on the backbone's features."""

    # VGG16 has Dropout(0.5) right before the layer the course replaces, active while it trains the new one
    dropout: Fraction = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)


@section
class TransferConfig:
    """One entry of `transfer:`."""

    study: Name
    dataset: Name
    backbone: BackboneConfig
    inputs: InputConfig
    head: HeadConfig
    evaluate: EvaluateConfig

    @property
    def uses_feature_cache(self) -> bool:
        return self.backbone.finetune_layers == 0
