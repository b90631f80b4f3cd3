"""The team server under a team's load, on loopback (`make test-slow`; figures in the README):

- 8 train stages at once, each logging its run, a metric per epoch and a model to the authenticated
  TLS server: every run FINISHED, every epoch's metric there, every model registered, no warning, no
  connection-pool error in the server's log; a probe measures the server's latency meanwhile.
- A history of 1,000 runs in one study, logged through MLflow's client: the top 50 by test_accuracy and
  one run are found in well under a second.
"""

from __future__ import annotations

import concurrent.futures
import random
import subprocess
import threading
import time

import pytest
from test_mlflow_server import Stack, clean_login, client, stack  # noqa: F401  (fixtures)

from conftest import copy_project, run, run_env, set_in

pytestmark = pytest.mark.slow

STAGES = 8
EPOCHS = 20
HISTORY = 1000


def eight_spirals(params: dict) -> None:
    """The spiral MLP as 8 experiments of one study (8 runs, 8 registered models), 20 epochs each."""
    base = params["experiments"]["spiral_mlp"]
    params["datasets"] = {"spiral": params["datasets"]["spiral"]}
    params["experiments"] = {}
    for index in range(STAGES):
        experiment = {**base, "train": {**base["train"], "epochs": EPOCHS, "seed": index}}
        params["experiments"][f"spiral_load{index}"] = experiment
    params["transfer"], params["replicates"], params["report"]["comparisons"] = {}, {}, []
    set_in(params, "runtime.checkpoint_every_s", 0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def probe_latency(server: Stack, experiment_id: str, stop: threading.Event, seconds: list[float]) -> None:
    """What a teammate's UI asks meanwhile: the study's newest runs, again and again."""
    mlflow = client(server, "bob")
    while not stop.is_set():
        started = time.perf_counter()
        mlflow.search_runs([experiment_id], max_results=25, order_by=["attributes.start_time DESC"])
        seconds.append(time.perf_counter() - started)
        time.sleep(0.1)


def test_eight_stages_at_once_lose_nothing(stack, tmp_path, clean_login):  # noqa: F811
    root = copy_project(tmp_path / "project", eight_spirals)
    run(["dvc", "repro", "prepare@spiral"], root, run_env({"CNNLAB_TRACKING": "off"}))
    stack.tool("grant", "alice", "spiral", "EDIT")
    experiment_id = client(stack, "alice").get_experiment_by_name("spiral").experiment_id

    latencies: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=probe_latency, args=(stack, experiment_id, stop, latencies))
    probe.start()
    started = time.monotonic()
    stages = [subprocess.Popen(["python", "stages/train.py", f"spiral_load{i}"], cwd=root, env=stack.env("alice"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(STAGES)]
    outcomes = [stage.communicate(timeout=900) for stage in stages]
    wall = time.monotonic() - started
    stop.set()
    probe.join()

    for stage, (_out, err) in zip(stages, outcomes, strict=True):
        assert stage.returncode == 0, err
        assert not [line for line in err.splitlines() if line.startswith("cnnlab:")], err
    mlflow = client(stack, "bob")
    runs = mlflow.search_runs([experiment_id], "tags.`cnnlab.experiment` LIKE 'spiral_load%'")
    assert sorted(r.data.tags["cnnlab.experiment"] for r in runs) == [f"spiral_load{i}" for i in range(STAGES)]
    for found in runs:
        assert found.info.status == "FINISHED"
        steps = {m.step for m in mlflow.get_metric_history(found.info.run_id, "train_loss")}
        assert steps == set(range(1, EPOCHS + 1)), found.data.tags["cnnlab.experiment"]
        name = f"spiral.{found.data.tags['cnnlab.experiment']}"
        assert mlflow.search_model_versions(f"name = '{name}' and run_id = '{found.info.run_id}'"), name
    log = (stack.directory / "mlflow.log").read_text(errors="replace")
    assert "QueuePool limit" not in log and "TimeoutError" not in log and "Traceback" not in log
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(f"\n{STAGES} train stages at once: {wall:.1f} s; {len(latencies)} probe searches meanwhile, "
          f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    assert p95 < 5.0, "a teammate's UI waited seconds for a search"


def test_a_history_of_a_thousand_runs_is_searched_in_well_under_a_second(stack, clean_login):  # noqa: F811
    from mlflow.entities import Metric, Param

    stack.tool("grant", "alice", "history", "EDIT")
    mlflow = client(stack, "alice")
    experiment_id = mlflow.get_experiment_by_name("history").experiment_id
    accuracies = random.Random(0).sample(range(100_000), HISTORY)

    def log_one(index: int) -> None:
        run_id = mlflow.create_run(experiment_id, run_name=f"run{index}").info.run_id
        now = int(time.time() * 1000)
        mlflow.log_batch(run_id, metrics=[Metric("test_accuracy", accuracies[index] / 100_000, now, 0)],
                         params=[Param("train.optimizer.lr", str(0.001 * (1 + index % 10)))])
        mlflow.set_terminated(run_id)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(log_one, range(HISTORY)))
    logging_seconds = time.monotonic() - started

    reader = client(stack, "bob")
    timings = {}
    for attempt in range(3):  # the first may warm caches; all three are reported
        started = time.perf_counter()
        top = reader.search_runs([experiment_id], max_results=50, order_by=["metrics.test_accuracy DESC"])
        timings.setdefault("search", []).append(time.perf_counter() - started)
        started = time.perf_counter()
        opened = reader.get_run(top[attempt].info.run_id)
        timings.setdefault("get_run", []).append(time.perf_counter() - started)
    expected = sorted(accuracies, reverse=True)[:50]
    assert [round(r.data.metrics["test_accuracy"] * 100_000) for r in top] == expected
    assert opened.data.params["train.optimizer.lr"]
    print(f"\n{HISTORY} runs logged in {logging_seconds:.1f} s ({HISTORY / logging_seconds:.0f} runs/s, 4 threads); "
          f"top 50 by test_accuracy: {', '.join(f'{s * 1000:.0f}' for s in timings['search'])} ms; "
          f"opening a run: {', '.join(f'{s * 1000:.0f}' for s in timings['get_run'])} ms")
    assert max(timings["search"]) < 1.0 and max(timings["get_run"]) < 1.0
