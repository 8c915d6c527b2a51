"""The README's install, as a new user runs it: a fresh virtualenv with torch only, no dev
requirements, then synth -> prepare -> train -> evaluate -> recommend from the shell.

It also checks that an isolated build (plain ``pip install .``) stops at once with the
instruction, instead of a bare ``ModuleNotFoundError: torch``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The README's two install commands, verbatim (checked below). The test pins torch to
# the version already here: an unpinned install could fetch a multi-GB CUDA build.
README_TORCH = "pip install torch"
README_PACKAGE = "pip install --no-build-isolation ."
TORCH = f"torch=={torch.__version__.split('+')[0]}"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def _source_copy(dest: Path) -> Path:
    """The tracked files of this checkout (no build outputs, no .venv)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def test_readme_names_these_commands() -> None:
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Install") :].split("```")[1]
    assert README_TORCH in block and README_PACKAGE in block


@pytest.mark.slow
def test_clean_virtualenv_install_and_first_run(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to copy the tracked sources from")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_}{os.pathsep}{env.get('PATH', '')}"
    src = _source_copy(tmp_path / "src")
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, TORCH], tmp_path, env)

    # The isolated build: one clear instruction, before anything is compiled.
    proc = subprocess.run(
        [*pip[:-1], "-e", str(src)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "--no-build-isolation" in proc.stdout + proc.stderr
    assert "No module named 'torch'" not in proc.stdout + proc.stderr

    _run([*pip, "--no-build-isolation", str(src)], tmp_path, env)
    work = tmp_path / "work"
    work.mkdir()
    solidrec = [str(bin_ / "solidrec")]
    _run([*solidrec, "synth", "--out", "raw", "--users", "300", "--items", "250"], work, env)
    _run(
        [*solidrec, "prepare", "--format", "generic", "--input", "raw/interactions.csv",
         "--items", "raw/items.jsonl", "--out", "data"],
        work, env,
    )  # fmt: skip
    out = _run(
        [*solidrec, "train", "--data", "data", "--out", "run", "--generator", "duet",
         "--solid", "full", "--epochs", "1", "--max-steps-per-epoch", "4", "--threads", "1"],
        work, env,
    )  # fmt: skip
    trained = json.loads(out)
    evaluated = json.loads(_run([*solidrec, "evaluate", "run", "--device", "cpu"], work, env))
    assert evaluated["auc"] == pytest.approx(trained["auc"], abs=1e-12)
    first_item = (work / "raw" / "interactions.csv").read_text().splitlines()[1].split(",")[1]
    recs = _run([*solidrec, "recommend", "run", "--history", first_item, "--k", "3"], work, env)
    assert len(recs.splitlines()) == 3
    # The kernels were built and load in that environment.
    backends = _run(
        [str(py), "-c", "import solid_ext; print(solid_ext.available_backends())"], work, env
    )
    assert re.search(r"'cpu'", backends), backends
