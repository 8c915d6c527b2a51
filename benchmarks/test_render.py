"""The report renderer on hand-made rows: tables, ratios and target verdicts."""

from __future__ import annotations

from .common import Ceilings
from .run import render

CEIL = Ceilings(sgemm_gflops=200.0, dram_gbs=50.0, cache_gbs=150.0, threads=2)
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
    rows = [
        _row("dynamic_linear", "fused", "fwdbwd", 1.0, DL, peak_mib=16.5),
        _row("dynamic_linear", "eager", "fwdbwd", 6.0, DL, peak_mib=28.75),
        _row("dynamic_linear", "compile", "fwdbwd", 0.5, DL),
    ]
    for model, ms in (("DUET", 40.0), ("SOLID(DUET) stage 2", 48.0)):
        for backend, scale in (("cpu", 1.0), ("reference", 1.2)):
            common = dict(model=model, backend=backend, steps_per_epoch=167)
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
    md = render(rows, CEIL, "quick", (0.1, 0.2))
    # 6x eager: met; slower than torch.compile: missed; the peak column is rendered.
    assert "| dynamic_linear fwd+bwd L=1 (default): >= 5x eager | 6.00x | met |" in md
    assert "faster than torch.compile | 1.000 vs 0.500 ms | MISSED |" in md
    assert "| 16.50 |" in md and "| 28.75 |" in md
    # e2e: 48/40 = 1.20x DUET (missed), reference/fused = 1.20x (missed), s/epoch = 48 ms x 167.
    assert "| SOLID(DUET) stage 2 | fused | 48.00 | 8.02 | 1.20x | 1.20x | 9.00 | 100.0 |" in md
    assert "stage 2 epoch <= 1.10x DUET (fused ops) | 1.20x | MISSED |" in md
    assert "fused >= 1.5x faster than reference | 1.20x | MISSED |" in md
