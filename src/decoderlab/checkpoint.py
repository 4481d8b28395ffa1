"""Crash-safe checkpoint files: written to a temporary file, flushed, then renamed; loaded with weights_only.

Lightning-free (importing it costs seconds); its CheckpointIO plugin lives in :mod:`decoderlab.fit`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from decoderlab.errors import UserError


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to ``path`` such that a kill at any moment leaves either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint of plain values and tensors; a missing or corrupt file names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from None
