"""The report: the course's questions answered from the metrics, figures per study, generated data said so."""

from __future__ import annotations

from cnnlab.config.params import parse_params
from cnnlab.report import markdown, summarize
from conftest import committed_params


def metrics(accuracy: float, origin: str = "official") -> dict:
    return {"test_accuracy": accuracy, "test_loss": 0.1, "param_count": 6422, "device": "cpu", "study": "mnist",
            "dataset": "mnist", "data_origin": origin, "model": "m"}


def test_findings_are_stated_from_the_numbers():
    params = parse_params(committed_params())
    summary = summarize(params, {"mnist_fc": metrics(0.89), "mnist_cnn": metrics(0.95),
                                 "mnist_fc_perm": metrics(0.885), "mnist_cnn_perm": metrics(0.80)})
    verdicts = {(f["baseline"], f["candidate"]): f["verdict"] for f in summary["findings"]}
    assert verdicts == {
        ("mnist_fc", "mnist_cnn"): "higher",
        ("mnist_fc", "mnist_fc_perm"): "about the same",
        ("mnist_cnn", "mnist_cnn_perm"): "lower",
    }, "comparisons whose experiments have no metrics yet are left out"
    cnn = next(f for f in summary["findings"] if f["candidate"] == "mnist_cnn")
    assert abs(cnn["difference_points"] - 6.0) < 1e-9
    assert "higher by 6.0 points" in cnn["sentence"]
    assert summary["missing"][:2] == ["spiral_linear", "spiral_mlp"] and "zoo_resnet18" in summary["missing"]
    table = markdown(summary)
    assert "| mnist_cnn | mnist | mnist | m | 95.00% |" in table and "Not yet evaluated: spiral_linear, spiral_mlp," in table
    assert "Generated data" not in table


def test_results_on_generated_data_say_so_and_timings_come_from_the_execution():
    params = parse_params(committed_params())
    summary = summarize(params, {"mnist_fc": metrics(0.89, "synthetic"), "mnist_cnn": metrics(0.95, "synthetic")},
                        {"mnist_cnn": {"run_id": "0123456789abcdef", "train_seconds": 12.5}})
    assert summary["synthetic_data"] == ["mnist"]
    assert summary["experiments"]["mnist_cnn"]["train_seconds"] == 12.5
    assert "train_seconds" not in summary["experiments"]["mnist_fc"], "no run found: no timing is made up"
    table = markdown(summary)
    assert "**Generated data**: mnist are synthetic stand-ins" in table
    assert "| mnist_cnn | mnist | mnist (synthetic) | m | 95.00% |" in table
    assert "| 12.5 |" in table and "| 01234567 |" in table


def test_figures_are_drawn_per_study_with_two_or_more_experiments(tmp_path):
    from cnnlab.report import figures

    summary = {"experiments": {
        "a": metrics(0.5) | {"study": "zoo", "param_count": 10, "train_images_per_second": 100.0},
        "b": metrics(0.7) | {"study": "zoo", "param_count": 1000, "train_images_per_second": 10.0},
        "c": metrics(0.9) | {"study": "alone"},
        "d": metrics(0.6) | {"study": "timeless", "param_count": 10},
        "e": metrics(0.8) | {"study": "timeless", "param_count": 20, "train_images_per_second": 10.0},
    }}
    written = figures(summary, tmp_path)
    assert sorted(p.name for p in written) == ["timeless_accuracy_vs_params.png", "zoo_accuracy_vs_params.png",
                                               "zoo_accuracy_vs_throughput.png"], "throughput needs two known points"
    assert all(p.stat().st_size > 1000 for p in written)
