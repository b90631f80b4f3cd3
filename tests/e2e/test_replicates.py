"""An experiment at several seeds, end to end: one DVC stage pair and one MLflow child run per seed under a
parent run, the report's mean, sd and every seed's value; a seed added trains only itself; a teammate's
clone restores every seed from the run-cache."""

from __future__ import annotations

import json
import sys

import pytest

from cnnlab_tools.sandbox import smoke_experiment
from conftest import run, run_env, stages_restored, stages_run

EXPERIMENT = "mnist_fc"
SEEDS = [f"{EXPERIMENT}", f"{EXPERIMENT}-seed1", f"{EXPERIMENT}-seed2"]


def small_mnist_fc(params: dict) -> None:
    smoke_experiment(params, EXPERIMENT)
    params["datasets"]["mnist"]["acquire"]["synthetic"].update(train_size=1200, test_size=300)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from conftest import copy_project

    base = tmp_path_factory.mktemp("seeds")
    env = run_env({"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}"})
    a = copy_project(base / "a", small_mnist_fc)
    log: dict = {"a": a, "env": env, "b": base / "b"}
    # The README's commands: seeds by count, then one `dvc repro`.
    run([sys.executable, "-m", "cnnlab_tools.replicates", "--seeds", "3", EXPERIMENT], a, env)
    run(["dvc", "remote", "add", "-d", "shelf", str(base / "shelf")], a, env)
    run(["git", "commit", "-qam", "three seeds of mnist_fc, a remote"], a, env)
    log["first"] = run(["dvc", "repro"], a, env).stdout
    log["summary_3"] = json.loads((a / "reports" / "summary.json").read_text())
    log["metrics_3"] = {name: json.loads((a / "metrics" / f"{name}.json").read_text()) for name in SEEDS}
    log["runs_3"] = mlflow_runs(env)

    run([sys.executable, "-m", "cnnlab_tools.replicates", "--seeds", "4", EXPERIMENT], a, env)
    log["fourth"] = run(["dvc", "repro"], a, env).stdout
    log["summary_4"] = json.loads((a / "reports" / "summary.json").read_text())
    log["runs_4"] = mlflow_runs(env)
    run(["dvc", "push", "--run-cache"], a, env)
    run(["git", "add", "-A"], a, env)
    run(["git", "commit", "-qm", "four seeds"], a, env)

    # The teammate is on the commit that asked for three seeds, before anyone ran them: no dvc.lock entries,
    # so only the run-cache can tell DVC that these stages ran with these inputs.
    run(["git", "clone", "-q", str(a), str(log["b"])], base, env)
    run(["git", "checkout", "-q", "HEAD~1"], log["b"], env)
    log["teammate"] = run(["dvc", "repro", "--pull"], log["b"], env).stdout
    return log


def mlflow_runs(env: dict[str, str]) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    study = client.get_experiment_by_name("mnist")
    return client.search_runs([study.experiment_id])


def test_each_seed_is_a_stage_pair_of_its_own_with_its_own_model(seeds):
    assert {"train@mnist_fc", "evaluate@mnist_fc", "report"} | {
        f"{stage}@{name}" for stage in ("train_replicate", "evaluate_replicate") for name in SEEDS[1:]
    } <= stages_run(seeds["first"])
    metrics = seeds["metrics_3"]
    assert [metrics[name]["seed"] for name in SEEDS] == [0, 1, 2]
    assert len({metrics[name]["model_md5"] for name in SEEDS}) == 3, "three seeds, three different models"
    assert all(metrics[name]["experiment"] == EXPERIMENT for name in SEEDS)


def test_the_report_gives_mean_sd_and_every_seed(seeds):
    fc = seeds["summary_3"]["experiments"][EXPERIMENT]
    accuracies = [seeds["metrics_3"][name]["test_accuracy"] for name in SEEDS]
    assert fc["seeds"] == {"0": accuracies[0], "1": accuracies[1], "2": accuracies[2]}
    assert fc["seed_count"] == 3 and fc["test_accuracy"] == pytest.approx(sum(accuracies) / 3)
    mean = sum(accuracies) / 3
    assert fc["test_accuracy_sd"] == pytest.approx((sum((a - mean) ** 2 for a in accuracies) / 2) ** 0.5)
    assert seeds["summary_3"]["missing"] == []


def test_the_seeds_are_child_runs_of_one_parent_in_mlflow(seeds):
    runs = seeds["runs_3"]
    (parent,) = [r for r in runs if r.data.tags.get("cnnlab.group") == EXPERIMENT]
    assert parent.info.run_name == "mnist_fc (seeds)" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == SEEDS, "one run per seed, training and evaluation in it"
    assert all("test_accuracy" in r.data.metrics and r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["cnnlab.seed"] for r in children) == ["0", "1", "2"]
    assert len(runs) == 4, "nothing else: no stray runs"


def test_a_fourth_seed_trains_only_itself_under_the_same_parent(seeds):
    assert stages_run(seeds["fourth"]) == {"train_replicate@mnist_fc-seed3", "evaluate_replicate@mnist_fc-seed3",
                                           "report"}
    assert seeds["summary_4"]["experiments"][EXPERIMENT]["seed_count"] == 4
    runs = seeds["runs_4"]
    (parent,) = [r for r in runs if r.data.tags.get("cnnlab.group") == EXPERIMENT]
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]) == 4


def test_a_teammate_restores_every_seed_from_the_run_cache(seeds):
    assert stages_run(seeds["teammate"]) == {"report"}, "no training: every seed came from the remote"
    assert {"train@mnist_fc", "evaluate@mnist_fc"} | {
        f"{stage}@{name}" for stage in ("train_replicate", "evaluate_replicate") for name in SEEDS[1:]
    } <= stages_restored(seeds["teammate"])
    b = seeds["b"]
    for name in SEEDS:
        assert (b / "models" / name / "model.pt").is_file()
    restored = {name: json.loads((b / "metrics" / f"{name}.json").read_text()) for name in SEEDS}
    assert restored == seeds["metrics_3"], "the same models and metrics, byte for byte in content"
