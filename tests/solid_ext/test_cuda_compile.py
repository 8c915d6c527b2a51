"""The CUDA kernels compile for sm_80 and sm_90 with warnings as errors and no spills."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_cuda", ROOT / "tools" / "check_cuda.py")
check_cuda = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_cuda)


@pytest.mark.skipif(
    check_cuda.find_nvcc() is None, reason="nvcc not found (PATH or /usr/local/cuda*/bin)"
)
def test_cuda_kernels_compile_sm80_sm90(tmp_path):
    rc = check_cuda.main(["--arch", "sm_80", "--arch", "sm_90", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "ptxas.json").read_text())
    assert rc == 0, "\n".join(report["failures"])
    kernels = {(r["arch"], r["kernel"].split("<")[0]) for r in report["kernels"]}
    for arch in ("sm_80", "sm_90"):
        for name in (
            "dl_fwd_kernel",
            "dl_dw_kernel",
            "dl_dx_kernel",
            "cq_fwd_kernel",
            "cq_bwd_kernel",
        ):
            assert (arch, name) in kernels
    assert all(r["spill_stores"] == 0 and r["spill_loads"] == 0 for r in report["kernels"])


def test_ptxas_parser():
    log = (
        "ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z3fooPf\n"
        "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 512 bytes smem\n"
    )
    (row,) = check_cuda.parse_ptxas(log, "sm_90", "x.cu")
    assert row["registers"] == 40 and row["static_smem"] == 512
    assert (row["stack"], row["spill_stores"], row["spill_loads"]) == (8, 4, 12)


@pytest.mark.skipif(
    check_cuda.find_nvcc() is None, reason="nvcc not found (PATH or /usr/local/cuda*/bin)"
)
def test_aten_binding_compiles_against_torch_headers():
    """ops_cuda.cu (the CUDA dispatch registration and launchers) type-checks against the
    installed torch's headers for sm_90 with no warning (it cannot link here: the CPU
    torch wheel has no CUDA libraries)."""
    res = check_cuda.compile_binding(check_cuda.find_nvcc(), "sm_90")
    assert res["ok"], res["log"][-4000:]
    warnings = [ln for ln in res["log"].splitlines() if "warning" in ln.lower()]
    assert not warnings, "\n".join(warnings[:10])
