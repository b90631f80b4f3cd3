"""Resuming a killed run: it ends with the weights and history of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from cnnlab.engine import loop
from cnnlab.engine.checkpoint import EpochCheckpoint
from cnnlab.engine.runtime import Runtime
from engine_scenarios import AIRBENCH_PIECES, Killed, fresh_model, killed_and_resumed, small_problem

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_killed_run_resumes_where_it_stopped_and_ends_identical(tmp_path, precision):
    killed_and_resumed(tmp_path, Runtime(CPU, precision, channels_last=precision == "bf16"))


def test_the_lookahead_average_and_alternating_flips_resume_identically_too(tmp_path):
    killed_and_resumed(tmp_path, Runtime(CPU, "fp32", channels_last=False), AIRBENCH_PIECES)


def test_a_state_saved_on_another_device_is_not_continued_and_says_so(tmp_path, monkeypatch, capsys):
    """Never a crash on restoring a CUDA generator's state on the CPU: the key holds the device type, and the
    stage says in one line why it starts afresh."""
    from cnnlab.engine.runtime import Runtime as EngineRuntime
    from cnnlab.paths import Layout
    from cnnlab.pipeline.training import StageRun, train_tracked
    from cnnlab.tracking.client import DatasetRecord

    monkeypatch.setenv("CNNLAB_TRACKING", "off")
    layout = Layout(tmp_path)
    data, normalize, config = small_problem()
    run = StageRun("tiny", "study", "train@tiny", {}, DatasetRecord("d", "0", tmp_path, "synthetic", {}), {}, "fp")
    on_cuda = EpochCheckpoint(layout.resume_file("tiny"), "the key of a CUDA run", extra={"device": "cuda"})
    on_cuda.save({"history": [{"epoch": 1}], "rng": {"generator": torch.zeros(16, dtype=torch.uint8)}})

    trained = train_tracked(layout, run, fresh_model(), data, normalize, config, EngineRuntime(CPU, "fp32", False),
                            0.0, lambda model, path: torch.save(model.state_dict(), path), {"param_count": 0})
    assert trained.info["epochs"] == 5 and not layout.resume_file("tiny").exists()
    out = capsys.readouterr().out
    assert f"tiny: not resuming from {layout.resume_file('tiny')}: it was saved on cuda, this run is on cpu; " \
           "training from the first epoch" in out
    assert "resuming after" not in out


def test_a_checkpoint_of_another_run_is_ignored(tmp_path):
    data, normalize, config = small_problem()
    path = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        loop.train(fresh_model(), data, normalize, config, progress=False,
                     on_epoch=lambda r: (_ for _ in ()).throw(Killed) if r.epoch == 2 else None,
                     checkpoint=EpochCheckpoint(path, "old-settings"))
    epochs: list[int] = []
    loop.train(fresh_model(), data, normalize, config, progress=False, on_epoch=lambda r: epochs.append(r.epoch),
                 checkpoint=EpochCheckpoint(path, "new-settings"))
    assert epochs == [1, 2, 3, 4, 5]


def test_a_truncated_checkpoint_starts_the_run_afresh(tmp_path):
    path = tmp_path / "resume.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    assert EpochCheckpoint(path, "any").saved is None


def test_checkpoints_are_written_at_most_every_n_seconds(tmp_path):
    data, normalize, config = small_problem()
    path = tmp_path / "resume.pt"
    loop.train(fresh_model(), data, normalize, config, progress=False,
                 checkpoint=EpochCheckpoint(path, "k", every_seconds=3600))
    assert not path.exists(), "a run shorter than the interval writes no checkpoint"
