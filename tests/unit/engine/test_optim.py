"""Learning-rate schedules: a warm-up, then constant, cosine or linear decay."""

from torch import nn

from cnnlab.config.experiments import OptimizerConfig, ScheduleConfig
from cnnlab.engine.optim import lr_factor, make_optimizer


def test_a_warm_up_shorter_than_a_step_never_lifts_the_rate_above_its_peak():
    """The bench trains the zoo 3 steps: a 15% warm-up is less than one step."""
    schedule = ScheduleConfig("onecycle", 0.15)
    factors = [lr_factor(schedule, step, 3) for step in range(3)]
    assert max(factors) <= 1.0 and factors[0] == 1.0
    assert all(0 <= lr_factor(ScheduleConfig("cosine", 0.5, 0.2, 0.1), s, 1) <= 1 for s in range(1))


def test_a_warm_up_can_start_and_a_decay_end_above_zero():
    """airbench's: from a fifth of the rate up to it over 23% of the steps, then down to 7% of it."""
    schedule = ScheduleConfig("onecycle", 0.23, initial_factor=0.2, final_factor=0.07)
    total = 100
    factors = [lr_factor(schedule, step, total) for step in range(total)]
    assert 0.2 < factors[0] < 0.25 and max(factors) == 1.0 == factors[22]
    assert abs(lr_factor(schedule, total, total) - 0.07) < 1e-12 and factors[-1] > 0.07


def test_batchnorm_shifts_can_learn_faster_and_decay_as_much_per_step():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
    config = OptimizerConfig("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, norm_bias_lr_scale=64.0)
    fast, rest = make_optimizer(model, config).param_groups
    assert [id(p) for p in fast["params"]] == [id(model[1].bias)]
    assert fast["lr"] == 0.1 * 64 and fast["lr"] * fast["weight_decay"] == 0.1 * 1e-3
    assert len(rest["params"]) == 5 and rest["lr"] == 0.1 and rest["weight_decay"] == 1e-3
    assert len(make_optimizer(model, OptimizerConfig("sgd", lr=0.1)).param_groups) == 1


def test_schedules_warm_up_then_decay_to_zero():
    total = 100
    onecycle = [lr_factor(ScheduleConfig("onecycle", 0.2), step, total) for step in range(total)]
    assert onecycle[0] == 1 / 20 and onecycle[19] == 1.0
    assert onecycle[20] == 1.0 and onecycle[-1] < 0.02 and onecycle == sorted(onecycle[:20]) + onecycle[20:]
    cosine = [lr_factor(ScheduleConfig("cosine", 0.0), step, total) for step in range(total)]
    assert cosine[0] == 1.0 and abs(cosine[50] - 0.5) < 1e-9 and cosine[-1] < 0.01
    assert all(lr_factor(ScheduleConfig("constant"), step, total) == 1.0 for step in range(total))
