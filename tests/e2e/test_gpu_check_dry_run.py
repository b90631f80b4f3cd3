"""The GPU check, dry-run on this CPU as CI runs it: every part it can, and each part it skips named."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, run_env


def test_the_gpu_check_runs_what_a_cpu_can_and_names_what_it_skipped(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, "-m", "cnnlab_tools.gpu_check", "--out", str(out), "--dry-run"],
                          cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parts = json.loads((out / "summary.json").read_text())["parts"]
    assert list(parts) == ["a_environment", "b_gpu_tests", "c_bench", "d_cifar10", "e_nccl"]
    assert parts["a_environment"]["status"] == "ok" and parts["a_environment"]["peak_flops"]["fp32"] > 0
    assert parts["a_environment"]["nvidia_smi"].startswith("skipped: no nvidia-smi")
    assert parts["b_gpu_tests"]["status"] == "skipped" and parts["b_gpu_tests"]["why"].startswith("no CUDA")
    assert parts["b_gpu_tests"]["counts"]["skipped"] >= 10 and "failed" not in parts["b_gpu_tests"]["counts"]
    assert [row["workload"] for row in parts["c_bench"]["workloads"]] == ["mnist_cnn", "cifar_lenet"]
    rows = parts["d_cifar10"]["experiments"]
    assert set(rows) == {"cifar_lenet", "cifar_speedrun"} and all(row["status"] == "ok" for row in rows.values())
    # train_seconds is the stage's own line, rounded to 0.1 s: a tiny CPU run can print 0.0, its rate never 0
    assert all(0 <= row["test_accuracy"] <= 1 for row in rows.values()), rows
    assert all(row["train_seconds"] >= 0 and row["train_images_per_second"] > 0 for row in rows.values()), rows
    assert parts["e_nccl"]["backend"] == "gloo", "one rank of torch.distributed's launcher, gloo on a CPU"
    report = (out / "gpu.md").read_text()
    assert "part b_gpu_tests: skipped (no CUDA" in report and "| cifar_speedrun | 1 |" in report
    assert (out / "log.txt").stat().st_size > 0
