"""Every Triton launch the ops make compiles to cubin for sm_80 and sm_90 without
register spills (no GPU needed: Triton's bundled ptxas does the last step). The
interpreter suite (test_triton.py) proves the numerics; this proves the same code
is accepted by the real compiler, which the interpreter does not check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_triton", ROOT / "tools" / "check_triton.py")
check_triton = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_triton)


def test_every_triton_launch_compiles_for_sm80_sm90_without_spills(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rc = check_triton.main(["--arch", "80", "--arch", "90", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "triton_ptxas.json").read_text())
    bad = [r for r in rows if not r["ok"]]
    assert rc == 0 and not bad, bad[:3]
    kernels = {(r["arch"], r["kernel"]) for r in rows}
    for arch in ("sm_80", "sm_90"):
        for name in ("_dl_fwd_kernel", "_dl_bwd_kernel", "_dl_bwd_dx_kernel",
                     "_gl_fwd_kernel", "_gl_bwd_gen_kernel", "_gl_bwd_cond_kernel",
                     "_cq_fwd_kernel", "_cq_bwd_kernel", "_sru_kernel", "_isx_fwd_kernel",
                     "_isx_bwd_dh_kernel", "_isx_bwd_dt_kernel"):  # fmt: skip
            assert (arch, name) in kernels
    # Each dtype the ops accept was compiled.
    dtypes = {r["dtypes"] for r in rows}
    for t in ("*fp32", "*fp16", "*bf16", "*fp64"):
        assert any(t in d for d in dtypes), (t, dtypes)
