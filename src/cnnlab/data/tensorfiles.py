"""Tensor files: written atomically, read back with a one-line error naming the stage that makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import DataError
from cnnlab.io import replaced_atomically


def save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    with replaced_atomically(path) as tmp:
        torch.save(tensors, tmp)


def load_tensor_file(path: Path, how_to_make: str) -> dict[str, Any]:
    """A file of `save_tensors` (weights only: never code); `how_to_make` is the command that writes it."""
    if not path.is_file():
        raise DataError(f"{path}: missing; run `{how_to_make}` first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise DataError(f"{path}: unreadable ({type(error).__name__}); delete it and run `{how_to_make}`") from None
