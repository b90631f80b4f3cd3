"""The engine's runtime: precision selection, and resuming a killed run to the same result."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab import engine
from cnnlab.config import AugmentConfig, OptimizerConfig, RuntimeConfig, ScheduleConfig, TrainConfig, parse_params
from cnnlab.data.loader import DeviceSplit, Normalizer
from cnnlab.errors import ConfigError

CPU = torch.device("cpu")


VGG_MACS = 152_769_536  # the course's VGG: big enough for bf16 to pay
MNIST_CNN_MACS = 149_300  # the course's MNIST CNN: bound by per-op overhead


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
        ({"avx2", "amx_tile", "amx_bf16"}, "bf16"),
        ({"avx2", "avx512f"}, "fp32"),  # AVX-512 without bf16 dot products: autocast would only add casts
        (set(), "fp32"),  # not Linux, or flags unreadable
    ],
)
def test_auto_precision_on_cpu_follows_the_bf16_flags(flags, expected):
    runtime = engine.resolve_runtime(RuntimeConfig(), CPU, VGG_MACS, frozenset(flags))
    assert runtime.precision == expected
    assert runtime.channels_last is True


def test_auto_precision_keeps_small_models_in_fp32():
    bf16_cpu = frozenset({"avx512_bf16"})
    assert engine.resolve_runtime(RuntimeConfig(), CPU, MNIST_CNN_MACS, bf16_cpu).precision == "fp32"
    assert engine.resolve_runtime(RuntimeConfig(), CPU, engine.BF16_MIN_MACS_PER_IMAGE, bf16_cpu).precision == "bf16"


def test_explicit_precision_and_layout_win_over_auto():
    bf16_cpu = frozenset({"avx512_bf16"})
    assert engine.resolve_runtime(RuntimeConfig(precision="fp32"), CPU, VGG_MACS, bf16_cpu).precision == "fp32"
    assert engine.resolve_runtime(RuntimeConfig(precision="bf16"), CPU, MNIST_CNN_MACS, frozenset()).precision == "bf16"
    assert engine.resolve_runtime(RuntimeConfig(channels_last=False), CPU, VGG_MACS, bf16_cpu).channels_last is False


def test_bf16_runtime_autocasts_matmuls_and_fp32_does_not():
    layer, x = nn.Linear(4, 4), torch.randn(2, 4)
    with engine.Runtime(CPU, "bf16", channels_last=False).autocast():
        assert layer(x).dtype == torch.bfloat16
    with engine.Runtime(CPU, "fp32", channels_last=False).autocast():
        assert layer(x).dtype == torch.float32


def test_this_machines_precision_matches_its_cpu_flags():
    flags = engine.cpu_flags()
    expected = "bf16" if flags & {"amx_bf16", "avx512_bf16"} else "fp32"
    assert engine.resolve_runtime(RuntimeConfig(), CPU, VGG_MACS).precision == expected


def test_runtime_settings_are_checked():
    with pytest.raises(ConfigError, match=r"runtime\.precision: 'fp16' is not accepted; use one of 'auto', 'fp32', 'bf16'"):
        parse_params({"runtime": {"precision": "fp16"}})
    with pytest.raises(ConfigError, match=r"runtime\.channels_last: 'yes' is not accepted"):
        parse_params({"runtime": {"channels_last": "yes"}})
    with pytest.raises(ConfigError, match=r"runtime\.compiled: unknown key"):
        parse_params({"runtime": {"compiled": True}})


# --------------------------------------------------------------------------
# Resume after a kill
# --------------------------------------------------------------------------


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


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(144, 2))


def killed_and_resumed(tmp_path: Path, runtime: engine.Runtime) -> None:
    """Train small_problem uninterrupted, and again killed in epoch 3 then resumed: both must end identical."""
    data, normalize, config = small_problem()
    data = DeviceSplit(data.inputs.to(runtime.device), data.targets.to(runtime.device))
    normalize = Normalizer(normalize.multiplier.to(runtime.device), normalize.offset.to(runtime.device))

    uninterrupted = fresh_model().to(runtime.device)
    expected = engine.train(uninterrupted, data, normalize, config, runtime, progress=False)

    checkpoint_path = tmp_path / "resume.pt"

    def kill_in_epoch_3(record: engine.EpochRecord) -> None:
        if record.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        torch.manual_seed(1234)  # the killed process's global RNG state is gone; the checkpoint must restore it
        engine.train(fresh_model().to(runtime.device), data, normalize, config, runtime, progress=False,
                     on_epoch=kill_in_epoch_3,
                     checkpoint=engine.EpochCheckpoint(checkpoint_path, "run-a", extra={"run_id": "r1"}))
    assert checkpoint_path.is_file()

    resumed_epochs: list[int] = []
    checkpoint = engine.EpochCheckpoint(checkpoint_path, "run-a")
    assert checkpoint.saved is not None and checkpoint.saved["extra"] == {"run_id": "r1"}
    resumed = fresh_model().to(runtime.device)
    result = engine.train(resumed, data, normalize, config, runtime, progress=False, checkpoint=checkpoint,
                          on_epoch=lambda r: resumed_epochs.append(r.epoch))

    assert resumed_epochs == [4, 5], "the state after epoch 3 is saved before its hook (a network call) runs"
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]
    assert [r.train_loss for r in result.history] == [r.train_loss for r in expected.history]
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_killed_run_resumes_where_it_stopped_and_ends_identical(tmp_path, precision):
    killed_and_resumed(tmp_path, engine.Runtime(CPU, precision, channels_last=precision == "bf16"))


def test_a_checkpoint_of_another_run_is_ignored(tmp_path):
    data, normalize, config = small_problem()
    path = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        engine.train(fresh_model(), data, normalize, config, progress=False,
                     on_epoch=lambda r: (_ for _ in ()).throw(Killed) if r.epoch == 2 else None,
                     checkpoint=engine.EpochCheckpoint(path, "old-settings"))
    epochs: list[int] = []
    engine.train(fresh_model(), data, normalize, config, progress=False, on_epoch=lambda r: epochs.append(r.epoch),
                 checkpoint=engine.EpochCheckpoint(path, "new-settings"))
    assert epochs == [1, 2, 3, 4, 5]


def test_a_truncated_checkpoint_starts_the_run_afresh(tmp_path):
    path = tmp_path / "resume.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    assert engine.EpochCheckpoint(path, "any").saved is None


def test_checkpoints_are_written_at_most_every_n_seconds(tmp_path):
    data, normalize, config = small_problem()
    path = tmp_path / "resume.pt"
    engine.train(fresh_model(), data, normalize, config, progress=False,
                 checkpoint=engine.EpochCheckpoint(path, "k", every_seconds=3600))
    assert not path.exists(), "a run shorter than the interval writes no checkpoint"


# --------------------------------------------------------------------------
# Subnormal floats
# --------------------------------------------------------------------------

SUBNORMALS_TO_ZERO = """
import sys, torch
if sys.argv[1] == "engine":
    import cnnlab.engine
x = torch.full((4_000_000,), 1e-39)  # big enough for every OpenMP thread to take a share
print(float((x * 1.0 == 0).double().mean()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="FTZ/DAZ are x86 flags")
def test_importing_the_engine_makes_every_cpu_thread_flush_subnormals():
    """The flag is per thread; the engine sets it before torch starts its thread pool, so all threads have it."""
    import subprocess
    import sys

    env = {"OMP_NUM_THREADS": "2", "PATH": ""}
    share = {}
    for mode in ("plain", "engine"):
        done = subprocess.run([sys.executable, "-c", SUBNORMALS_TO_ZERO, mode], capture_output=True, text=True,
                              env=env, check=True)
        share[mode] = float(done.stdout)
    assert share == {"plain": 0.0, "engine": 1.0}
