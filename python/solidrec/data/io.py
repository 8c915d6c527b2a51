"""Deterministic, atomic file output: byte-reproducible npz files, hashing, atomic dirs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` readable by ``np.load`` whose bytes depend only on
    the arrays (fixed zip timestamps, fixed member order), unlike ``np.savez``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), sorted keys, trailing newline."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling directory; on success it replaces ``out``.

    A crash leaves ``out`` untouched (old contents or absent) and at worst a stale
    ``.out.tmp-*`` sibling; never a half-written ``out``.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def content_hash(directory: str | Path, names: list[str]) -> str:
    """sha256 over the named files' names and sha256s, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode())
        h.update(b"\0")
        h.update(sha256_file(Path(directory) / name).encode())
        h.update(b"\n")
    return h.hexdigest()
