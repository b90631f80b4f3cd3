"""The benchmark compares like with like: same model, same batch, same loss; and its CLI writes its table."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from cnnlab import bench
from cnnlab.config import AugmentConfig, parse_params
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
                "--workers", "0", "--repeats", "1", "--no-pipeline", "--no-tracking", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["workloads"]
    assert row["workload"] == "mnist_fc" and row["steps"] == 20 and row["batch_size"] == 64
    assert row["reference_workers"] == 0
    assert row["reference_images_per_second"] > 0 and row["engine_images_per_second"] > 0
    assert row["speedup"] == pytest.approx(row["engine_images_per_second"] / row["reference_images_per_second"])
    assert report["peak_flops"]["fp32"] > 1e9
    assert "| mnist_fc | 64 | 20 | 0 |" in out.with_suffix(".md").read_text()
