"""Atomic, checksummed, code-free checkpoints.

File layout (format 2)::

    b"SOLIDREC-CKPT\\n"  {"format": 2, "sha256": HEX, "size": N}\\n  <N bytes of torch.save>

The payload holds tensors and plain values only (dicts, lists, numbers, strings) and is
read with ``torch.load(weights_only=True)``, so a crafted file cannot run code; the
sha256 over the payload catches any flipped or missing byte before it is unpickled.
Format-1 files (a bare ``torch.save``, no checksum) still load, also weights-only.

``save_checkpoint(..., keep_previous=True)`` first moves the current file to
``NAME.prev.pt``; :func:`load_latest` falls back to it, saying so, when the newest
file is missing or corrupt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from solidrec.data.io import OutputError, atomic_write

MAGIC = "solidrec-checkpoint"
VERSION = 1  # of the payload dict (keys and their meaning)
FORMAT = 2  # of the file framing
_HEADER = b"SOLIDREC-CKPT\n"
_MAX_META = 4096


class CheckpointError(RuntimeError):
    """A checkpoint that is truncated, corrupt, foreign, unsafe or incompatible."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept (``last.pt`` -> ``last.prev.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = False) -> None:
    """Write ``payload`` (tensors and plain values) to ``path`` atomically.

    With ``keep_previous`` the current file becomes :func:`previous_path` first, so a
    good checkpoint exists at every instant even if the new one is later found corrupt.
    Raises :class:`OutputError` (disk full, read-only, ...) naming what was kept.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"magic": MAGIC, "version": VERSION, **payload}, buf)
    body = buf.getbuffer()  # no copy of the payload
    meta = {"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    head = _HEADER + json.dumps(meta, sort_keys=True).encode() + b"\n"
    rotated = False
    if keep_previous and path.exists():
        try:
            os.replace(path, previous_path(path))
            rotated = True
        except OSError as e:
            raise OutputError(
                e.errno or 0, f"cannot write {path}: {e.strerror or e}; {path.name} is kept"
            ) from e
    try:
        atomic_write(path, [head, body])
    except OutputError as e:
        if not rotated:
            raise
        raise OutputError(
            e.errno,
            f"{str(e.strerror).split('; ')[0]}; the previous checkpoint is kept as "
            f"{previous_path(path).name}",
        ) from e


def _unframe(path: Path, raw: bytes) -> bytes:
    if not raw.startswith(_HEADER):
        return raw  # format 1: a bare torch.save zip, loaded weights-only
    end = raw.find(b"\n", len(_HEADER), len(_HEADER) + _MAX_META)
    if end < 0:
        raise CheckpointError(f"{path}: corrupt checkpoint header")
    try:
        meta = json.loads(raw[len(_HEADER) : end])
        size, digest, fmt = int(meta["size"]), str(meta["sha256"]), int(meta["format"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint header: {e}") from e
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: checkpoint file format {fmt} != {FORMAT}")
    body = raw[end + 1 :]
    if len(body) != size:
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated or corrupt): {len(body)} bytes, "
            f"header says {size}"
        )
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated or corrupt): sha256 mismatch"
        )
    return body


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and verify a checkpoint; raise :class:`CheckpointError` with a clear reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    body = _unframe(path, raw)
    try:
        obj = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than tensors and "
                "plain values (code could run on load); solidrec never writes such files"
            ) from e
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {e}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {e}") from e
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise CheckpointError(f"{path}: not a solidrec checkpoint (foreign file)")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj.get('version')} != {VERSION}")
    return obj


def load_latest(path: str | Path) -> tuple[dict[str, Any], Path, str] | None:
    """The newest loadable of ``path`` and :func:`previous_path`, the file it came from
    and a note ("" or why the previous file was used); None if neither file exists.

    Raises :class:`CheckpointError` naming every reason when files exist but none loads.
    """
    path = Path(path)
    errors = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            ck = load_checkpoint(candidate)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        note = ""
        if candidate != path:
            why = errors[0] if errors else f"{path} is missing"
            note = f"{why}; using the previous checkpoint {candidate}"
        return ck, candidate, note
    if errors:
        raise CheckpointError("; ".join(errors) + "; no good checkpoint left to resume from")
    return None
