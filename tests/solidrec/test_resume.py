"""A real kill: SIGKILL a training subprocess mid-run, resume, get identical metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from solidrec.testing import make_tiny_dataset


def _cmd(data: Path, out: Path, resume: bool = False) -> list[str]:
    cmd = [
        sys.executable, "-m", "solidrec", "train", "--data", str(data), "--out", str(out),
        "--backbone", "sasrec", "--generator", "duet", "--solid", "full", "--epochs", "3",
        "--patience", "3", "--threads", "1", "--no-progress",
        "--set", "batch_size=32", "ckpt_every_steps=1",
    ]  # fmt: skip
    return cmd + (["--resume"] if resume else [])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    ref = tmp_path / "ref"
    subprocess.run(_cmd(data, ref), check=True, env=_env(), capture_output=True)
    expected = json.loads((ref / "metrics.json").read_text())

    run = tmp_path / "run"
    log = run / "log.csv"
    kills = 0
    # Kill twice: once in stage 1 (after its first epoch is logged) and once later (after
    # at least 4 logged epochs, i.e. in stage 2); each time resume from last.pt.
    for wait_rows in (1, 4):
        proc = subprocess.Popen(
            _cmd(data, run, resume=kills > 0), env=_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            rows = len(log.read_text().splitlines()) - 1 if log.exists() else 0
            if rows >= wait_rows:
                time.sleep(0.3)  # land somewhere inside the next epoch
                break
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        assert not (run / "metrics.json").exists() or kills == 0
    assert kills >= 1, "the run finished before it could be killed"
    subprocess.run(_cmd(data, run, resume=True), check=True, env=_env(), capture_output=True)
    assert json.loads((run / "metrics.json").read_text()) == expected
