"""Learning-rate schedules: a warm-up, then constant, cosine or linear decay."""

from cnnlab.config.experiments import ScheduleConfig
from cnnlab.engine.optim import lr_factor


def test_schedules_warm_up_then_decay_to_zero():
    total = 100
    onecycle = [lr_factor(ScheduleConfig("onecycle", 0.2), step, total) for step in range(total)]
    assert onecycle[0] == 1 / 20 and onecycle[19] == 1.0
    assert onecycle[20] == 1.0 and onecycle[-1] < 0.02 and onecycle == sorted(onecycle[:20]) + onecycle[20:]
    cosine = [lr_factor(ScheduleConfig("cosine", 0.0), step, total) for step in range(total)]
    assert cosine[0] == 1.0 and abs(cosine[50] - 0.5) < 1e-9 and cosine[-1] < 0.01
    assert all(lr_factor(ScheduleConfig("constant"), step, total) == 1.0 for step in range(total))
