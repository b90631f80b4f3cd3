"""`make exps`: DVC experiments a line per model, only what differs from the workspace."""

from __future__ import annotations

from cnnlab.tracking.sweeps import sweep_id
from cnnlab_tools.experiments import plot_sweeps, revisions, sweeps, sweeps_text, table


def test_the_view_lists_only_what_differs_from_the_workspace():
    def entry(rev: str, lr: float, accuracy: dict[str, float], name: str | None = None) -> dict:
        metrics = {f"metrics/{model}.json": {"data": {"test_accuracy": value}} for model, value in accuracy.items()}
        metrics["metrics/missing.json"] = {"error": {"type": "FileNotFoundError"}}
        return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": {"a": {"lr": lr}, "b": 1}}},
                                                    "metrics": metrics}}

    shown = [entry("workspace", 0.1, {"cnn": 0.9, "fc": 0.8}),
             {**entry("abcdef0123", 0.1, {"cnn": 0.9, "fc": 0.8}, "main"),
              "experiments": [{"name": "fast", "executor": {"state": "success"},
                               "revs": [entry("1234567890", 0.5, {"cnn": 0.7, "fc": 0.8})]}]}]
    assert table(revisions(shown)).splitlines() == [
        "workspace",
        "    cnn                          test accuracy  90.00%",
        "    fc                           test accuracy  80.00%",
        "main abcdef0",
        "fast 1234567  Success  a.lr=0.5",
        "    cnn                          test accuracy  70.00%",
    ]


def metrics_of(runs: dict[str, tuple[str, float]]) -> dict:
    """metrics/<run>.json contents for runs -> (experiment, accuracy)."""
    return {f"metrics/{run}.json": {"data": {"test_accuracy": a, "experiment": e}} for run, (e, a) in runs.items()}


def test_an_experiments_seeds_fold_into_one_line_and_a_sweep_is_grouped_by_its_value():
    def entry(rev: str, lr: float, cnn: float, epochs: int = 1) -> dict:
        runs = {"cnn": ("cnn", cnn), "cnn-seed1": ("cnn", cnn + 0.02), "fc": ("fc", 0.8)}
        return {"rev": rev, "data": {"params": {"params.yaml": {"data": {"a": {"lr": lr, "epochs": epochs}}}},
                                     "metrics": metrics_of(runs)}}

    def experiment(name: str, rev: str, lr: float, cnn: float, epochs: int = 1) -> dict:
        return {"name": name, "executor": {"state": "success"}, "revs": [entry(rev, lr, cnn, epochs)]}

    baseline = {**entry("abcdef0123", 0.1, 0.9), "name": "main", "experiments": [
        experiment("e3", "3333333333", 0.5, 0.7), experiment("e1", "1111111111", 0.05, 0.85),
        experiment("e2", "2222222222", 0.1, 0.9), experiment("alone", "4444444444", 0.1, 0.6, epochs=3)]}
    found = revisions([entry("workspace", 0.1, 0.9), baseline])
    lines = table(found).splitlines()
    assert lines[:3] == ["workspace", "    cnn                          test accuracy  91.00% +- 1.41 (2 seeds)",
                         "    fc                           test accuracy  80.00%"]
    (sweep,) = sweeps(found)
    assert sweep.keys == ("a.lr",) and sweep.id == sweep_id("abcdef0123", ["a.lr"]), "the id MLflow tags carry"
    assert sweeps_text([sweep]).splitlines() == [
        f"sweep {sweep.id}: 3 runs from main abcdef0 over a.lr",
        "  lr=0.05  (e1 1111111 Success)",
        "      cnn                          test accuracy  86.00% +- 1.41 (2 seeds)",
        "  lr=0.1  (e2 2222222 Success)",
        "      cnn                          test accuracy  91.00% +- 1.41 (2 seeds)",
        "  lr=0.5  (e3 3333333 Success)",
        "      cnn                          test accuracy  71.00% +- 1.41 (2 seeds)",
    ], "ordered by value; the baseline's own value is a point too; fc, unchanged by the sweep, is left out"


def test_a_sweep_plot_draws_accuracy_against_the_swept_value(tmp_path):
    def experiment(rev: str, lr: float, accuracy: float) -> dict:
        return {"name": rev, "revs": [{"rev": rev, "data": {"params": {"params.yaml": {"data": {"lr": lr}}},
                                                              "metrics": metrics_of({"cnn": ("cnn", accuracy)})}}]}

    shown = [{"rev": "abcdef0123", "name": "main", "data": {"params": {"params.yaml": {"data": {"lr": 1.0}}}},
              "experiments": [experiment("a", 0.01, 0.9), experiment("b", 0.1, 0.95)]}]
    (written,) = plot_sweeps(sweeps(revisions(shown)), tmp_path)
    assert written.name.startswith("sweep-") and written.stat().st_size > 1000
