"""An advisory lock that keeps two processes from writing one run directory."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from solidrec.runs.layout import RunDir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


class RunLock:
    """``flock`` on ``RUNDIR/.lock``, which records the owner's pid, host and start time.

    The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock
    file never blocks a later ``--resume``. Where ``fcntl`` is missing the lock file is
    created exclusively instead and removed on release.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunDir(run_dir).lock
        self._fd: int | None = None

    def _owner(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return (
                f"pid {info['pid']} on {info['host']}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        if fcntl is None:  # pragma: no cover
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise RunLockedError(self._message()) from None
        else:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(self._message()) from None
            os.ftruncate(fd, 0)
        os.write(fd, info.encode())
        self._fd = fd
        return self

    def _message(self) -> str:
        return (
            f"{self.path.parent} is in use by {self._owner()}; wait for it to finish, or "
            "train into another --out"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is None:  # pragma: no cover
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
