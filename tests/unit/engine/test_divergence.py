"""Diverged runs stop early, by a rule on the losses alone: NaN or infinity at once, or a window of steps far
above the first step's loss; spikes and the course's settings never trip it."""

from __future__ import annotations

import math

import pytest
import torch
from test_loop import CPU, meta, spiral_splits

from cnnlab.config.experiments import OptimizerConfig, TrainConfig
from cnnlab.data.loader import DeviceSplit, make_normalizer
from cnnlab.engine import loop
from cnnlab.engine.divergence import FACTOR, WINDOW_STEPS, DivergenceWatch
from cnnlab.models.registry import build_model


def watched(losses: list[float], steps_per_epoch: int = 7, resume_after: int | None = None):
    """Feed `losses` step by step (optionally through a save and restore); what the watch recorded."""
    watch = DivergenceWatch(CPU)
    for step, value in enumerate(losses, start=1):
        watch.observe(torch.tensor(value), step)
        if step == resume_after:
            restored = DivergenceWatch(CPU)
            restored.restore([t.clone() for t in watch.state()])
            watch = restored
    return watch.divergence(watch.tripped_at, steps_per_epoch)


def test_a_falling_loss_and_a_short_spike_never_trip_the_rule():
    falling = [2.3 * 0.97**step for step in range(200)]
    assert watched(falling) is None
    spike = [2.3] * 5 + [20 * 2.3] + [2.0] * 50  # one step at 20x the start, as a bad batch or a warm-up peak
    assert watched(spike) is None


def test_a_window_far_above_the_first_loss_trips_at_its_end_and_a_resume_gives_the_same_answer():
    losses = [2.3] * 15 + [FACTOR * 2.3 * 1.5] * 30  # steps 16.. stay 15x above the start
    found = watched(losses)
    assert found is not None and found.step == 30, "steps 11-20 average 8x the start; 21-30 are the first window above"
    assert found.epoch == 5 and found.first_loss == pytest.approx(2.3)  # step 30 of 7 per epoch
    assert found.loss == pytest.approx(FACTOR * 2.3 * 1.5)
    assert "mean loss of steps 21-30 (epoch 5) was 34.5, over 10x the first step's 2.3" in found.describe()
    assert watched(losses, resume_after=17) == found, "the watch's state travels with a resumed run"
    almost = [2.3] * 10 + [FACTOR * 2.3 * 0.95] * 30
    assert watched(almost) is None, "below the factor is not divergence"


def test_a_non_finite_loss_trips_at_its_own_step():
    found = watched([2.3, 2.2, math.inf, 2.0])
    assert found is not None and (found.step, found.epoch) == (3, 1) and math.isinf(found.loss)
    assert found.describe() == "training diverged: the loss became inf at step 3 (epoch 1)"
    assert watched([2.3] * 8 + [math.nan]).step == 9


def test_training_at_an_absurd_rate_stops_in_its_first_window_with_the_epochs_before():
    train, _ = spiral_splits(200)
    normalize = make_normalizer(meta((2,), False, (0.0, 0.0), (1.0, 1.0)), "none", CPU)
    torch.manual_seed(0)
    model = build_model("two_layer", (2,), 3, hidden=100)
    config = TrainConfig(optimizer=OptimizerConfig(name="sgd", lr=1e6), epochs=3, batch_size=60, seed=0)
    with pytest.raises(loop.Diverged) as stopped:
        loop.train(model, DeviceSplit(train.inputs, train.targets), normalize, config, progress=False)
    divergence = stopped.value.divergence
    assert divergence.step <= WINDOW_STEPS and divergence.epoch == 1
    assert stopped.value.history == [], "stopped in epoch 1: no whole epoch to keep"
    assert str(stopped.value).startswith("training diverged: ")
