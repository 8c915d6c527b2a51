"""Host emulation of the CUDA kernels' per-thread code (no GPU needed).

Builds tests/cuda_host/host_emulation.cpp with g++ against csrc/cuda/*.cuh (the same
__host__ __device__ thread bodies the kernels run), replays every launch grid on odd
shapes and compares all outputs with naive loops.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "tests" / "cuda_host" / "host_emulation.cpp"


@pytest.mark.skipif(
    shutil.which("g++") is None, reason="g++ not found: cannot build the host emulation"
)
def test_cuda_kernels_host_emulation(tmp_path):
    exe = tmp_path / "host_emulation"
    build = subprocess.run(
        ["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror",
         f"-I{ROOT / 'csrc' / 'cuda'}", str(SRC), "-o", str(exe)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ALL OK"), run.stdout[-4000:]
    # Both ops, both dtypes, every codebook register variant were exercised.
    for tag in ("dl<float>", "dl<double>", "cq<float>", "cq<double>"):
        assert tag in run.stdout
    for dmax in ("dmax=0", "dmax=32", "dmax=64", "dmax=128"):
        assert dmax in run.stdout
