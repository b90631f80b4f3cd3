"""Real MNIST through the mirror (../shared/data), the course's settings, the course's findings.

Slow (about a minute on 2 cores, outside CI): `make test-slow`.
"""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA, run, run_env

pytestmark = pytest.mark.slow


def only_mnist(params: dict) -> None:
    del params["datasets"]["spiral"]
    params["experiments"] = {k: v for k, v in params["experiments"].items() if k.startswith("mnist")}
    params["report"]["comparisons"] = [c for c in params["report"]["comparisons"] if c["baseline"].startswith("mnist")]


def test_course_findings_hold_on_real_mnist(make_project):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("no ../shared/data/mnist on this machine")
    root = make_project(only_mnist)
    run(["dvc", "repro"], root, env=run_env({"CNNLAB_MIRROR": str(SHARED_DATA)}))
    accuracy = {
        name: json.loads((root / "metrics" / f"{name}.json").read_text())["test_accuracy"]
        for name in ("mnist_fc", "mnist_cnn", "mnist_fc_perm", "mnist_cnn_perm")
    }
    print(accuracy)
    assert 0.85 <= accuracy["mnist_fc"] <= 0.93, "the course saw FC ~89%"
    assert accuracy["mnist_cnn"] >= 0.93, "the course saw CNN ~95%"
    assert accuracy["mnist_cnn"] - accuracy["mnist_fc"] >= 0.03, "the CNN wins at equal parameter count"
    assert abs(accuracy["mnist_fc_perm"] - accuracy["mnist_fc"]) < 0.03, "permutation leaves the FC net unchanged"
    assert accuracy["mnist_cnn"] - accuracy["mnist_cnn_perm"] >= 0.05, "permutation clearly hurts the CNN"
    summary = json.loads((root / "reports" / "summary.json").read_text())
    verdicts = {f["candidate"]: f["verdict"] for f in summary["findings"]}
    assert verdicts == {"mnist_cnn": "higher", "mnist_fc_perm": "about the same", "mnist_cnn_perm": "lower"}
