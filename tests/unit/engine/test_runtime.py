"""The engine's runtime: precision is the experiment's, the machine decides only how fast it runs."""

from __future__ import annotations

import platform

import pytest
import torch
from torch import nn

from cnnlab.config.runtime import RuntimeConfig
from cnnlab.engine.runtime import CPU_BF16_FLAGS, Runtime, bf16_is_native, cpu_flags, resolve_runtime

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True),
        ({"avx2", "amx_tile", "amx_bf16"}, True),
        ({"avx2", "avx512f"}, False),  # AVX-512 without bf16 dot products: bf16 is emulated, slower than fp32
        (set(), False),  # not Linux, or flags unreadable
    ],
)
def test_native_bf16_on_cpu_follows_the_cpu_flags(flags, native):
    assert bf16_is_native(CPU, frozenset(flags)) is native


def test_the_experiments_precision_is_used_whatever_the_machine():
    """The same params give the same kind of result on every machine (the run-cache may share it)."""
    for precision in ("fp32", "bf16"):
        assert resolve_runtime(RuntimeConfig(), CPU, precision).precision == precision
    assert resolve_runtime(RuntimeConfig(), CPU, "fp32").channels_last is True
    assert resolve_runtime(RuntimeConfig(channels_last=False), CPU, "fp32").channels_last is False


def test_bf16_runtime_autocasts_matmuls_and_fp32_does_not():
    layer, x = nn.Linear(4, 4), torch.randn(2, 4)
    with Runtime(CPU, "bf16", channels_last=False).autocast():
        assert layer(x).dtype == torch.bfloat16
    with Runtime(CPU, "fp32", channels_last=False).autocast():
        assert layer(x).dtype == torch.float32


def test_this_machines_native_bf16_matches_its_cpu_flags():
    assert bf16_is_native(CPU) is bool(cpu_flags() & CPU_BF16_FLAGS)


SUBNORMALS_TO_ZERO = """
import sys, torch
if sys.argv[1] == "engine":
    import cnnlab.engine.runtime
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
