"""A sweep's runs carry one id: the baseline commit and the keys they change, read from git and params.yaml."""

from __future__ import annotations

import subprocess

import yaml

from cnnlab.tracking.sweeps import SWEEP_TAG, SWEPT_TAG, sweep_id, sweep_tags, swept_params


def test_swept_params_are_the_flattened_keys_whose_value_changed():
    baseline = {"a": {"lr": 0.1, "epochs": 2}, "b": [1, 2]}
    assert swept_params(baseline, {"a": {"lr": 0.5, "epochs": 2}, "b": [1, 2]}) == {"a.lr": "0.5"}
    assert swept_params(baseline, baseline) == {}
    assert sweep_id("abc", ["x", "y"]) == sweep_id("abc", ["y", "x"]) != sweep_id("abd", ["x", "y"])


def test_runs_of_a_dvc_experiment_are_tagged_with_their_sweep_and_others_are_not(tmp_path, monkeypatch):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    params = {"experiments": {"mnist_cnn": {"train": {"optimizer": {"lr": 0.01}, "epochs": 2}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    git("init", "-q")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    baseline = git("rev-parse", "HEAD").strip()
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    assert sweep_tags(tmp_path) == {}, "a plain `dvc repro` is no sweep"

    monkeypatch.setenv("DVC_EXP_BASELINE_REV", baseline)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    tags = []
    for lr in (0.005, 0.05):
        params["experiments"]["mnist_cnn"]["train"]["optimizer"]["lr"] = lr
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        tags.append(sweep_tags(tmp_path))
    assert tags[0][SWEEP_TAG] == tags[1][SWEEP_TAG] == sweep_id(baseline, ["experiments.mnist_cnn.train.optimizer.lr"])
    assert [t[SWEPT_TAG] for t in tags] == ["experiments.mnist_cnn.train.optimizer.lr=0.005",
                                            "experiments.mnist_cnn.train.optimizer.lr=0.05"]
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0" * 40)
    assert sweep_tags(tmp_path) == {}, "a baseline git cannot show tags nothing, and never fails the run"
