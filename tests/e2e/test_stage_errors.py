"""Each bad input gets one clear line naming it and the fix, a non-zero exit, and no half-written output."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from cnnlab.data.kinds import mnist
from conftest import SHARED_DATA, run, run_env


def test_stage_reports_bad_params_in_one_line_and_exits_nonzero(make_project):
    root = make_project(lambda p: p["experiments"]["mnist_fc"]["train"]["optimizer"].update(lr="0.01x"))
    done = run(["python", "stages/train.py", "mnist_fc"], root, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: experiments.mnist_fc.train.optimizer.lr: expected a number, got '0.01x'"
    ]
    assert not (root / "models").exists()


def test_unknown_experiment_name_on_the_command_line(make_project):
    root = make_project()
    done = run(["python", "stages/train.py", "mnist_resnet"], root, check=False)
    assert done.returncode == 1
    assert "experiment 'mnist_resnet' is not in params.yaml; known: spiral_linear" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_missing_prepared_file_names_the_file_and_the_stage_to_run(make_project):
    root = make_project()
    done = run(["python", "stages/train.py", "mnist_cnn"], root, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: data/prepared/mnist/meta.json: missing; run `dvc repro prepare@mnist` first"
    )
    assert not (root / "models").exists()


def test_no_network_and_no_mirror_fails_fast_naming_everything(make_project):
    root = make_project()
    started = time.monotonic()
    # A proxy on a closed local port makes every official URL fail at once, with or without a network.
    dead_proxy = "http://127.0.0.1:9"
    env = run_env({"http_proxy": dead_proxy, "https_proxy": dead_proxy, "no_proxy": ""})
    done = run(["python", "stages/download.py", "mnist"], root, env=env, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "dataset 'mnist': could not get 4 file(s)" in message
    for remote in mnist.FILES:
        assert remote.name in message
    for base in mnist.OFFICIAL_BASES:
        assert base in message
    assert "CNNLAB_MIRROR" in message
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert not any((root / "data" / "raw" / "mnist").glob("*")), "nothing half-written is left"






def only_mnist_download(params: dict) -> None:
    del params["datasets"]["spiral"]
    params["experiments"] = {}
    params["transfer"] = {}
    params["report"]["comparisons"] = []


def test_mirror_setting_does_not_invalidate_stages(make_project, tmp_path):
    root = make_project(only_mnist_download)
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED_DATA / "mnist", mirror / "mnist")
    run(["dvc", "repro", "download@mnist"], root, env=run_env({"CNNLAB_MIRROR": str(mirror)}))
    other = tmp_path / "other-mirror"
    shutil.copytree(mirror, other)
    status = run(["dvc", "status", "download@mnist"], root, env=run_env({"CNNLAB_MIRROR": str(other)}))
    assert "up to date" in status.stdout




# --- Bad data and bad places: refused by the stage that meets them, before its long work ---------------------


def small_mnist_fc(params: dict) -> None:
    from cnnlab_tools.sandbox import smoke_experiment

    smoke_experiment(params, "mnist_fc")
    params["datasets"]["mnist"]["acquire"]["synthetic"] = {"train_size": 2000, "test_size": 100, "seed": 0}
    params["experiments"]["mnist_fc"]["train"]["epochs"] = 3


@pytest.fixture(scope="module")
def prepared_mnist_fc(tmp_path_factory: pytest.TempPathFactory):
    from conftest import copy_project

    root = copy_project(tmp_path_factory.mktemp("bad") / "project", small_mnist_fc)
    run(["dvc", "repro", "prepare@mnist"], root, env=run_env({"CNNLAB_TRACKING": "off"}))
    return root


def test_a_diverging_run_stops_early_with_one_line_and_is_marked_diverged_everywhere(prepared_mnist_fc, tmp_path):
    """lr 1e6 on mnist_fc, which trained a whole epoch to a dead network before. Stopped within the first window
    of steps, exit 0 (a result: the same settings diverge again, so DVC may cache it), no model, metrics without an
    accuracy, the MLflow run FAILED and tagged with the reason."""
    from mlflow import MlflowClient

    from conftest import edit_params

    root = prepared_mnist_fc
    env = run_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    edit_params(root, "experiments.mnist_fc.train.optimizer.lr", 1.0e6)
    try:
        trained = run(["python", "stages/train.py", "mnist_fc"], root, env=env, check=False)
        evaluated = run(["python", "stages/evaluate.py", "mnist_fc"], root, env=env, check=False)
        info = json.loads((root / "models" / "mnist_fc" / "train.json").read_text())
        model_written = (root / "models" / "mnist_fc" / "model.pt").exists()
        metrics = json.loads((root / "metrics" / "mnist_fc.json").read_text())
    finally:
        edit_params(root, "experiments.mnist_fc.train.optimizer.lr", 0.01)
        for output in ("models", "metrics", "reports"):  # the module's other tests start without them
            shutil.rmtree(root / output, ignore_errors=True)
    assert trained.returncode == 0 and evaluated.returncode == 0, trained.stderr + evaluated.stderr
    lines = [line for line in trained.stderr.splitlines() if line.startswith("cnnlab: warning: mnist_fc")]
    assert len(lines) == 1 and "Traceback" not in trained.stderr, trained.stderr
    # NaN within a few steps on this small generated set, or a window of finite but huge losses (real MNIST's
    # 2.9e31): either way within the first window of steps.
    assert lines[0].startswith("cnnlab: warning: mnist_fc: training diverged: the "), lines[0]
    assert "lower train.optimizer.lr" in lines[0]
    assert info["diverged"]["step"] <= 10 and info["diverged"]["epoch"] == 1
    assert not model_written and not (root / ".cnnlab" / "resume" / "mnist_fc.pt").exists()
    assert "test_accuracy" not in metrics and metrics["diverged"].startswith("training diverged: ")
    assert evaluated.stdout.startswith("mnist_fc: not evaluated, its training diverged")
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    (training,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert training.info.status == "FAILED" and training.data.tags["cnnlab.diverged"] == info["diverged"]["reason"]


def test_outputs_that_cannot_be_written_are_refused_before_training(prepared_mnist_fc):
    root = prepared_mnist_fc
    (root / "models").write_text("a file where the models directory should be")
    try:
        started = time.monotonic()
        done = run(["python", "stages/train.py", "mnist_fc"], root, env=run_env({"CNNLAB_TRACKING": "off"}),
                   check=False)
        elapsed = time.monotonic() - started
    finally:
        (root / "models").unlink()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: models: outputs cannot be written there (a file is in the way); make it writable, "
        "or run from a checkout you can write to"]
    assert "epoch" not in done.stdout + done.stderr, "refused before the first epoch"
    assert elapsed < 30


def one_class_folder(root) -> None:
    from conftest import write_image_folder

    write_image_folder(root, classes=("cats",), per_class=6)


def constant_green_channel(root) -> None:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = bytes(v for j in range(32 * 32) for v in ((j * 7 + i) % 256, 128, (j * 3 + 40 * (label == "b")) % 256))
            Image.frombytes("RGB", (32, 32), pixels).save(root / label / f"{i}.png")


@pytest.mark.parametrize(("make_folder", "expected"), [
    (one_class_folder, "error: dataset 'shapes': its training split holds one class (cats); a classifier needs at "
                       "least two: add a folder of images for another class"),
    (constant_green_channel, "error: dataset 'shapes': channel 1 has the same value in every training sample "
                             "(zero variance), which normalisation would divide by; check the source files"),
])
def test_an_image_folder_no_classifier_can_learn_from_is_refused_at_prepare(make_project, tmp_path, make_folder,
                                                                           expected):
    folder = tmp_path / "images"
    make_folder(folder)

    def shapes_only(params: dict) -> None:
        params["datasets"] = {"shapes": {"kind": "imagefolder", "acquire": {"source": str(folder)},
                                         "prepare": {"crop": 32, "test_fraction": 0.25}}}
        params["experiments"], params["transfer"], params["report"]["comparisons"] = {}, {}, []

    root = make_project(shapes_only)
    run(["python", "stages/download.py", "shapes"], root)
    done = run(["python", "stages/prepare.py", "shapes"], root, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [expected]
    assert not (root / "data" / "prepared" / "shapes").exists()
