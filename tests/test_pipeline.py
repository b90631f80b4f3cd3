"""The whole DAG through a real `dvc repro` in a temporary git repository, and MLflow's record of it."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import copy_project, run, synthetic_params, write_image_folder

# Each zoo model trains in test_zoo and each experiment in params.yaml builds in test_models; through DVC,
# two zoo entries show the family's stages and comparison figure, and vgg16_bn is a transfer backbone.
ZOO = ("vgg16_bn", "resnet18")
EXPERIMENTS = (
    "spiral_linear", "spiral_mlp", "mnist_fc", "mnist_cnn", "mnist_fc_perm", "mnist_cnn_perm",
    "cifar_lenet", "cifar_vgg", *(f"zoo_{model}" for model in ZOO), "shapes_lenet",
)
DATASETS = ("spiral", "mnist", "cifar10", "catsdogs", "shapes")
TRANSFER = ("catsdogs_vgg16", "catsdogs_cifar_vgg16_bn")


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _only_some_of_the_zoo(params: dict) -> dict:
    params["experiments"] = {name: experiment for name, experiment in params["experiments"].items()
                             if not name.startswith("zoo_") or name.removeprefix("zoo_") in ZOO}
    return params


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One synthetic project: reproduced, reproduced again, then again after one lr change."""
    base = tmp_path_factory.mktemp("pipeline")
    folder = write_image_folder(base / "shapes-images")
    root = copy_project(base / "project", lambda params: _only_some_of_the_zoo(synthetic_params(params, folder)))
    first = run(["dvc", "repro"], root)
    second = run(["dvc", "repro"], root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["experiments"]["mnist_cnn"]["train"]["optimizer"]["lr"] = 0.02
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    after_lr_change = run(["dvc", "repro"], root)
    return {"root": root, "first": first.stdout, "second": second.stdout, "after_lr_change": after_lr_change.stdout}


def test_first_repro_builds_every_stage(built):
    expected = {f"{stage}@{d}" for stage in ("download", "prepare") for d in DATASETS}
    expected |= {f"{stage}@{e}" for stage in ("train", "evaluate") for e in EXPERIMENTS} | {"report"}
    expected |= {f"{stage}@{t}" for stage in ("features", "head", "evaluate_head") for t in TRANSFER}
    assert stages_run(built["first"]) == expected
    root = built["root"]
    for experiment in EXPERIMENTS:
        metrics = json.loads((root / "metrics" / f"{experiment}.json").read_text())
        for key in ("test_accuracy", "test_loss", "param_count", "train_seconds", "train_images_per_second", "device",
                    "macs_per_image", "inference_ms_per_image"):
            assert key in metrics, (experiment, key)
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert metrics["device"] == "cpu"
        assert (root / "reports" / experiment / "figures" / "confusion.png").stat().st_size > 1000
    assert (root / "reports" / "spiral_mlp" / "figures" / "decision_regions.png").is_file()
    for experiment in ("cifar_lenet", "zoo_resnet18", "mnist_cnn_perm", "shapes_lenet"):
        for grid in ("test_images.png", "confident_mistakes.png"):
            assert (root / "reports" / experiment / "figures" / grid).stat().st_size > 1000, (experiment, grid)
    summary = json.loads((root / "reports" / "summary.json").read_text())
    assert set(summary["experiments"]) == set(EXPERIMENTS) | set(TRANSFER)
    assert len(summary["findings"]) == 5
    figures = sorted(p.name for p in (root / "reports" / "figures").iterdir())
    assert figures == [f"{study}_accuracy_vs_{axis}.png" for study in ("catsdogs", "cifar10", "cifar10_zoo", "mnist", "spiral")
                       for axis in ("params", "throughput")], "one pair per study of two or more experiments"
    assert "| mnist_cnn |" in (root / "reports" / "summary.md").read_text()


def test_second_repro_runs_nothing(built):
    assert stages_run(built["second"]) == set()
    assert "Data and pipelines are up to date" in built["second"]


def test_dvc_sees_metrics_and_plots(built):
    root = built["root"]
    shown = run(["dvc", "metrics", "show", "--json"], root).stdout
    assert "test_accuracy" in shown and "mnist_cnn" in shown
    plots = run(["dvc", "plots", "show", "--json"], root).stdout
    assert "reports/mnist_cnn/confusion.json" in plots


def test_learning_rate_change_reruns_only_that_experiment(built):
    assert stages_run(built["after_lr_change"]) == {"train@mnist_cnn", "evaluate@mnist_cnn", "report"}


def test_mlflow_holds_runs_params_metrics_artifacts_and_tags(built):
    from mlflow import MlflowClient

    root = built["root"]
    assert (root / "mlflow.db").is_file(), "the default store is sqlite at the repo root"
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    studies = {e.name: e for e in client.search_experiments()}
    assert {"spiral", "mnist"} <= set(studies)
    runs = client.search_runs([studies["mnist"].experiment_id], max_results=100)
    by_name = {}
    for found in runs:
        by_name.setdefault(found.info.run_name, []).append(found)
    assert set(by_name) == {"mnist_fc", "mnist_cnn", "mnist_fc_perm", "mnist_cnn_perm"}
    assert len(by_name["mnist_cnn"]) == 2, "one run per train execution: the first repro and the lr change"
    assert all(len(by_name[name]) == 1 for name in ("mnist_fc", "mnist_fc_perm", "mnist_cnn_perm"))
    latest = max(by_name["mnist_cnn"], key=lambda r: r.info.start_time)
    data = latest.data
    assert latest.info.status == "FINISHED"
    assert data.tags["dvc.evaluate_stage"] == "evaluate@mnist_cnn", "evaluate continued the train stage's run"
    assert data.params["train.optimizer.lr"] == "0.02" and data.params["model"] == "course_cnn"
    assert 0 <= data.metrics["test_accuracy"] <= 1
    history = client.get_metric_history(latest.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    for tag in ("git.commit", "git.dirty", "dvc.stage", "data.prepared_md5", "device", "torch.version"):
        assert data.tags.get(tag), tag
    assert data.tags["dvc.stage"] == "train@mnist_cnn"
    assert re.fullmatch(r"[0-9a-f]{40}", data.tags["git.commit"])
    artifacts = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"history.json", "figures", "mnist_cnn.json"} <= artifacts
    figures = {a.path for a in client.list_artifacts(latest.info.run_id, "figures")}
    assert "figures/confusion.png" in figures
    models = client.search_logged_models(
        experiment_ids=[studies["mnist"].experiment_id], filter_string=f"source_run_id = '{latest.info.run_id}'"
    )
    assert len(models) == 1 and models[0].name == "model"
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    loaded = mlflow.pytorch.load_model(models[0].model_uri)
    assert sum(p.numel() for p in loaded.parameters()) == 6422
