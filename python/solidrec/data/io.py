"""Deterministic, atomic file output: byte-reproducible npz files, hashing, atomic files
and directories, clear errors when the OS refuses a write. The one place files are
written atomically: data, checkpoints, logs and metrics all use it."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
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


class OutputError(OSError):
    """A file or directory could not be written (disk full, read-only, no permission).

    The message names the path, the OS reason and what was kept; temporary files are
    already removed when it is raised.
    """


def _umask() -> int:
    # Read without setting it where the kernel tells (Linux >= 4.7): os.umask() would
    # briefly change it for every thread of the process.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def tmp_prefix(name: str) -> str:
    # The pid in the name lets a later start tell a dead writer's leftovers from a
    # live writer's work in progress (see clean_stale_temps).
    return f".{name}.tmp-{os.getpid()}-"


def clean_stale_temps(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove temporary files/directories (``.NAME.tmp-PID-*``) left in ``directory`` by
    writers that are no longer running; return what was removed. With ``name``, only
    the temporaries of that target. Also finishes an interrupted directory swap (see
    :func:`atomic_directory`)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        head, sep, tail = p.name.partition(".tmp-")
        kind = "tmp"
        if not sep:
            head, sep, tail = p.name.partition(".old-")
            kind = "old"
        if not sep or not head.startswith(".") or (name is not None and head[1:] != name):
            continue
        pid = tail.split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        target = d / head[1:]
        if kind == "old" and not target.exists():
            # Killed between the two renames of the fallback swap: the old copy is the
            # only complete one; put it back.
            os.replace(p, target)
            continue
        _remove(p)
        removed.append(p)
    return removed


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO}


def _is_write_failure(e: OSError, parent: Path) -> bool:
    # An input file that is missing is the caller's error, not a failed write.
    name = str(e.filename or "")
    return e.errno in _WRITE_ERRNOS or (bool(name) and name.startswith(str(parent)))


def _output_error(path: Path, e: OSError, kept: str) -> OutputError:
    reason = e.strerror or str(e)
    return OutputError(e.errno or 0, f"cannot write {path}: {reason}; {kept}")


def atomic_write(path: str | Path, data: bytes | str | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` to ``path`` atomically: a temporary sibling, fsynced, then
    ``os.replace``. A kill at any moment leaves the old file or the new one; a failure
    removes the temporary and raises :class:`OutputError` naming the path and what was
    kept. The file gets the usual permissions (0666 minus the umask)."""
    path = Path(path)
    parts = (
        [data.encode("utf-8")]
        if isinstance(data, str)
        else ([data] if isinstance(data, bytes | bytearray | memoryview) else list(data))
    )
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path.name), dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
        raise _output_error(path, e, kept) from e
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`atomic_write`), sorted keys, trailing newline."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    OS or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_path(new: Path, target: Path) -> None:
    """Put the complete file or directory ``new`` at ``target`` (replacing a file, tree or
    symlink there). At every instant ``target`` is the old entry or the new one (atomic
    exchange); where the OS cannot exchange, a kill between the two renames is repaired
    by the next :func:`clean_stale_temps`. Never follows a symlink at ``target``."""
    if not target.exists() and not target.is_symlink():
        os.replace(new, target)
        return
    if _exchange(new, target):
        _remove(new)  # now the old entry
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    _remove(old)
    os.replace(target, old)
    os.replace(new, target)
    _remove(old)


@contextlib.contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling directory; on success it replaces ``out``.

    A crash leaves ``out`` untouched (old contents or absent) and at worst a stale
    ``.out.tmp-PID-*`` sibling, removed by the next call; never a half-written ``out``.
    Write failures raise :class:`OutputError` naming the directory.
    """
    out = Path(out).resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out.parent, out.name)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(out.name), dir=out.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as e:
        raise _output_error(out, e, "nothing was changed") from e
    try:
        yield tmp
        replace_path(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OutputError) or not _is_write_failure(e, out.parent):
            raise
        kept = "the previous copy is kept" if out.exists() else "nothing was written"
        raise _output_error(out, e, kept) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def content_hash(directory: str | Path, names: list[str]) -> str:
    """sha256 over the named files' names and sha256s, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode())
        h.update(b"\0")
        h.update(sha256_file(Path(directory) / name).encode())
        h.update(b"\n")
    return h.hexdigest()
