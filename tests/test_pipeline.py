"""The whole DAG through a real `dvc repro` in a temporary git repository, and MLflow's record of it."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import copy_project, edit_params, run, run_env, stages_run, synthetic_params, write_image_folder

# Each zoo model trains in test_zoo and each experiment in params.yaml builds in test_models; through DVC,
# two zoo entries show the family's stages and comparison figure, and vgg16_bn is a transfer backbone.
ZOO = ("vgg16_bn", "resnet18")
EXPERIMENTS = (
    "spiral_linear", "spiral_mlp", "mnist_fc", "mnist_cnn", "mnist_fc_perm", "mnist_cnn_perm",
    "cifar_lenet", "cifar_vgg", *(f"zoo_{model}" for model in ZOO), "cifar_speedrun", "shapes_lenet",
)
DATASETS = ("spiral", "mnist", "cifar10", "catsdogs", "shapes")
TRANSFER = ("catsdogs_vgg16", "catsdogs_cifar_vgg16_bn")
# Forced to run again with unchanged inputs, and with tracking off: generated and decoded data, the pixel
# permutation, bf16 autocast (on CPUs with avx512_bf16), augmentation, batch norm, a head on cached
# features, every kind of figure but the spiral's.
FORCED = ("prepare@mnist", "prepare@shapes", "train@mnist_cnn_perm", "evaluate@mnist_cnn_perm", "train@cifar_vgg",
          "evaluate@cifar_vgg", "head@catsdogs_vgg16", "evaluate_head@catsdogs_vgg16")


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
    first_lock = yaml.safe_load((root / "dvc.lock").read_text())
    forced = run(["dvc", "repro", "--force", "--single-item", *FORCED], root, run_env({"CNNLAB_TRACKING": "off"}))
    forced_lock = yaml.safe_load((root / "dvc.lock").read_text())
    edit_params(root, "experiments.mnist_cnn.train.optimizer.lr", 0.02)
    after_lr_change = run(["dvc", "repro"], root)
    return {"root": root, "first": first.stdout, "second": second.stdout, "after_lr_change": after_lr_change.stdout,
            "forced": forced.stdout, "first_lock": first_lock, "forced_lock": forced_lock}


def test_first_repro_builds_every_stage(built):
    expected = {f"{stage}@{d}" for stage in ("download", "prepare") for d in DATASETS}
    expected |= {f"{stage}@{e}" for stage in ("train", "evaluate") for e in EXPERIMENTS} | {"report"}
    expected |= {f"{stage}@{t}" for stage in ("features", "head", "evaluate_head") for t in TRANSFER}
    assert stages_run(built["first"]) == expected
    root = built["root"]
    for experiment in EXPERIMENTS:
        metrics = json.loads((root / "metrics" / f"{experiment}.json").read_text())
        for key in ("test_accuracy", "test_loss", "param_count", "device", "macs_per_image", "model_md5"):
            assert key in metrics, (experiment, key)
        assert metrics["data_origin"] == ("folder" if experiment == "shapes_lenet" else
                                          "generated" if experiment.startswith("spiral") else "synthetic")
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert metrics["device"] == "cpu"
        assert (root / "reports" / experiment / "figures" / "confusion.png").stat().st_size > 1000
    assert (root / "reports" / "spiral_mlp" / "figures" / "decision_regions.png").is_file()
    for experiment in ("cifar_lenet", "zoo_resnet18", "mnist_cnn_perm", "shapes_lenet"):
        for grid in ("test_images.png", "confident_mistakes.png"):
            assert (root / "reports" / experiment / "figures" / grid).stat().st_size > 1000, (experiment, grid)
    summary = json.loads((root / "reports" / "summary.json").read_text())
    assert set(summary["experiments"]) == set(EXPERIMENTS) | set(TRANSFER)
    for experiment in EXPERIMENTS:  # timings are facts of the execution: the report reads them from MLflow
        facts = summary["experiments"][experiment]
        assert facts["train_seconds"] > 0 and facts["train_images_per_second"] > 0, experiment
        assert facts["inference_ms_per_image"] > 0 and len(facts["run_id"]) == 32, experiment
    assert summary["synthetic_data"] == ["cifar10", "mnist"]
    assert len(summary["findings"]) == 5
    figures = sorted(p.name for p in (root / "reports" / "figures").iterdir())
    assert figures == [f"{study}_accuracy_vs_{axis}.png" for study in ("catsdogs", "cifar10", "cifar10_zoo", "mnist", "spiral")
                       for axis in ("params", "throughput")], "one pair per study of two or more experiments"
    markdown = (root / "reports" / "summary.md").read_text()
    assert "| mnist_cnn | mnist | mnist (synthetic) |" in markdown and "**Generated data**: cifar10, mnist" in markdown


def test_outputs_hash_the_same_when_forced_to_run_again(built):
    """Nothing per-execution (timings, run ids, dates) leaks into what DVC caches: same inputs, same bytes,
    with or without MLflow."""
    assert stages_run(built["forced"]) == set(FORCED)
    first, forced = built["first_lock"]["stages"], built["forced_lock"]["stages"]
    for stage in FORCED:
        assert first[stage]["outs"] == forced[stage]["outs"], stage
        assert all(out.get("md5") for out in first[stage]["outs"]), stage


def test_every_stage_output_but_the_report_is_cached_so_the_run_cache_can_restore_it(built):
    """An output with cache: false is never pushed, and DVC cannot restore its stage on another machine."""
    outs = {stage: [out["path"] for out in entry["outs"]] for stage, entry in built["first_lock"]["stages"].items()}
    assert {"metrics/mnist_cnn.json", "reports/mnist_cnn/history.json"} <= set(outs["evaluate@mnist_cnn"] + outs["train@mnist_cnn"])
    paths = [path for stage, paths in outs.items() if stage != "report" for path in paths]
    ignored = run(["git", "check-ignore", *paths, *outs["report"]], built["root"], check=False).stdout.split()
    assert sorted(ignored) == sorted(paths), "DVC git-ignores the outputs it caches; the report stays in git"


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
    # The UI's Source column: MLflow's own source tags, with the commit the code came from.
    assert data.tags["mlflow.source.git.commit"] == data.tags["git.commit"]
    assert data.tags["mlflow.source.name"] == "stages/train.py"
    assert data.tags["git.dirty"] == "false", "dvc.lock, params.yaml and DVC's .gitignore entries changed; no code did"
    assert re.fullmatch(r"[0-9a-f]{16}", data.tags["dvc.params_hash"])
    first_fc, = by_name["mnist_fc"]
    assert first_fc.data.tags["dvc.params_hash"] != data.tags["dvc.params_hash"]
    # The link from DVC's files to the run: the model file's MD5, in the metrics and as a tag.
    metrics = json.loads((root / "metrics" / "mnist_cnn.json").read_text())
    assert data.tags["cnnlab.model_md5"] == metrics["model_md5"]
    # The UI's Dataset column: the prepared data, its digest, and that it was generated.
    (dataset_input,) = latest.inputs.dataset_inputs
    assert dataset_input.dataset.name == "mnist (synthetic)"
    assert dataset_input.dataset.digest == data.tags["data.prepared_md5"]
    assert json.loads(dataset_input.dataset.profile)["origin"] == "synthetic"
    artifacts = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"history.json", "figures", "mnist_cnn.json"} <= artifacts
    figures = {a.path for a in client.list_artifacts(latest.info.run_id, "figures")}
    assert "figures/confusion.png" in figures
    # The model: logged by the run, registered as <study>.<experiment>, its evaluated version aliased.
    assert "model" in artifacts
    version = client.get_model_version_by_alias("mnist.mnist_cnn", "evaluated")
    assert version.run_id == latest.info.run_id
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"{latest.info.artifact_uri}/model")
    classifier = served.unwrap_python_model().classifier
    assert sum(p.numel() for p in classifier.net.parameters()) == 6422
