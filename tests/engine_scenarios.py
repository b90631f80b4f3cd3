"""Engine scenarios shared by the CPU tests (tests/unit/engine) and the CUDA tests (tests/gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.config.experiments import AugmentConfig, LookaheadConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from cnnlab.data.loader import DeviceSplit, Normalizer
from cnnlab.engine import loop
from cnnlab.engine.checkpoint import EpochCheckpoint
from cnnlab.engine.loop import EpochRecord
from cnnlab.engine.runtime import Runtime


class Killed(Exception):
    """Stands in for SIGKILL: training stops in an epoch-end hook (say, a hung MLflow call)."""


def small_problem() -> tuple[DeviceSplit, Normalizer, TrainConfig]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=generator)
    targets = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    normalize = Normalizer(torch.full((1, 1, 1, 1), 1 / 255), torch.zeros(1, 1, 1, 1))
    # Everything that draws random numbers or keeps state across steps: shuffling, crop and flip,
    # dropout, momentum, a schedule.
    config = TrainConfig(
        optimizer=OptimizerConfig("sgd", lr=0.05, momentum=0.9, nesterov=True),
        schedule=ScheduleConfig("onecycle", 0.2), epochs=5, batch_size=16,
        augment=AugmentConfig(crop_padding=2, flip=True), seed=3,
    )
    return DeviceSplit(images, targets), normalize, config


def fresh_model(batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(4)] if batchnorm else []
    return nn.Sequential(nn.Conv2d(1, 4, 3), *norm, nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(144, 2))


# airbench's pieces: BatchNorm shifts at a higher rate, a warm-up from a fifth of the rate and a decay to a
# tenth, reflected crops, alternating flips and the lookahead average of the weights.
AIRBENCH_PIECES = TrainConfig(
    optimizer=OptimizerConfig("sgd", lr=0.05, momentum=0.9, nesterov=True, norm_bias_lr_scale=8.0),
    schedule=ScheduleConfig("onecycle", 0.2, initial_factor=0.2, final_factor=0.1), epochs=5, batch_size=16,
    augment=AugmentConfig(crop_padding=2, padding_mode="reflect", flip="alternate"),
    lookahead=LookaheadConfig(every_steps=2, decay=0.9), seed=3,
)


def killed_and_resumed(tmp_path: Path, runtime: Runtime, config: TrainConfig | None = None) -> None:
    """Train small_problem uninterrupted, and again killed in epoch 3 then resumed: both must end identical."""
    data, normalize, default_config = small_problem()
    config = config or default_config
    batchnorm = config.optimizer.norm_bias_lr_scale != 1
    data = DeviceSplit(data.inputs.to(runtime.device), data.targets.to(runtime.device))
    normalize = Normalizer(normalize.multiplier.to(runtime.device), normalize.offset.to(runtime.device))

    uninterrupted = fresh_model(batchnorm).to(runtime.device)
    expected = loop.train(uninterrupted, data, normalize, config, runtime, progress=False)

    checkpoint_path = tmp_path / "resume.pt"

    def kill_in_epoch_3(record: EpochRecord) -> None:
        if record.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        torch.manual_seed(1234)  # the killed process's global RNG state is gone; the checkpoint must restore it
        loop.train(fresh_model(batchnorm).to(runtime.device), data, normalize, config, runtime, progress=False,
                     on_epoch=kill_in_epoch_3,
                     checkpoint=EpochCheckpoint(checkpoint_path, "run-a", extra={"run_id": "r1"}))
    assert checkpoint_path.is_file()

    resumed_epochs: list[int] = []
    checkpoint = EpochCheckpoint(checkpoint_path, "run-a")
    assert checkpoint.saved is not None and checkpoint.saved["extra"] == {"run_id": "r1"}
    resumed = fresh_model(batchnorm).to(runtime.device)
    result = loop.train(resumed, data, normalize, config, runtime, progress=False, checkpoint=checkpoint,
                          on_epoch=lambda r: resumed_epochs.append(r.epoch))

    assert resumed_epochs == [4, 5], "the state after epoch 3 is saved before its hook (a network call) runs"
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]
    assert [r.train_loss for r in result.history] == [r.train_loss for r in expected.history]
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
