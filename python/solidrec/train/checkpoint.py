"""Atomic, self-describing checkpoints."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

MAGIC = "solidrec-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is truncated, corrupt, foreign or incompatible."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory,
    fsynced, then ``os.replace`` — a kill at any moment leaves the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"magic": MAGIC, "version": VERSION, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint; raise :class:`CheckpointError` with a clear reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        # weights_only=False: the payload holds RNG states and plain dicts we wrote ourselves.
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {e}") from e
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise CheckpointError(f"{path}: not a solidrec checkpoint (foreign file)")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj.get('version')} != {VERSION}")
    return obj
