"""Transfer learning through a real `dvc repro`: features once, the head on them, and what re-runs when."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from cnnlab import engine
from cnnlab.config import TrainConfig, parse_params
from cnnlab.data.loader import DeviceSplit, make_normalizer
from cnnlab.data.prepared import DatasetMeta
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model, pretrained
from cnnlab_tools.sandbox import set_in
from cnnlab.transfer import TransferModel, backbone_features, fit_to_backbone, freeze_all_but_last, new_head
from conftest import (
    committed_params, copy_project, edit_params, run, run_env, stages_run, synthetic_params, write_image_folder,
)

TARGET = "evaluate_head@catsdogs_vgg16"
TRANSFER_STAGES = {"features@catsdogs_vgg16", "head@catsdogs_vgg16", TARGET}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course's catsdogs_vgg16 on a generated image folder, with a randomly initialised VGG16."""
    base = tmp_path_factory.mktemp("transfer")
    folder = write_image_folder(base / "images")
    return copy_project(base / "project", lambda params: synthetic_params(params, folder))


def test_the_whole_experiment_then_only_what_changed(project: Path):
    first = run(["dvc", "repro", TARGET], project).stdout
    assert stages_run(first) == {"download@catsdogs", "prepare@catsdogs"} | TRANSFER_STAGES

    features = project / "data" / "features" / "catsdogs_vgg16"
    record = json.loads((features / "backbone.json").read_text())
    assert record["config"]["weights"] == "none" and record["feature_dim"] == 4096
    assert torch.load(features / "train.pt")["inputs"].shape == (36, 4096)
    metrics = json.loads((project / "metrics" / "catsdogs_vgg16.json").read_text())
    assert metrics["mode"] == "cached features" and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["trainable_param_count"] == 4096 * 2 + 2
    assert metrics["param_count"] == 134_260_544 + 4096 * 2 + 2  # VGG16 without classifier[6], plus the new layer
    for figure in ("confusion.png", "test_images.png", "correct.png", "confident_mistakes.png"):
        assert (project / "reports" / "catsdogs_vgg16" / "figures" / figure).stat().st_size > 1000, figure

    # The head's run in MLflow carries the backbone's identity.
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    study = client.get_experiment_by_name("catsdogs")
    (head_run,) = client.search_runs([study.experiment_id], "tags.`cnnlab.experiment` = 'catsdogs_vgg16'")
    assert head_run.data.tags["backbone.name"] == "vgg16"
    assert head_run.data.tags["backbone.digest"] == "seed 0"
    assert head_run.data.params["head.train.optimizer.lr"] == "0.001"
    assert head_run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    assert stages_run(run(["dvc", "repro", TARGET], project).stdout) == set()

    # What re-runs after which change; MLflow (checked above) is left out of these runs to save CI time.
    untracked = run_env({"CNNLAB_TRACKING": "off"})
    edit_params(project, "transfer.catsdogs_vgg16.head.train.optimizer.lr", 0.01)
    after_lr = run(["dvc", "repro", TARGET], project, untracked).stdout
    assert stages_run(after_lr) == {"head@catsdogs_vgg16", TARGET}, "the cached features are reused"

    edit_params(project, "transfer.catsdogs_vgg16.backbone.seed", 1)
    assert stages_run(run(["dvc", "repro", TARGET], project, untracked).stdout) == TRANSFER_STAGES

    edit_params(project, "datasets.catsdogs.prepare.crop", 40)
    assert stages_run(run(["dvc", "repro", TARGET], project, untracked).stdout) == {"prepare@catsdogs"} | TRANSFER_STAGES
    assert torch.load(features / "test.pt")["inputs"].shape == (12, 4096)


def test_fine_tuning_trains_the_last_backbone_layer_from_images(project: Path):
    edit_params(project, "transfer.catsdogs_vgg16.backbone.finetune_layers", 1)
    done = run(["dvc", "repro", TARGET], project, run_env({"CNNLAB_TRACKING": "off"})).stdout
    assert TRANSFER_STAGES <= stages_run(done)
    features = project / "data" / "features" / "catsdogs_vgg16"
    assert sorted(p.name for p in features.iterdir()) == ["backbone.json"], "fine-tuning bypasses the cache"
    metrics = json.loads((project / "metrics" / "catsdogs_vgg16.json").read_text())
    assert metrics["mode"].startswith("fine-tuning the last 1")
    assert metrics["trainable_param_count"] == 4096 * 4096 + 4096 + 4096 * 2 + 2  # classifier.3 and the new layer


def _error_line(done) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_missing_imagenet_weights_stop_the_features_stage_before_any_work(project: Path, tmp_path: Path):
    edit_params(project, "transfer.catsdogs_vgg16.backbone.weights", "imagenet")
    edit_params(project, "transfer.catsdogs_vgg16.dataset", "cifar10")  # not prepared here: no work may start
    offline = run_env({"TORCH_HOME": str(tmp_path / "torch"), "https_proxy": "http://127.0.0.1:9",
                       "HTTPS_PROXY": "http://127.0.0.1:9"})
    done = run(["python", "stages/features.py", "catsdogs_vgg16"], project, env=offline, check=False)
    assert done.returncode == 1
    line = _error_line(done)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert str(expected) in line and "https://download.pytorch.org/models/vgg16-397923af.pth" in line
    assert "backbone.weights_file" in line and "weights: none" in line
    assert "Traceback" not in done.stderr

    wrong = tmp_path / "vgg16-397923af.pth"
    wrong.write_bytes(b"these are not torchvision's weights")
    edit_params(project, "transfer.catsdogs_vgg16.backbone.weights_file", str(wrong))
    done = run(["python", "stages/features.py", "catsdogs_vgg16"], project, env=offline, check=False)
    line = _error_line(done)
    assert f"{wrong}: SHA-256" in line and "does not start with 397923af" in line


# --------------------------------------------------------------------------
# The library underneath, without DVC
# --------------------------------------------------------------------------


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
    fp32 = engine.Runtime(torch.device("cpu"), "fp32", channels_last=False)

    features = backbone_features(backbone, images, normalize, None, fp32)
    torch.manual_seed(3)
    cached_head = new_head(width, 2, 0.5)
    engine.train(cached_head, DeviceSplit(features, targets), make_normalizer(
        DatasetMeta("f", "features", ("a", "b"), (width,), False, (0.0,) * width, (1.0,) * width, None, None, {}, "features"),
        "none", torch.device("cpu")), config, fp32, progress=False)

    torch.manual_seed(3)
    through = TransferModel(backbone, new_head(width, 2, 0.5), None, finetune_layers=0)
    engine.train(through, DeviceSplit(images, targets), normalize, config, fp32, progress=False)
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


@pytest.mark.parametrize(("dotted", "value", "message"), [
    ("transfer.catsdogs_vgg16.backbone.source", "models/zoo_vgg16_bn",
     r"backbone\.source: .* set it to src/cnnlab/models/pretrained\.py"),
    ("transfer.catsdogs_cifar_vgg16_bn.backbone.name", "no_such_experiment",
     r"with weights: pipeline, name an experiment of this pipeline"),
    ("transfer.catsdogs_vgg16.backbone.name", "resnet999", r"'resnet999' is not a torchvision backbone"),
    ("transfer.catsdogs_vgg16.head.train.augment", {"flip": True}, r"cached features cannot be augmented"),
    ("transfer.catsdogs_vgg16.dataset", "nope", r"transfer\.catsdogs_vgg16\.dataset: unknown dataset 'nope'"),
])
def test_bad_transfer_settings_are_one_line_errors(dotted: str, value: object, message: str):
    raw = committed_params()
    set_in(raw, dotted, value)
    with pytest.raises(CnnlabError, match=message) as error:
        parse_params(raw)
    assert "\n" not in str(error.value)
