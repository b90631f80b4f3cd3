"""Resumable training state: a killed run resumes where it stopped, to the result of an uninterrupted one."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch


class EpochCheckpoint:
    """Resumable training state in one file, saved after epochs, removed when the run completes.

    `key` fingerprints what is trained (model, data, settings): a file left by
    a run with another key is stale and ignored. `extra` travels with the state
    (the pipeline keeps its MLflow run key there, so a resumed run continues it).
    """

    def __init__(self, path: Path, key: str, every_seconds: float = 0.0, extra: dict[str, Any] | None = None):
        self.path, self.key, self.every_seconds = Path(path), key, every_seconds
        self.extra = dict(extra or {})
        self._saved: dict[str, Any] | None = None
        self._other: dict[str, Any] | None = None
        self._loaded = False
        self._last_save = time.monotonic()

    @property
    def saved(self) -> dict[str, Any] | None:
        """The state a previous run of the same key left, if any (read once)."""
        if not self._loaded:
            self._loaded = True
            if self.path.is_file():
                try:
                    state = torch.load(self.path, map_location="cpu", weights_only=True)
                except Exception:  # a file cut short by the kill it is meant to survive
                    state = None
                if isinstance(state, dict) and state.get("key") == self.key:
                    self._saved = state
                elif isinstance(state, dict):
                    self._other = dict(state.get("extra") or {})
        return self._saved

    @property
    def other_run(self) -> dict[str, Any] | None:
        """The `extra` of a state left by a run with another key (other settings, data or device), if any: it is
        not continued, and this says what it was."""
        _ = self.saved
        return self._other

    def due(self) -> bool:
        """Whether the epoch that just ended is to be saved."""
        return time.monotonic() - self._last_save >= self.every_seconds

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save({**state, "key": self.key, "extra": self.extra}, partial)
        os.replace(partial, self.path)  # a kill mid-save leaves the previous checkpoint intact
        self._last_save = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_states(device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random states a run draws from: dropout from the global generators, shuffling and augmentation
    from `generator`."""
    states = {"generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, torch.Tensor], device: torch.device, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch_rng"])
    if "cuda_rng" in states:
        torch.cuda.set_rng_state(states["cuda_rng"], device)
