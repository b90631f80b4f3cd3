"""The whole DAG through a real `dvc repro` in a temporary git repository, and MLflow's record of it."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import copy_project, edit_params, run, run_env, smoke_profile, stages_run, write_image_folder

# Every kind of stage, of dataset and of experiment, once each, and each a few seconds long: every model trains
# a few steps in test_zoo and every experiment of params.yaml builds in test_models; the course VGG's bf16,
# augmentation and BatchNorm are the speedrun's here, an image folder's training is cifar_lenet's on decoded
# images, and the torchvision backbone has its own project in test_transfer_stages. The zoo's LeNet stands in
# for its VGG16 as the pipeline-trained transfer backbone (the same code, a fraction of the CPU time).
EXPERIMENTS = ("spiral_mlp", "mnist_fc", "mnist_cnn", "mnist_cnn_perm", "cifar_lenet", "zoo_lenet", "cifar_speedrun")
DATASETS = ("spiral", "mnist", "cifar10", "catsdogs")
TRANSFER = ("catsdogs_cifar_vgg16_bn",)
# Forced to run again with unchanged inputs, and with tracking off: generated and decoded data, bf16 autocast
# (on CPUs with avx512_bf16), augmentation, batch norm, a whitening layer fitted to the data, flip test-time
# augmentation, a head on cached features, and the image figures.
FORCED = ("prepare@mnist", "prepare@catsdogs", "train@cifar_speedrun", "evaluate@cifar_speedrun",
          "head@catsdogs_cifar_vgg16_bn", "evaluate_head@catsdogs_cifar_vgg16_bn")


def _every_kind_once(params: dict) -> dict:
    params["datasets"] = {name: params["datasets"][name] for name in DATASETS}
    params["experiments"] = {name: params["experiments"][name] for name in EXPERIMENTS}
    params["transfer"] = {name: params["transfer"][name] for name in TRANSFER}
    params["transfer"]["catsdogs_cifar_vgg16_bn"]["backbone"].update(name="zoo_lenet", source="models/zoo_lenet")
    params["report"]["comparisons"] = [c for c in params["report"]["comparisons"]
                                       if c["baseline"] in EXPERIMENTS and c["candidate"] in EXPERIMENTS]
    return params


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One synthetic project: reproduced, reproduced again, then again after one lr change."""
    base = tmp_path_factory.mktemp("pipeline")
    folder = write_image_folder(base / "shapes-images")
    root = copy_project(base / "project", lambda params: _every_kind_once(smoke_profile(params, folder)))
    first = run(["dvc", "repro"], root)
    second = run(["dvc", "repro"], root)
    first_lock = yaml.safe_load((root / "dvc.lock").read_text())
    forced = run(["dvc", "repro", "--force", "--single-item", *FORCED], root, run_env({"CNNLAB_TRACKING": "off"}))
    forced_lock = yaml.safe_load((root / "dvc.lock").read_text())
    edit_params(root, "experiments.mnist_cnn.train.optimizer.lr", 0.02)
    after_lr_change = run(["dvc", "repro"], root)
    changed_by = {file: stages_changed_by_editing(root, file, edit) for file, edit in CODE_EDITS.items()}
    return {"root": root, "first": first.stdout, "second": second.stdout, "after_lr_change": after_lr_change.stdout,
            "forced": forced.stdout, "first_lock": first_lock, "forced_lock": forced_lock, "changed_by": changed_by}


# Code changes a developer makes, each tried alone on the built project (and undone).
CODE_EDITS = {
    # a default of the params model: every stage loads params.yaml through it
    "src/cnnlab/config/experiments.py": lambda text: text.replace("label_smoothing: Fraction = 0.0",
                                                                  "label_smoothing: Fraction = 0.1"),
    "src/cnnlab/report.py": lambda text: text + "\n# a comment\n",
    "src/cnnlab/data/kinds/cifar10.py": lambda text: text + "\n# a comment\n",
    "src/cnnlab/pipeline/evaluate.py": lambda text: text + "\n# a comment\n",
    # records runs in MLflow, draws the progress bar: no stage's output depends on them
    "src/cnnlab/tracking/client.py": lambda text: text + "\n# a comment\n",
    "src/cnnlab/engine/progress.py": lambda text: text + "\n# a comment\n",
}


def stages_changed_by_editing(root, file: str, edit) -> set[str]:
    """The stages `dvc status` reports changed once `file` is edited so; the file is restored after."""
    path = root / file
    original = path.read_text()
    edited = edit(original)
    assert edited != original, f"the edit of {file} changed nothing: fix CODE_EDITS"
    path.write_text(edited)
    try:
        return set(json.loads(run(["dvc", "status", "--json"], root).stdout))
    finally:
        path.write_text(original)


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
        assert metrics["data_origin"] == ("generated" if experiment.startswith("spiral") else "synthetic")
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert metrics["device"] == "cpu"
        assert (root / "reports" / experiment / "figures" / "confusion.png").stat().st_size > 1000
    assert (root / "reports" / "spiral_mlp" / "figures" / "decision_regions.png").is_file()
    for experiment in ("cifar_lenet", "zoo_lenet", "mnist_cnn_perm", "cifar_speedrun"):
        for grid in ("test_images.png", "confident_mistakes.png"):
            assert (root / "reports" / experiment / "figures" / grid).stat().st_size > 1000, (experiment, grid)
    summary = json.loads((root / "reports" / "summary.json").read_text())
    assert set(summary["experiments"]) == set(EXPERIMENTS) | set(TRANSFER)
    for experiment in EXPERIMENTS:  # timings are facts of the execution: the report reads them from MLflow
        facts = summary["experiments"][experiment]
        assert facts["train_seconds"] > 0 and facts["train_images_per_second"] > 0, experiment
        assert facts["inference_ms_per_image"] > 0 and len(facts["run_id"]) == 32, experiment
    assert summary["synthetic_data"] == ["cifar10", "mnist"]
    assert len(summary["findings"]) == 2, "FC vs CNN, and the CNN with and without permuted pixels"
    figures = sorted(p.name for p in (root / "reports" / "figures").iterdir())
    assert figures == [f"{study}_accuracy_vs_{axis}.png" for study in ("cifar10_zoo", "mnist")
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


def test_a_change_of_code_reports_exactly_the_stages_that_run_it(built):
    """dvc.yaml lists the code each stage runs, so `dvc status` is clean only when every result is the current
    code's: a default of the params model reaches every stage; report code only the report."""
    changed_by, every_stage = built["changed_by"], set(built["first_lock"]["stages"])
    assert changed_by["src/cnnlab/config/experiments.py"] == every_stage
    assert changed_by["src/cnnlab/report.py"] == {"report"}
    assert changed_by["src/cnnlab/data/kinds/cifar10.py"] == {"download@cifar10", "prepare@cifar10"}
    assert changed_by["src/cnnlab/pipeline/evaluate.py"] == {f"evaluate@{name}" for name in EXPERIMENTS}
    assert changed_by["src/cnnlab/tracking/client.py"] == set()
    assert changed_by["src/cnnlab/engine/progress.py"] == set()


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
    assert set(by_name) == {"mnist_fc", "mnist_cnn", "mnist_cnn_perm"}
    assert len(by_name["mnist_cnn"]) == 2, "one run per train execution: the first repro and the lr change"
    assert all(len(by_name[name]) == 1 for name in ("mnist_fc", "mnist_cnn_perm"))
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
