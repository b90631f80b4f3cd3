"""A team through a real DVC remote: what one clone trains, another restores without training.

Clone A trains mnist_cnn for two learning rates and pushes data, models and the run-cache to
an S3-compatible server on loopback (moto's server, as in DVC's own S3 tests) and to a plain
directory; a teammate's clones restore both trainings with `dvc repro --pull`. Both clones log to
one MLflow store, as a team logs to one tracking server. The commands are the README's
"Working as a team".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import copy_project, edit_params, run, run_env, smoke_profile, stages_restored, stages_run

TARGET = "evaluate@mnist_cnn"
LR_KEY = "experiments.mnist_cnn.train.optimizer.lr"
FIRST_LR, SECOND_LR = 0.01, 0.02


def outs_of(root: Path, stage: str) -> list[dict]:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"][stage]["outs"]


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, s3_remote: dict[str, str]) -> dict:
    base = tmp_path_factory.mktemp("team")
    env = run_env({**s3_remote["env"], "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'team-mlflow.db'}"})
    a = copy_project(base / "a", smoke_profile)
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(base / "origin.git")], base, env)
    run(["git", "remote", "add", "origin", str(base / "origin.git")], a, env)
    # The README's set-up, once per project: the remote's address in git, its credentials per machine.
    run(["dvc", "remote", "add", "-d", "team", s3_remote["url"]], a, env)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3_remote["endpoint"]], a, env)
    run(["dvc", "remote", "add", "shelf", str(base / "shelf")], a, env)
    run(["git", "commit", "-qam", "DVC remotes"], a, env)

    log: dict = {"base": base, "env": env, "a": a, "b": base / "b", "c": base / "c", "locks": {}}
    for lr in (FIRST_LR, SECOND_LR):
        edit_params(a, LR_KEY, lr)
        log[f"a_repro_{lr}"] = run(["dvc", "repro", TARGET], a, env).stdout
        run(["dvc", "push", "--run-cache"], a, env)
        run(["dvc", "push", "--run-cache", "-r", "shelf"], a, env)
        log["locks"][lr] = {stage: outs_of(a, stage) for stage in ("train@mnist_cnn", TARGET)}
        run(["git", "add", "-A"], a, env)
        run(["git", "commit", "-qm", f"mnist_cnn at lr {lr}"], a, env)
    run(["git", "push", "-q", "origin", "HEAD:main"], a, env)
    log["runs_after_a"] = mlflow_runs(env)
    listing = s3_remote["client"].list_objects_v2(Bucket="cnnlab-team", Prefix="dvcstore/")
    log["s3_keys"] = [item["Key"] for item in listing.get("Contents", [])]

    # A train that fails: DVC deletes its outputs before running it. They come back without training,
    # with `dvc checkout --allow-missing` (the project has stages no one ran), or with `dvc repro` once the
    # params are fixed.
    edit_params(a, LR_KEY, -1)
    log["failed"] = run(["dvc", "repro", TARGET], a, env, check=False)
    log["model_gone_after_failure"] = not (a / "models" / "mnist_cnn").exists()
    run(["dvc", "checkout", "--allow-missing"], a, env)
    log["checked_out"] = {stage: digests(a, stage) for stage in ("train@mnist_cnn", TARGET)}
    run(["dvc", "repro", TARGET], a, env, check=False)
    edit_params(a, LR_KEY, SECOND_LR)
    log["after_fix"] = run(["dvc", "repro", TARGET], a, env).stdout
    log["after_fix_outputs"] = {stage: digests(a, stage) for stage in ("train@mnist_cnn", TARGET)}

    # The teammate: a fresh clone, the remote's credentials, then the current commit and an earlier one.
    run(["git", "clone", "-q", str(base / "origin.git"), str(log["b"])], base, env)
    log["b_current"] = run(["dvc", "repro", "--pull", TARGET], log["b"], env).stdout
    log["b_current_lock"] = {stage: outs_of(log["b"], stage) for stage in ("train@mnist_cnn", TARGET)}
    edit_params(log["b"], LR_KEY, FIRST_LR)
    log["b_earlier"] = run(["dvc", "repro", "--pull", TARGET], log["b"], env).stdout
    log["b_earlier_lock"] = {stage: outs_of(log["b"], stage) for stage in ("train@mnist_cnn", TARGET)}
    log["runs_after_b"] = mlflow_runs(env)

    # Another teammate on the directory remote, and a plain pull of a partly-run project.
    run(["git", "clone", "-q", str(base / "origin.git"), str(log["c"])], base, env)
    run(["dvc", "remote", "default", "--local", "shelf"], log["c"], env)
    log["c_pull"] = run(["dvc", "pull", "--allow-missing"], log["c"], env)
    edit_params(log["c"], LR_KEY, FIRST_LR)
    log["c_earlier"] = run(["dvc", "repro", "--pull", TARGET], log["c"], env).stdout
    return log


def digests(root: Path, stage: str) -> dict[str, str]:
    """What `dvc status` would compare: the lock's hash of each output, and whether the file is there."""
    return {out["path"]: out["md5"] for out in outs_of(root, stage) if (root / out["path"]).exists()}


def mlflow_runs(env: dict[str, str]) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    study = client.get_experiment_by_name("mnist")
    return client.search_runs([study.experiment_id]) if study else []


def test_clone_a_trains_each_learning_rate_once_and_pushes_to_the_object_store(team):
    assert {"train@mnist_cnn", TARGET} <= stages_run(team[f"a_repro_{FIRST_LR}"])
    assert stages_run(team[f"a_repro_{SECOND_LR}"]) == {"train@mnist_cnn", TARGET}
    assert team["locks"][FIRST_LR] != team["locks"][SECOND_LR]
    keys = team["s3_keys"]
    assert any(key.startswith("dvcstore/files/md5/") for key in keys)
    # download and prepare once, train and evaluate once per learning rate
    assert sum(key.startswith("dvcstore/runs/") for key in keys) == 6, keys


def test_a_teammate_restores_the_current_models_without_training(team):
    assert stages_run(team["b_current"]) == set(), "nothing ran: every output came from the remote"
    assert team["b_current_lock"] == team["locks"][SECOND_LR]
    b = team["b"]
    assert json.loads((b / "metrics" / "mnist_cnn.json").read_text())["test_accuracy"] > 0
    assert (b / "reports" / "mnist_cnn" / "history.json").is_file()


def test_a_teammate_restores_an_earlier_learning_rate_from_the_run_cache(team):
    assert stages_run(team["b_earlier"]) == set(), "no train stage ran"
    assert {"train@mnist_cnn", TARGET} <= stages_restored(team["b_earlier"])
    assert team["b_earlier_lock"] == team["locks"][FIRST_LR], "the very files A trained at that learning rate"


def test_the_directory_remote_serves_the_same(team):
    assert team["c_pull"].returncode == 0, "dvc pull --allow-missing: what was pushed, and no error for what no one ran"
    assert (team["c"] / "models" / "mnist_cnn" / "model.pt").is_file()
    assert stages_run(team["c_earlier"]) == set() and "train@mnist_cnn" in stages_restored(team["c_earlier"])


def test_restored_stages_make_no_mlflow_run_and_metrics_still_link_to_the_run_that_made_them(team):
    assert len(team["runs_after_a"]) == 2, "one run per training in clone A"
    assert {r.info.run_id for r in team["runs_after_b"]} == {r.info.run_id for r in team["runs_after_a"]}
    metrics = json.loads((team["b"] / "metrics" / "mnist_cnn.json").read_text())
    (producer,) = [r for r in team["runs_after_a"] if r.data.tags["cnnlab.model_md5"] == metrics["model_md5"]]
    assert producer.data.params["train.optimizer.lr"] == str(FIRST_LR)
    assert producer.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_a_failed_train_loses_nothing(team):
    failed = team["failed"]
    assert failed.returncode != 0 and "train.optimizer.lr: -1 is not accepted; it must be greater than 0" in failed.stderr
    assert team["model_gone_after_failure"], "DVC removes a stage's outputs before running it"
    assert team["checked_out"] == {stage: {o["path"]: o["md5"] for o in outs}
                                   for stage, outs in team["locks"][SECOND_LR].items()}, "dvc checkout: all back"
    assert stages_run(team["after_fix"]) == set(), "the fixed params match the last good run: restored, not retrained"
    assert "train@mnist_cnn" in stages_restored(team["after_fix"])
    assert team["after_fix_outputs"] == team["checked_out"]
