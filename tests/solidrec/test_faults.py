"""Fault injection: crafted and corrupted checkpoints, concurrent runs, kills at every
write step, disk full, read-only output, stale temporaries, resumes with another config.

docs/RELIABILITY.md states what these promise; each test failed on main fc7277d.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from solidrec.cli import main as cli_main
from solidrec.config import RunConfig
from solidrec.data.io import OutputError, atomic_write, clean_stale_temps
from solidrec.runs.checkpoint import load_latest, previous_path
from solidrec.testing import (
    KILL_AT_REPLACE,
    make_tiny_dataset,
    tiny_run_args,
    tiny_run_config,
)
from solidrec.train import (
    CheckpointError,
    RunLock,
    RunLockedError,
    TrainingDivergedError,
    load_checkpoint,
    save_checkpoint,
    train,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def reference(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Metrics of an uninterrupted run (the config of :func:`_cfg`)."""
    return train(_cfg(tiny, tmp_path_factory.mktemp("ref") / "run"))


def _cfg(data: Path, out: Path, **train_kw) -> RunConfig:
    return tiny_run_config(data, out, **train_kw)


_train_args = tiny_run_args


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(REPO)])
    return env


# -- 1. a checkpoint cannot run code ----------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what an attacker's file would hold
        return (os.system, (f"touch {self.marker}",))


def _framed(body: bytes) -> bytes:
    import hashlib

    meta = {"format": 2, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    return b"SOLIDREC-CKPT\n" + json.dumps(meta).encode() + b"\n" + body


def test_crafted_pickle_never_runs(tiny: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    import io

    buf = io.BytesIO()
    torch.save({"magic": "solidrec-checkpoint", "version": 1, "x": _Payload(marker)}, buf)
    bare, framed = tmp_path / "bare.pt", tmp_path / "framed.pt"
    bare.write_bytes(buf.getvalue())  # format 1 (plain torch.save)
    framed.write_bytes(_framed(buf.getvalue()))  # format 2 with a valid checksum
    for path in (bare, framed):
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(path)
    # Through the CLI: --resume and evaluate on a run whose checkpoints were replaced.
    run = tmp_path / "run"
    train(_cfg(tiny, run))
    for name in ("last.pt", "last.prev.pt", "best_stage1.pt", "best_stage2.pt"):
        (run / "checkpoints" / name).write_bytes(framed.read_bytes())
    assert cli_main(["evaluate", str(run)]) != 0
    assert cli_main([*_train_args(tiny, run), "--resume"]) == 2
    assert not marker.exists()


# -- 2. corruption is detected and the previous checkpoint is used -----------------------
def test_flipped_byte_detected_and_previous_checkpoint_used(
    tiny: Path, tmp_path: Path, reference: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.arange(1000.0)}})
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the tensor data: torch.load alone would accept it
    good.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(good)

    # A run killed mid-way whose newest checkpoint then rots: resume uses the previous one
    # and ends with the metrics of an uninterrupted run.
    run = tmp_path / "run"
    assert _kill_at_replace(tiny, run, n=7) == 137  # after the second last.pt
    last = run / "checkpoints" / "last.pt"
    assert last.exists() and previous_path(last).exists()
    raw = bytearray(last.read_bytes())
    raw[-100] ^= 0xFF
    last.write_bytes(bytes(raw))
    # Resume, and die during its next checkpoint write: the good previous checkpoint
    # must survive (the corrupt last.pt is set aside, never rotated over it).
    assert _kill_at_replace(tiny, run, n=3, resume=True) == 137
    assert (run / "checkpoints" / "last.bad.pt").exists()
    capsys.readouterr()
    got = train(_cfg(tiny, run), resume=True)
    assert got == reference
    # Both bad: a clear error naming both files, never a silent restart.
    for p in (last, previous_path(last)):
        p.write_bytes(b"SOLIDREC-CKPT\n{}\n")
    with pytest.raises(CheckpointError, match="no good checkpoint"):
        load_latest(last)


# -- 3. kills at every write step ---------------------------------------------------------
def _kill_at_replace(data: Path, run: Path, n: int, resume: bool = False) -> int:
    args = _train_args(data, run) + (["--resume"] if resume else [])
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_REPLACE, str(n), *args], env=_env(), capture_output=True
    )
    return proc.returncode


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_kill_at_each_write_step_then_resume(
    tiny: Path, tmp_path: Path, reference: dict, n: int
) -> None:
    """os.replace is the commit point of every write (config, checkpoint rotation,
    checkpoint, log, metrics); dying just before the n-th one, then resuming, must end
    exactly as an uninterrupted run and leave no temporaries."""
    run = tmp_path / "run"
    assert _kill_at_replace(tiny, run, n) == 137
    got = train(_cfg(tiny, run), resume=True)
    assert got == reference
    leftovers = [p.name for p in run.rglob(".*tmp*")]
    assert leftovers == []


# -- 4. one writer per run directory ---------------------------------------------------
def test_concurrent_run_refused_and_lock_dies_with_its_owner(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from solidrec.train import RunLock; "
         f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            train(_cfg(tiny, run))
        assert not (run / "checkpoints").exists()  # nothing written by the refused run
        assert cli_main([*_train_args(tiny, run), "--resume"]) == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    train(_cfg(tiny, run), resume=True)  # the kernel released the dead owner's lock
    with RunLock(run), pytest.raises(RunLockedError):
        RunLock(run).acquire()


# -- 5. resume checks the whole config ---------------------------------------------------
def test_resume_refuses_another_config_and_keeps_config_yaml(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _kill_at_replace(tiny, run, n=7) == 137  # an unfinished run (max_epochs 1)
    before = (run / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"train.lr: 0.001 \(run\) vs 0.5 \(now\)"):
        train(_cfg(tiny, run, lr=0.5, batch_size=64), resume=True)
    with pytest.raises(CheckpointError, match="batch_size"):
        train(_cfg(tiny, run, batch_size=32), resume=True)
    # A schedule change needs the flag; threads and progress are free.
    with pytest.raises(CheckpointError, match="--allow-schedule-change"):
        train(_cfg(tiny, run, max_epochs=2), resume=True)
    assert (run / "config.yaml").read_text() == before
    train(_cfg(tiny, run, max_epochs=2, threads=2), resume=True, allow_schedule_change=True)
    assert "max_epochs: 2" in (run / "config.yaml").read_text()
    assert "threads: 2" in (run / "config.yaml").read_text()
    # A finished run resumed again returns its metrics and rewrites nothing.
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert train(_cfg(tiny, run, max_epochs=2, threads=2), resume=True) == metrics
    assert after == {
        p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"
    }
    # Another prepared dataset under the same path is refused by its fingerprint.
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    ck["data_fingerprint"] = "0" * 64
    save_checkpoint(run / "checkpoints" / "last.pt", ck)
    if json.loads((tiny / "manifest.json").read_text()).get("fingerprint"):
        with pytest.raises(CheckpointError, match="not the prepared dataset"):
            train(_cfg(tiny, run, max_epochs=2), resume=True)


# -- 6. non-finite loss stops the run ----------------------------------------------------
def test_nonfinite_loss_stops_with_a_clear_message(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingDivergedError, match=r"loss is not finite.*train.lr=1000000.0"):
        train(_cfg(tiny, tmp_path / "a", lr=1e6))
    assert not (tmp_path / "a" / "metrics.json").exists()
    rc = cli_main([*_train_args(tiny, tmp_path / "b"), "--set", "lr=1e6"])
    assert rc == 1
    # Patience: skipped steps do not touch the weights, then the run stops all the same.
    with pytest.raises(TrainingDivergedError, match="3 step"):
        train(_cfg(tiny, tmp_path / "c", lr=1e6, nonfinite_patience=2))


# -- 7. OS failures -------------------------------------------------------------------------
def test_write_failure_is_one_clear_message_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    atomic_write(target, "old\n")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"cannot write .*metrics.json: No space left.*is kept"):
        atomic_write(target, "new\n")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_stale_temporaries_of_dead_writers_are_removed(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    dead = 2**22 + 12345  # above pid_max's default: no live process has it
    stale = run / "checkpoints" / f".last.pt.tmp-{dead}-abc"
    stale.write_bytes(b"x" * 1000)
    live = run / "checkpoints" / f".last.pt.tmp-{os.getpid()}-abc"
    live.write_bytes(b"x")
    legacy = [run / "checkpoints" / f".last.pt.tmp.{dead}", run / ".log.csv.tmp"]
    for p in legacy:
        p.write_bytes(b"x")  # names of older versions' temporaries
    train(_cfg(tiny, run))
    assert not stale.exists() and live.exists()
    assert not any(p.exists() for p in legacy)


def _unshare_ok() -> str:
    if shutil.which("unshare") is None:
        return "no unshare(1) to mount a private tmpfs"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    )
    return "" if probe.returncode == 0 else "user namespaces are disabled on this machine"


def _in_private_mount(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root of a private user and mount namespace, where it may
    mount a tmpfs of any size or flags without touching the host."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", textwrap.dedent(script)],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.skipif(bool(_unshare_ok()), reason=_unshare_ok() or "n/a")
def test_disk_full_on_a_tmpfs_then_resume(tiny: Path, tmp_path: Path, reference: dict) -> None:
    """A 1.2 MB tmpfs fills up mid-run (a checkpoint is ~0.4 MB): one clear message, exit
    1, no temporaries; with space again, --resume ends as an uninterrupted run.
    (test_write_failure_is_one_clear_message_and_leaves_no_temporary covers the same
    code where user namespaces are unavailable.)"""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = _in_private_mount(
        f"""
        mount -t tmpfs -o size=1200k tmpfs {mnt} || exit 99
        {sys.executable} -m solidrec {" ".join(_train_args(tiny, mnt / "run"))}
        echo "rc=$?"
        ls -A {mnt / "run"} {mnt / "run" / "checkpoints"}
        cp -a {mnt / "run"} {tmp_path / "copy"}
        """
    )
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert ".tmp-" not in proc.stdout  # ls shows no temporaries
    got = train(_cfg(tiny, tmp_path / "copy"), resume=True)
    assert got == reference


@pytest.mark.skipif(bool(_unshare_ok()), reason=_unshare_ok() or "n/a")
def test_prepare_disk_full_on_a_tmpfs(tmp_path: Path) -> None:
    """prepare into a 64 KB tmpfs: exit 1, one line naming the output, no temporaries."""
    from solidrec.data.synth import SynthConfig, generate, write_generic

    inter, items = write_generic(generate(SynthConfig(users=300, items=200)), tmp_path, "csv")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = _in_private_mount(
        f"""
        mount -t tmpfs -o size=64k tmpfs {mnt} || exit 99
        {sys.executable} -m solidrec prepare --format generic --input {inter} \
            --items {items} --out {mnt / "data"}
        echo "rc=$?"
        ls -A {mnt}
        """
    )
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert str(mnt / "data") in proc.stderr
    assert proc.stdout.split("rc=1", 1)[1].strip() == ""  # nothing left behind


def test_read_only_output_is_a_clear_error(tiny: Path, tmp_path: Path) -> None:
    """A read-only file system (private tmpfs mounted ro) or, without user namespaces,
    a directory without write permission: exit 1 and one line naming the path."""
    ro = tmp_path / "ro"
    ro.mkdir()
    args = " ".join(_train_args(tiny, ro / "run"))
    if not _unshare_ok():
        proc = _in_private_mount(
            f"mount -t tmpfs -o ro,size=64k tmpfs {ro} || exit 99\n"
            f"{sys.executable} -m solidrec {args}"
        )
    else:
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):
            ro.chmod(0o755)
            pytest.skip(f"root without user namespaces ({_unshare_ok()}): nothing is read-only")
        cmd = [sys.executable, "-m", "solidrec", *args.split()]
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    ro.chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and str(ro / "run") in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- 8. the atomic directory swap -----------------------------------------------------------
_SWAPPER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import solidrec.data.io as io
    from solidrec.testing import die_before_replace
    point, out = sys.argv[1], Path(sys.argv[2])
    real_exchange = io._exchange
    if point == "before-exchange":
        io._exchange = lambda a, b: os._exit(137)
    elif point == "after-exchange":
        def exchange(a, b):
            assert real_exchange(a, b)
            os._exit(137)
        io._exchange = exchange
    else:  # "rename-N": the two-renames fallback, killed before its N-th rename
        io._exchange = lambda a, b: False
        die_before_replace(int(point.split("-")[1]))
    with io.atomic_directory(out) as tmp:
        (tmp / "data.txt").write_text("new")
    """
)


@pytest.mark.parametrize("point", ["before-exchange", "after-exchange", "rename-1", "rename-2"])
def test_directory_swap_keeps_old_or_new_at_every_kill(tmp_path: Path, point: str) -> None:
    """Killed at each step of the swap (renameat2 exchange, and the two-renames
    fallback): the dataset is the old or the new one, never missing, once the next
    start has cleaned up."""
    from solidrec.data.io import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    if "exchange" in point and not _exchange(a, b):
        pytest.skip("this file system cannot renameat2(RENAME_EXCHANGE); rename-* cover it")
    out = tmp_path / "data" / "dataset"
    out.mkdir(parents=True)
    (out / "data.txt").write_text("old")
    proc = subprocess.run([sys.executable, "-c", _SWAPPER, point, str(out)], env=_env())
    assert proc.returncode == 137  # the kill really happened at that point
    if point == "rename-2":
        assert not out.exists()  # the window the repair exists for
    clean_stale_temps(out.parent, "dataset")  # what the next prepare does first
    assert (out / "data.txt").read_text() in ("old", "new")
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset"]


def test_prepared_files_follow_the_umask(tmp_path: Path) -> None:
    from solidrec.data.io import atomic_directory, write_json

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            write_json(tmp / "manifest.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out" / "manifest.json").stat().st_mode & 0o777 == 0o644
