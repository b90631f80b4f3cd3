"""The report: the course's questions answered from every seed with intervals, figures per study, generated data
said so."""

from __future__ import annotations

import math

import pytest

from cnnlab.config.params import parse_params
from cnnlab.report import markdown, summarize
from cnnlab.uncertainty import Spread, welch
from conftest import committed_params

FC_SEEDS = (0.8935, 0.8772, 0.8337, 0.8443, 0.8648)  # mnist_fc's five seeds measured on real MNIST


def metrics(accuracy: float, origin: str = "official", seed: int = 0, **more) -> dict:
    return {"test_accuracy": accuracy, "test_loss": 0.1, "param_count": 6422, "device": "cpu", "study": "mnist",
            "dataset": "mnist", "data_origin": origin, "model": "m", "seed": seed, **more}


def seeded(experiment: str, accuracies: tuple[float, ...], **more) -> dict[str, dict]:
    """Metrics files of an experiment's runs as the default params.yaml names them: its own, then -seed1..."""
    return {(experiment if seed == 0 else f"{experiment}-seed{seed}"): metrics(a, seed=seed, **more)
            for seed, a in enumerate(accuracies)}


def test_welch_matches_a_hand_computed_case():
    """a = 1..5, b = 3..7: difference 2, standard error 1, 8 degrees of freedom, t = 2."""
    difference = welch(Spread((1, 2, 3, 4, 5)), Spread((3, 4, 5, 6, 7)))
    assert difference.difference == 2
    assert difference.p_value == pytest.approx(0.08052, abs=1e-4)
    assert (difference.low, difference.high) == pytest.approx((2 - 2.30600, 2 + 2.30600), abs=1e-4)
    assert Spread((1, 2, 3, 4, 5)).interval() == pytest.approx((3 - 2.77645 * math.sqrt(2.5 / 5),
                                                               3 + 2.77645 * math.sqrt(2.5 / 5)), abs=1e-4)


def test_one_seed_gives_no_interval_and_identical_seeds_give_a_certain_one():
    assert Spread((0.9,)).interval() is None and Spread((0.9,)).sd is None
    lone = welch(Spread((0.9,)), Spread((0.95, 0.96)))
    assert (lone.low, lone.high, lone.p_value) == (None, None, None)
    assert lone.significant(0.05) is None
    flat = welch(Spread((1.0, 1.0, 1.0)), Spread((0.5, 0.5, 0.5)))
    assert flat.p_value == 0.0 and flat.low == flat.high == -0.5


def test_overlapping_seeds_are_no_significant_difference_and_separated_ones_a_difference_with_its_interval():
    params = parse_params(committed_params())
    runs = (seeded("mnist_fc", FC_SEEDS) | seeded("mnist_fc_perm", (0.8815, 0.8590, 0.8700, 0.8460, 0.8790))
            | seeded("mnist_cnn", (0.9270, 0.9301, 0.9255, 0.9288, 0.9310)))
    summary = summarize(params, runs)
    by_pair = {(f["baseline"], f["candidate"]): f for f in summary["findings"]}
    same = by_pair["mnist_fc", "mnist_fc_perm"]
    assert same["verdict"] == "no significant difference" and same["p_value"] > 0.05
    low, high = same["ci95_points"]
    assert low < 0 < high, "an interval that holds zero is no evidence of a difference"
    assert "No significant difference" in same["sentence"] and "5 seeds each" in same["sentence"]
    better = by_pair["mnist_fc", "mnist_cnn"]
    assert better["verdict"] == "higher" and better["p_value"] < 0.01
    low, high = better["ci95_points"]
    assert 0 < low < better["difference_points"] < high
    half = (high - low) / 2
    assert f"mnist_cnn beats mnist_fc by {better['difference_points']:.1f} +- {half:.1f} points" in better["sentence"]
    assert "Welch's t-test p = 0.00" in better["sentence"] or "p < 0.001" in better["sentence"]
    fc = summary["experiments"]["mnist_fc"]
    assert fc["seeds"] == {str(seed): a for seed, a in enumerate(FC_SEEDS)}, "every seed's value in summary.json"
    assert fc["test_accuracy"] == pytest.approx(sum(FC_SEEDS) / 5)
    assert fc["test_accuracy_sd"] == pytest.approx(0.02412, abs=1e-4), "the issue's 2.4-point sd of these seeds"
    assert fc["seed_count"] == 5 and fc["test_accuracy_ci95"][0] < fc["test_accuracy"] < fc["test_accuracy_ci95"][1]


def test_a_comparison_with_one_seed_says_no_interval_can_be_given():
    params = parse_params(committed_params())
    summary = summarize(params, {"mnist_fc": metrics(0.89), "mnist_cnn": metrics(0.95)})
    (finding,) = summary["findings"]
    assert finding["verdict"] == "no interval" and finding["ci95_points"] is None and finding["p_value"] is None
    assert "no interval can be given" in finding["sentence"]
    assert "mnist_fc and mnist_cnn has one seed" in finding["sentence"] or "one seed" in finding["sentence"]
    assert abs(finding["difference_points"] - 6.0) < 1e-9
    assert "mnist_fc-seed1" in summary["missing"], "the seeds params.yaml asks for and no metrics file holds"
    assert summary["missing"][:2] == ["spiral_linear", "spiral_linear-seed1"]
    table = markdown(summary)
    assert "| mnist_cnn | mnist | mnist | m | 95.00% |  | 1 |" in table, table
    assert "Not yet evaluated: spiral_linear, spiral_linear-seed1," in table and "Generated data" not in table


def test_only_the_seeds_params_yaml_lists_count_and_a_diverged_seed_is_listed_never_averaged():
    raw = committed_params()
    raw["replicates"] = {"mnist_fc-seed1": {"experiment": "mnist_fc", "dataset": "mnist", "seed": 1},
                         "mnist_fc-seed2": {"experiment": "mnist_fc", "dataset": "mnist", "seed": 2}}
    params = parse_params(raw)
    runs = seeded("mnist_fc", (0.89, 0.88, 0.10, 0.87))  # -seed3 is a file left by a replicate since removed
    runs["mnist_fc-seed2"] = {k: v for k, v in runs["mnist_fc-seed2"].items() if k != "test_accuracy"} | {
        "diverged": "epoch 1, step 20: ..."}
    summary = summarize(params, runs)
    fc = summary["experiments"]["mnist_fc"]
    assert fc["seeds"] == {"0": 0.89, "1": 0.88} and fc["diverged_seeds"] == [2]
    assert fc["test_accuracy"] == pytest.approx(0.885)
    assert "| mnist_fc | mnist | mnist | m | 88.50% |" in markdown(summary) and "| [2] |" in markdown(summary)


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


def test_figures_are_drawn_per_study_with_seeds_where_an_experiment_has_several(tmp_path):
    from cnnlab.report import figures

    def row(accuracy: float, study: str, **more) -> dict:
        return metrics(accuracy) | {"study": study, "seed_count": 1, "seeds": {"0": accuracy},
                                    "test_accuracy_ci95": None, **more}

    summary = {"experiments": {
        "a": row(0.5, "zoo", param_count=10, train_images_per_second=100.0),
        "b": row(0.7, "zoo", param_count=1000, train_images_per_second=10.0),
        "c": row(0.9, "alone"),
        "d": row(0.6, "timeless", param_count=10),
        "e": row(0.8, "timeless", param_count=20, train_images_per_second=10.0),
        "f": row(0.8, "seeded", seed_count=3, seeds={"0": 0.79, "1": 0.8, "2": 0.81}, test_accuracy_ci95=(0.775, 0.825)),
        "g": {"study": "seeded", "seed_count": 0, "seeds": {}, "diverged_seeds": [0]},
    }}
    written = figures(summary, tmp_path)
    assert sorted(p.name for p in written) == ["seeded_seeds.png", "timeless_accuracy_vs_params.png",
                                               "zoo_accuracy_vs_params.png", "zoo_accuracy_vs_throughput.png"], (
        "throughput needs two known points; seeds are drawn where an experiment has several")
    assert all(p.stat().st_size > 1000 for p in written)
