"""Transfer learning through a real `dvc repro`: features once, the head on them, and what re-runs when."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import (
    copy_project,
    edit_params,
    run,
    run_env,
    smoke_profile,
    stages_run,
    write_image_folder,
)

TARGET = "evaluate_head@catsdogs_vgg16"
TRANSFER_STAGES = {"features@catsdogs_vgg16", "head@catsdogs_vgg16", TARGET}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course's catsdogs_vgg16 on a generated image folder, with a randomly initialised VGG16."""
    base = tmp_path_factory.mktemp("transfer")
    folder = write_image_folder(base / "images")
    return copy_project(base / "project", lambda params: smoke_profile(params, folder))


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



def test_fine_tuning_trains_the_last_backbone_layer_from_images(project: Path):
    edit_params(project, "transfer.catsdogs_vgg16.backbone.finetune_layers", 1)
    done = run(["dvc", "repro", TARGET], project, run_env({"CNNLAB_TRACKING": "off"})).stdout
    assert stages_run(done) >= TRANSFER_STAGES
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
