"""The progress bar's one estimate of a long run, from the rate of its first seconds."""

from __future__ import annotations

from cnnlab.engine.progress import Progress, format_duration


def test_durations_read_as_a_person_says_them():
    assert [format_duration(s) for s in (0.2, 59, 61, 3540, 3600, 11 * 3600 + 5 * 60)] == [
        "1 s", "59 s", "2 min", "59 min", "1 h 00 min", "11 h 05 min"]


def test_a_long_run_says_once_how_long_it_has_left(capsys):
    bar = Progress(epochs=10, images_per_epoch=45_000, steps_per_epoch=352, enabled=True)
    bar.start_epoch(1)
    bar.estimate(1, images_done=500, seconds=5.0)  # still warming up: no estimate yet
    assert "estimate" not in capsys.readouterr().err
    bar.estimate(1, images_done=1_000, seconds=10.0)  # 100 img/s, 449,000 images to go
    bar.estimate(1, images_done=2_000, seconds=20.0)
    bar.end_epoch()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("estimate")]
    assert lines == ["estimate: about 1 h 15 min to go for 10 epoch(s) of 45,000 images, "
                     "at the 100 img/s of the first 10 s"]


def test_a_short_run_or_a_silent_bar_says_nothing(capsys):
    short = Progress(epochs=1, images_per_epoch=60_000, steps_per_epoch=938, enabled=True)
    short.start_epoch(1)
    short.estimate(1, images_done=10_000, seconds=10.0)  # 50 s to go
    silent = Progress(epochs=30, images_per_epoch=50_000, steps_per_epoch=196, enabled=False)
    silent.estimate(1, images_done=100, seconds=10.0)
    short.end_epoch()
    assert "estimate" not in capsys.readouterr().err
