import yaml

from cnnlab.config import parse_params
from cnnlab.report import markdown, summarize
from conftest import REPO


def metrics(accuracy: float) -> dict:
    return {"test_accuracy": accuracy, "test_loss": 0.1, "param_count": 6422, "train_seconds": 1.0,
            "train_images_per_second": 1000.0, "device": "cpu", "study": "mnist", "model": "m"}


def test_findings_are_stated_from_the_numbers():
    params = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()))
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
    assert "| mnist_cnn | mnist | m | 95.00% |" in table and "Not yet evaluated: spiral_linear, spiral_mlp," in table


def test_figures_are_drawn_per_study_with_two_or_more_experiments(tmp_path):
    from cnnlab.report import figures

    summary = {"experiments": {
        "a": metrics(0.5) | {"study": "zoo", "param_count": 10, "train_images_per_second": 100.0},
        "b": metrics(0.7) | {"study": "zoo", "param_count": 1000, "train_images_per_second": 10.0},
        "c": metrics(0.9) | {"study": "alone"},
    }}
    written = figures(summary, tmp_path)
    assert sorted(p.name for p in written) == ["zoo_accuracy_vs_params.png", "zoo_accuracy_vs_throughput.png"]
    assert all(p.stat().st_size > 1000 for p in written)
