"""``python -m solid_ext.selfcheck``: its CPU path here, its verdicts and exit codes.

The CUDA path (cuda/triton on CUDA tensors) cannot run without a GPU; it shares
``check`` and ``timings`` with what runs here, and the Triton numerics are covered by
test_triton.py in the interpreter.
"""

from __future__ import annotations

import solid_ext
from solid_ext import selfcheck


def test_cpu_run_passes_and_is_decisive(capsys):
    rc = selfcheck.main(["--cpu-timing", "--reps", "1"])
    out = capsys.readouterr().out
    isas = solid_ext.cpu_isas()
    assert f"CPU kernels: {solid_ext.cpu_isa()} (variants this CPU runs: {', '.join(isas)}" in out
    for isa in isas:  # every CPU kernel variant is checked
        assert f"{f'cpu:{isa}':<12} dynamic_linear     float32   PASS" in out
        assert f"{f'cpu:{isa}':<12} generated_linear   float32   PASS" in out
        assert f"{f'cpu:{isa}':<12} codebook_quantize  float32   PASS" in out
    assert "NO CUDA DEVICE" in out
    n = 3 + 3 * len(isas)  # every op on the reference and on each variant
    assert f"SUMMARY: correctness {n}/{n} PASS; timing " in out
    # Timing on a shared 2-core machine may rank either way: both verdicts are decisive.
    if rc == 0:
        assert "VERDICT: OK" in out
    else:
        assert rc == 3 and "VERDICT: CORRECT BUT SLOWER" in out, out


def test_wrong_kernel_is_reported_broken(capsys, monkeypatch):
    real = selfcheck._dl
    monkeypatch.setattr(selfcheck, "_dl", lambda *a: real(*a) * 1.01)
    rc = selfcheck.main(["--no-timing"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "cpu:baseline dynamic_linear     float32   FAIL" in out
    assert "VERDICT: BROKEN" in out


def test_timing_rows_carry_a_verdict():
    rows = selfcheck.timings(["cpu"], "cpu", reps=1, small=True)
    assert [r["backend"] for r in rows] == ["cpu", "cpu", "cpu"]
    for r in rows:
        assert r["verdict"] == ("FASTER" if r["us"] < r["eager_us"] else "SLOWER")
