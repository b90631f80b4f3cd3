"""`make plan` / `make repro`: the course on a CPU, everything on a GPU, and an estimate timed on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from cnnlab.config.params import parse_params
from cnnlab_tools.plan import Stopwatch, dataset_sizes, jobs, make_plan, seconds_for, up_to_date
from conftest import REPO, committed_params, run, run_env, write_image_folder

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_without_a_gpu_the_plan_is_the_course_and_leaves_out_the_zoo_and_what_builds_on_it(tmp_path):
    params = parse_params(committed_params())
    plan = make_plan(params, tmp_path, CPU)
    ran = [job.name for job in plan.run]
    assert [n for n in ran if "-seed" not in n] == [
        "spiral_linear", "spiral_mlp", "mnist_fc", "mnist_cnn", "mnist_fc_perm", "mnist_cnn_perm",
        "cifar_lenet", "cifar_vgg", "catsdogs_vgg16"]
    assert "cifar_lenet-seed4" in ran
    left_out = [job.name for job in plan.left_out]
    assert left_out == [*(n for n, e in params.experiments.items() if e.study == "cifar10_zoo"), "catsdogs_cifar_vgg16_bn"]
    assert "cifar_speedrun" in left_out and len(left_out) == 10
    assert {job.target for job in plan.run} >= {"evaluate@cifar_vgg", "evaluate_replicate@mnist_fc-seed1",
                                                "evaluate_head@catsdogs_vgg16"}


def test_with_a_gpu_or_asked_for_all_the_plan_is_everything(tmp_path):
    params = parse_params(committed_params())
    every = len(params.experiments) + len(params.replicates) + len(params.transfer)
    for plan in (make_plan(params, tmp_path, CUDA), make_plan(params, tmp_path, CPU, everything=True)):
        assert len(plan.run) == every and plan.left_out == []


def test_dataset_sizes_come_from_the_source_or_the_prepared_data(tmp_path):
    raw = committed_params()
    assert dataset_sizes(parse_params(raw), "cifar10", tmp_path) == (50_000, 10_000)  # the official split
    raw["datasets"]["cifar10"]["acquire"]["source"] = "images"
    assert dataset_sizes(parse_params(raw), "cifar10", tmp_path) == (45_000, 5_000)  # 10% held out
    prepared = tmp_path / "data" / "prepared" / "mnist"
    prepared.mkdir(parents=True)
    (prepared / "meta.json").write_text(json.dumps({"sizes": {"train": 123, "test": 45}}))
    assert dataset_sizes(parse_params(raw), "mnist", tmp_path) == (123, 45)
    raw["datasets"]["catsdogs"]["acquire"]["source"] = str(tmp_path / "nowhere")
    assert dataset_sizes(parse_params(raw), "catsdogs", tmp_path) is None


def test_a_setup_is_timed_once_and_its_estimate_scales_with_the_epochs(tmp_path):
    raw = committed_params()
    raw["datasets"]["mnist"]["acquire"].update(source="synthetic", synthetic={"train_size": 640, "test_size": 64, "seed": 0})
    params = parse_params(raw)
    by_name = {job.name: job for job in jobs(params, tmp_path)}
    stopwatch = Stopwatch(CPU)
    one = seconds_for(params, by_name["mnist_fc"], stopwatch)
    seed = seconds_for(params, by_name["mnist_fc-seed1"], stopwatch)
    assert len(stopwatch.speeds) == 1 and one == seed and one is not None and one > 0
    raw["experiments"]["mnist_fc"]["train"]["epochs"] = 3
    longer = parse_params(raw)
    three = seconds_for(longer, {job.name: job for job in jobs(longer, tmp_path)}["mnist_fc"], stopwatch)
    assert three is not None and abs(three - one * (3 * 640 + 64 / 3) / (640 + 64 / 3)) < 1e-9


def test_targets_are_what_make_repro_hands_to_dvc():
    done = subprocess.run([sys.executable, "-m", "cnnlab_tools.plan", "--targets"], cwd=REPO, capture_output=True,
                          text=True, env=run_env({"CNNLAB_DEVICE": "cpu"}), check=True)
    targets = done.stdout.split()
    assert targets[0] == "evaluate@spiral_linear" and "evaluate@cifar_vgg" in targets
    assert not any("zoo" in target or "speedrun" in target for target in targets)


def test_a_transfer_is_timed_by_its_features_over_every_photo(tmp_path):
    raw = committed_params()
    raw["datasets"]["catsdogs"]["acquire"]["source"] = str(write_image_folder(tmp_path / "photos", per_class=5))
    params = parse_params(raw)
    job = {job.name: job for job in jobs(params, tmp_path)}["catsdogs_cifar_vgg16_bn"]
    assert (job.train_stage, job.images, job.test_images) == ("features@catsdogs_cifar_vgg16_bn", 8, 2)
    stopwatch = Stopwatch(CPU)
    seconds = seconds_for(params, job, stopwatch)
    assert seconds is not None and seconds == 10 / stopwatch.speeds[job.timing_key]


def test_a_stage_is_up_to_date_only_when_nothing_before_it_changed(tmp_path):
    """A real DVC project of two stages: once `dvc repro` ran, a change to the first (as a dataset's params change
    its prepare stage) means `dvc repro` runs the second again, so the plan must count its time."""
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(command, tmp_path)
    (tmp_path / "params.yaml").write_text("size: 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  prepare: {cmd: cp params.yaml data.txt, params: [size], outs: [data.txt]}\n"
        "  train: {cmd: cp data.txt model.txt, deps: [data.txt], outs: [model.txt]}\n"
    )
    run(["dvc", "repro"], tmp_path)
    assert up_to_date(tmp_path, ["prepare", "train"]) == {"prepare", "train"}
    (tmp_path / "params.yaml").write_text("size: 2\n")
    assert up_to_date(tmp_path, ["prepare", "train"]) == set()
