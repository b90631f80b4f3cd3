"""The progress bar's one estimate of a long run, from the rate of its first seconds."""

from __future__ import annotations

from cnnlab.engine.progress import Progress, format_duration


def test_durations_read_as_a_person_says_them():
    assert [format_duration(s) for s in (0.2, 59, 61, 3540, 3600, 11 * 3600 + 5 * 60)] == [
        "1 s", "59 s", "2 min", "59 min", "1 h 00 min", "11 h 05 min"]


def test_a_long_run_says_once_how_long_it_has_left(capsys):
    bar = Progress(epochs=10, images_per_epoch=45_000, steps_per_epoch=352, enabled=True)
    bar.start_epoch(1)
    bar.estimate(1, images_this_epoch=500, seconds=5.0)  # still warming up: no estimate yet
    assert "estimate" not in capsys.readouterr().err
    bar.estimate(1, images_this_epoch=1_000, seconds=10.0)  # 100 img/s, 449,000 images to go
    bar.estimate(1, images_this_epoch=2_000, seconds=20.0)
    bar.end_epoch()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("estimate")]
    assert lines == ["estimate: about 1 h 15 min to go for the 10 epoch(s) left of 45,000 images, "
                     "at the 100 img/s of its first 10 s"]


def test_a_long_run_of_short_epochs_counts_its_time_from_the_first_epoch(capsys):
    bar = Progress(epochs=30, images_per_epoch=1_000, steps_per_epoch=8, enabled=True, first_epoch=3)
    bar.start_epoch(3)
    bar.estimate(3, images_this_epoch=1_000, seconds=4.0)  # one 4 s epoch: too early
    bar.end_epoch()
    bar.start_epoch(4)
    bar.estimate(4, images_this_epoch=1_000, seconds=10.0)  # 2,000 images in 10 s; 26,000 images to go
    bar.end_epoch()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("estimate")]
    assert lines == ["estimate: about 3 min to go for the 27 epoch(s) left of 1,000 images, "
                     "at the 200 img/s of its first 10 s"]


def test_a_short_run_or_a_silent_bar_says_nothing(capsys):
    short = Progress(epochs=1, images_per_epoch=60_000, steps_per_epoch=938, enabled=True)
    short.start_epoch(1)
    short.estimate(1, images_this_epoch=10_000, seconds=10.0)  # 50 s to go
    silent = Progress(epochs=30, images_per_epoch=50_000, steps_per_epoch=196, enabled=False)
    silent.estimate(1, images_this_epoch=100, seconds=10.0)
    short.end_epoch()
    assert "estimate" not in capsys.readouterr().err
