"""Where and when a result was measured: the CPU model, the commit of this checkout and
the date. Runs record it (``RUN/cost.json``), ``solidrec report`` prints it above its
tables, and the benchmarks put it in their headers: one owner for all three."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

#: The checkout this package runs from (python/solidrec/ -> the repository root).
_REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(root: Path = _REPO) -> str | None:
    """The short commit of the checkout at ``root``, with `` + changes`` when tracked
    files differ from it; None outside a git checkout (an installed package)."""
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{' + changes' if dirty else ''}" if head else None


def provenance() -> dict[str, Any]:
    """``{"commit", "date", "cpu", "cores"}`` of a measurement made now (commit None
    outside a git checkout)."""
    return {
        "commit": git_commit(),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }


def measured_line(p: dict[str, Any]) -> str:
    """One line naming the commit, date and CPU of :func:`provenance`'s dict ``p``."""
    commit = p.get("commit") or "unknown (not a git checkout)"
    cores = f" ({p['cores']} cores)" if p.get("cores") else ""
    cpu = f"on CPU {p['cpu']}{cores}" if p.get("cpu") else "CPU not recorded"
    sep = ", " if p.get("cpu") else "; "
    return f"Measured at commit {commit}, date {p.get('date') or 'unknown'}{sep}{cpu}."
