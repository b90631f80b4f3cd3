"""The device a run uses and how it computes there: precision, memory layout, compiled and deterministic kernels."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.config.runtime import RuntimeConfig
from cnnlab.engine.cores import CoreShare, share_cores
from cnnlab.errors import ConfigError

DEVICE_ENV = "CNNLAB_DEVICE"
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # CPUs with native bf16 dot products


def flush_subnormals() -> bool:
    """Make this process's CPU threads treat subnormal floats as zero (x86 FTZ/DAZ); True if supported.

    Trained weights and activations drift into the subnormal range (below 1.2e-38), where x86 cores
    take microcode assists: on some Intel CPUs a batch-1 forward pass of the course CNN took 47-91 ms
    instead of 0.28 ms. The flag is per thread and new threads copy their creator's, so it must be set
    before torch starts its OpenMP threads (the first parallel op): hence at import of this module.
    Values that small carry no information for these models; results stay deterministic.
    """
    return torch.set_flush_denormal(True)


flush_subnormals()


def select_device() -> torch.device:
    """CUDA when there is one, else CPU; CNNLAB_DEVICE overrides (e.g. cpu, cuda:1).

    Deliberately not a param: a CPU user must not invalidate a GPU user's cache.
    """
    requested = os.environ.get(DEVICE_ENV)
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise ConfigError(f"{DEVICE_ENV}={requested!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{DEVICE_ENV}={requested!r} but CUDA is not available here; unset it or use cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in Linux's /proc/cpuinfo (None elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU as Linux lists them (empty elsewhere)."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def bf16_is_native(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 autocast runs on hardware made for it here (else it is emulated, and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool((cpu_flags() if flags is None else flags) & CPU_BF16_FLAGS)


@dataclass(frozen=True)
class Runtime:
    """How one run computes on one device."""

    device: torch.device
    precision: str  # "bf16" or "fp32"
    channels_last: bool
    compile: bool = False
    deterministic: bool = False
    cores: CoreShare | None = None  # this process's share of the CPU's cores, with other cnnlab stages

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def resolve_runtime(config: RuntimeConfig, device: torch.device, precision: str) -> Runtime:
    """The runtime for a model trained at `precision` (an experiment's param) on `device`."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision bf16 is not supported by {describe_device(device)}; set the experiment's "
            "train.precision to fp32"
        )
    channels_last = True if config.channels_last == "auto" else bool(config.channels_last)
    return Runtime(device, precision, channels_last, config.compile, config.deterministic, share_cores(device))


def configure_backends(runtime: Runtime) -> None:
    """Process-wide torch switches for this run (a stage is one process, one run)."""
    if runtime.deterministic:
        # cuBLAS needs this set before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel warns, naming itself, instead of failing the run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = runtime.device.type == "cuda"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU, where work is done when a call returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def intended_sync(device: torch.device) -> Iterator[None]:
    """Marks a host-device synchronisation the engine makes on purpose (reading a number back, saving).

    torch.cuda.set_sync_debug_mode("error") then flags every other one: the GPU tests train
    under it, so a stray .item() or data-dependent shape in the hot loop fails them.
    """
    if device.type != "cuda":
        yield
        return
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)
