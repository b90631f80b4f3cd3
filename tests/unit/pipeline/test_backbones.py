"""Backbones for transfer learning, without DVC: cached features, fine-tuning, resizing, ImageNet's labels."""

from __future__ import annotations

import pytest
import torch

from cnnlab.config.experiments import TrainConfig
from cnnlab.config.transfer import BackboneConfig
from cnnlab.data.loader import DeviceSplit, make_normalizer
from cnnlab.data.prepared import DatasetMeta
from cnnlab.engine import loop
from cnnlab.engine.runtime import Runtime
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models import pretrained
from cnnlab.models.registry import build_model
from cnnlab.paths import Layout
from cnnlab.pipeline.backbones import (
    TransferModel,
    backbone_features,
    fit_to_backbone,
    freeze_all_but_last,
    load_backbone,
    new_head,
)


def _meta(shape: tuple[int, ...]) -> DatasetMeta:
    return DatasetMeta("t", "imagefolder", ("a", "b"), shape, True, (0.5,) * 3, (0.25,) * 3, None, None, {}, "folder")


def test_cached_features_train_the_same_head_as_images_through_the_frozen_backbone():
    """What the cache changes is speed only: the course's loop (images through the frozen backbone every
    epoch) and the head on cached features end with the same weights."""
    torch.manual_seed(0)
    backbone = build_model("lenet", (3, 32, 32), 10)
    backbone, width = pretrained.headless(backbone)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    targets = torch.randint(0, 2, (40,))
    normalize = make_normalizer(_meta((3, 32, 32)), "train_stats", torch.device("cpu"))
    config = TrainConfig(epochs=2, batch_size=8, seed=3)
    fp32 = Runtime(torch.device("cpu"), "fp32", channels_last=False)

    features = backbone_features(backbone, images, normalize, None, fp32)
    torch.manual_seed(3)
    cached_head = new_head(width, 2, 0.5)
    loop.train(cached_head, DeviceSplit(features, targets), make_normalizer(
        DatasetMeta("f", "features", ("a", "b"), (width,), False, (0.0,) * width, (1.0,) * width, None, None, {}, "features"),
        "none", torch.device("cpu")), config, fp32, progress=False)

    torch.manual_seed(3)
    through = TransferModel(backbone, new_head(width, 2, 0.5), None, finetune_layers=0)
    loop.train(through, DeviceSplit(images, targets), normalize, config, fp32, progress=False)
    for cached, direct in zip(cached_head.state_dict().values(), through.head.state_dict().values()):
        torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-6)
    assert all(not p.requires_grad for p in through.backbone.parameters())


def test_fine_tuning_unfreezes_only_the_last_layers_and_keeps_the_rest_in_eval_mode():
    backbone, _ = pretrained.torchvision_backbone("vgg16", None)
    frozen = freeze_all_but_last(backbone, 2)
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias"}
    model = TransferModel(backbone, new_head(4096, 2, 0.5), None, finetune_layers=2).train()
    assert "features.0" in frozen and "classifier.0" not in frozen
    assert not model.backbone.features[0].training and model.backbone.classifier[2].training
    with pytest.raises(CnnlabError, match="finetune_layers: 99 is more than the backbone's 15 layers with weights"):
        freeze_all_but_last(backbone, 99)


def test_a_pipeline_backbone_gets_images_at_the_size_it_was_trained_at():
    batch = torch.rand(2, 3, 224, 224)
    assert fit_to_backbone(batch, (3, 32, 32)).shape == (2, 3, 32, 32)
    assert fit_to_backbone(batch, None) is batch


def test_imagenet_top_classes_names_the_most_probable_ones():
    categories = list(pretrained.weights_of("vgg16").meta["categories"])
    logits = torch.zeros(1, 1000)
    logits[0, 281], logits[0, 285] = 9.0, 8.0
    (top,) = pretrained.imagenet_top_classes(logits, categories, 5)
    assert [label for label, _ in top[:2]] == ["tabby", "Egyptian cat"]
    assert top[0][1] > top[1][1] > top[2][1]


def test_an_unknown_torchvision_backbone_is_one_line_before_any_work(tmp_path):
    config = BackboneConfig(name="resnet999", weights="none", source="src/cnnlab/models/pretrained.py")
    with pytest.raises(ConfigError) as raised:
        load_backbone(config, Layout(tmp_path), "transfer.catsdogs_vgg16.backbone")
    assert str(raised.value) == ("transfer.catsdogs_vgg16.backbone.name: 'resnet999' is not a torchvision backbone "
                                 "cnnlab knows; use one of vgg16, or weights: pipeline with an experiment")
