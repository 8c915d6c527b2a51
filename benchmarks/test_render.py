"""The report renderer on hand-made rows: tables, ratios and target verdicts."""

from __future__ import annotations

from .common import Ceilings
from .run import render

CEIL = Ceilings(200.0, 50.0, 150.0, 2, {"avx2": 400.0, "baseline": 100.0})
DL = {"B": 1024, "L": 1, "N_in": 32, "N_out": 64}


def _row(op, provider, mode, ms, size, alloc="default", flops=1e6, bytes_=1e6, **extra):
    return {
        "op": op,
        "provider": provider,
        "mode": mode,
        "median_ms": ms,
        "size": size,
        "allocator": alloc,
        "flops": flops,
        "bytes": bytes_,
        **extra,
    }


def test_render_ratios_and_targets():
    ceils = {2: CEIL, 1: Ceilings(100.0, 40.0, 90.0, 1, {"avx2": 100.0, "baseline": 50.0})}
    rows = []
    for t, scale in ((2, 1.0), (1, 2.0)):
        common = dict(threads=t, peak_mib=16.5)
        rows += [
            _row("dynamic_linear", "fused[avx2]", "fwdbwd", 1.0 * scale, DL, isa="avx2", **common),
            _row("dynamic_linear", "eager", "fwdbwd", 6.0 * scale, DL, threads=t, peak_mib=28.75),
            _row("dynamic_linear", "compile", "fwdbwd", 0.5 * scale, DL, threads=t),
            _row("dynamic_linear", "fused[baseline]", "fwdbwd", 7.0 * scale, DL, isa="baseline",
                 threads=t),
        ]  # fmt: skip
    cq = {"M": 10240, "K": 1024, "D": 32}
    flops = 2 * 10240 * 1024 * 32
    for prov, ms in (("fused[avx2]", 8.0), ("eager", 20.0), ("faiss", 10.0)):
        isa = "avx2" if "avx2" in prov else None
        rows.append(_row("codebook_quantize", prov, "fwd", ms, cq, flops=flops, isa=isa, threads=2))
    for model, ms in (("DUET", 40.0), ("SOLID(DUET) stage 2", 48.0)):
        for backend, scale in (("cpu", 1.0), ("reference", 1.2)):
            common = dict(model=model, backend=backend, steps_per_epoch=167, threads=2)
            size = {"data": "scientific", "batch": 1024}
            rows.append(
                _row(
                    "e2e train step",
                    f"{model} / {backend}",
                    "fwdbwd",
                    ms * scale,
                    size,
                    peak_mib=100.0,
                    **common,
                )
            )
            rows.append(_row("e2e test batch", f"{model} / {backend}", "fwd", 9.0, size, **common))
    md = render(rows, ceils, "quick", (0.1, 0.2), "CPU: test")
    # per variant and thread count: 6x eager met, slower than torch.compile missed
    assert "| [avx2, 2t] dynamic_linear fwd+bwd L=1 (default): >= 3x eager | 6.00x | met |" in md
    tag = "| [avx2, 1t] dynamic_linear fwd+bwd L=1 (default)"
    assert f"{tag}: faster than torch.compile | 2.000 vs 1.000" in md
    # baseline slower than eager is named
    assert "| [baseline, 2t] never slower than eager | slower in: dynamic_linear" in md
    # the FMA floor uses the variant's own peak: 0.671 GFLOP at 400 GFLOP/s = 1.678 ms
    assert "fwd within 1.3x of the FMA-peak floor (1.678 ms) | 4.77x | MISSED |" in md
    assert "fwd faster than faiss | 8.000 vs 10.000 ms | met |" in md
    # variant table: x eager, x compile, x faiss and both floors
    assert (
        "### avx2" in md and "| codebook_quantize | M=10240 K=1024 D=32 | fwd | 2 | 8.000 |" in md
    )
    # ... and at the sgemm rate (200 GFLOP/s): 3.355 ms
    assert "| 2.50x | - | 1.25x | 4.77x | 2.38x |" in md
    assert "| 16.50 |" in md and "| 28.75 |" in md
    # e2e: 48/40 = 1.20x DUET, reference/fused = 1.20x, s/epoch = 48 ms x 167.
    assert "| SOLID(DUET) stage 2 | fused | 48.00 | 8.02 | 1.20x | 1.20x | 9.00 | 100.0 |" in md
    assert "stage 2 step, fused ops faster than reference ops | 1.20x | met |" in md
