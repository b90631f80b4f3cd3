"""The benchmark compares like with like: same model, same batch, same loss; and its CLI writes its table."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from cnnlab.config.experiments import AugmentConfig
from cnnlab.config.params import parse_params
from cnnlab_tools import bench
from conftest import committed_params, committed_params_file


@pytest.mark.parametrize("name", bench.WORKLOADS)
def test_engine_and_reference_loop_compute_the_same_loss_on_the_same_batch(name):
    workload = bench.workload_from_params(parse_params(committed_params()), name, steps=1)
    # Random crops would differ between the two; the comparison is of everything else.
    workload = replace(workload, train=replace(workload.train, augment=AugmentConfig()))
    images, targets = bench.generated_images(workload, 8)
    transform = bench.course_transform(workload)
    dataset = bench.CourseStyleDataset(images, targets, transform)
    reference_inputs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    engine_inputs = bench.engine_normalizer(workload, torch.device("cpu"))(bench.as_tensors(images))
    torch.testing.assert_close(engine_inputs, reference_inputs, rtol=0, atol=1e-5)

    model = workload.build_model()
    labels = torch.from_numpy(targets)
    reference_loss = bench.course_loss(model, reference_inputs, labels, workload.train)
    engine_loss = torch.nn.functional.cross_entropy(model(engine_inputs), labels)
    assert abs(reference_loss.item() - engine_loss.item()) < 1e-5


def test_course_transform_follows_the_experiments_augmentation():
    params = parse_params(committed_params())
    names = [type(t).__name__ for t in bench.course_transform(bench.workload_from_params(params, "cifar_vgg", 1)).transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    names = [type(t).__name__ for t in bench.course_transform(bench.workload_from_params(params, "mnist_cnn", 1)).transforms]
    assert names == ["ToTensor", "Normalize"]


def test_bench_cli_times_both_loops_and_writes_its_table(tmp_path):
    out = tmp_path / "bench"
    bench.main(["--params", str(committed_params_file(tmp_path)), "--workloads", "mnist_fc", "--steps-scale", "0.05",
                "--workers", "0", "--repeats", "1", "--no-pipeline", "--no-tracking", "--epochs", "2",
                "--epoch-images", "640", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["workloads"]
    assert row["workload"] == "mnist_fc" and row["steps"] == 20 and row["batch_size"] == 64
    assert row["reference_workers"] == 0
    assert row["reference_images_per_second"] > 0 and row["engine_images_per_second"] > 0
    assert row["speedup"] == pytest.approx(row["engine_images_per_second"] / row["reference_images_per_second"])
    assert report["peak_flops"]["fp32"] > 1e9
    (epochs,) = report["trained_epochs"]
    assert epochs["workload"] == "mnist_fc" and epochs["images"] == 640 and epochs["data"] == "generated strokes"
    assert len(epochs["images_per_second"]) == 2 and min(epochs["images_per_second"]) > 0
    assert "zoo" not in report, "the zoo is timed on CUDA only, unless asked for"
    text = out.with_suffix(".md").read_text()
    assert "| mnist_fc | 64 | 20 | 0 |" in text and "| mnist_fc | 640 | 2 |" in text


def test_whole_epochs_use_the_projects_prepared_data_when_it_exists(tmp_path):
    from cnnlab.data.prepared import write_prepared
    from cnnlab.data.splits import Splits

    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(300) % 10
    write_prepared("mnist", "mnist", Splits(images, labels, images[:10], labels[:10], tuple("0123456789"), "official"),
                   tmp_path / "data" / "prepared" / "mnist", None)
    workload = bench.workload_from_params(parse_params(committed_params()), "mnist_cnn", steps=1)
    data, origin = bench.epoch_data(workload, tmp_path, None)
    assert torch.equal(data.inputs, images) and origin == "data/prepared/mnist (official)"
    data, origin = bench.epoch_data(workload, tmp_path / "elsewhere", 100)
    assert len(data) == 100 and origin == "generated strokes"


def test_a_zoo_row_reports_speed_and_utilisation():
    workload = bench.workload_from_params(parse_params(committed_params()), "zoo_lenet", steps=2)
    runtime = engine_runtime = bench.resolved_runtime(parse_params(committed_params()), workload, torch.device("cpu"))
    peaks = {"fp32": 1e11, "bf16": 2e11}
    row = bench.zoo_row(workload, engine_runtime, peaks)
    assert row["model"] == "lenet" and row["batch_size"] == 256 and row["precision"] == runtime.precision == "bf16"
    assert row["images_per_second"] > 0
    assert row["utilisation"] == pytest.approx(row["images_per_second"] * 6 * 651_720 / peaks["bf16"], rel=1e-6)


@pytest.mark.slow
def test_mlflow_costs_a_stage_under_two_seconds():
    """The bench's MLflow figure (`make test-slow`: timings on a shared machine are too noisy for CI's gate)."""
    from conftest import REPO

    costs = bench.tracking_cost(REPO, repeats=5)
    for stage, cost in costs.items():
        print(f"{stage}: {cost['untracked_seconds']:.2f} s untracked, {cost['tracked_seconds']:.2f} s tracked")
    assert set(costs) == {"train@mnist_cnn", "evaluate@mnist_cnn"}
    assert all(cost["mlflow_seconds"] < 2.0 for cost in costs.values()), costs


def test_the_bench_runs_without_pydantic_dvc_or_mlflow(tmp_path):
    """A GPU machine's own Python has torch but not the pipeline's tools: params.yaml is read unvalidated."""
    code = (
        "import sys\n"
        "for absent in ('pydantic', 'dvc', 'mlflow'):\n"
        "    sys.modules[absent] = None\n"
        "from cnnlab_tools import bench\n"
        f"bench.main(['--params', {str(committed_params_file(tmp_path))!r}, '--workloads', 'mnist_fc', "
        "'--steps-scale', '0.02', '--workers', '0', '--repeats', '1', '--no-pipeline', '--no-tracking', "
        f"'--epochs', '0', '--out', {str(tmp_path / 'bench')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((tmp_path / "bench.json").read_text())["workloads"]
    assert row["workload"] == "mnist_fc" and row["engine_images_per_second"] > 0


def test_peaks_are_measured_for_each_arithmetic_and_a_run_is_held_to_its_own():
    cpu = torch.device("cpu")
    peaks = bench.measured_peaks(cpu)
    assert set(peaks) == {"fp32", "bf16"} and all(flops > 1e8 for flops in peaks.values())
    assert bench.peak_for("fp32", cpu, peaks) == peaks["fp32"]
    assert bench.peak_for("fp32", torch.device("cuda"), {"fp32": 1.0, "tf32": 2.0, "bf16": 3.0}) == 2.0
