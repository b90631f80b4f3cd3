"""`make exps`: DVC experiments a line per model, only what differs from the workspace."""

from __future__ import annotations

from cnnlab_tools.experiments import revisions, table


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
