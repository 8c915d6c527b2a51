"""Smoke run of benchmarks/bench_generated_linear.py (run by the test command so it
never rots): every layer x mode x kernel variant on tiny sizes, and the report. It
measures nothing."""

from __future__ import annotations

import json
import math

import solid_ext
from benchmarks import bench_generated_linear as bench


def test_every_case_and_the_report(tmp_path):
    out = tmp_path / "gl"
    argv = ["--tiny", "--rounds", "1", "--reps", "1", "--no-compile", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    got = {(r["layer"], r["B"], r["mode"], r["isa"]) for r in rows}
    want = {
        (layer, size[0], mode, isa)
        for layer in bench.LAYERS
        for size in bench.TINY
        for mode in bench.MODES
        for isa in solid_ext.cpu_isas()
    }
    assert got == want
    for r in rows:
        assert r["fused_ms"] > 0 and math.isfinite(r["fused_vs_generate_apply"])
        assert r["compile_ms"] is None and r["floor_ms"] > 0
    assert "| SOLID | 6 | 2 | 5x9, 3 | fwdbwd |" in out.with_suffix(".md").read_text()


def test_multiply_adds_count_generation_and_application():
    # DUET: B (N_in N_out C + N_out C) to generate, B L N_in N_out to apply; SOLID twice.
    assert bench.multiply_adds(2, 3, 4, 5, 6, "DUET") == 2 * (4 * 5 * 6 + 5 * 6) + 2 * 3 * 4 * 5
    assert bench.multiply_adds(2, 3, 4, 5, 6, "SOLID") == 2 * bench.multiply_adds(
        2, 3, 4, 5, 6, "DUET"
    )
