r"""generated_linear against generating the weights then applying them.

Not a test (a smoke run of it is: benchmarks/test_bench_generated_linear.py). One
dynamic layer of SOLID's head, as :class:`solid_ext.DynamicLinear` computes it from
condition vectors with full-rank (DUET) generators:

- ``DUET``: the trunk only, ``y = x @ (reshape(G c) + W^T + h) + b(c)``;
- ``SOLID``: trunk plus the clipped branch, ``+ x @ clamp(reshape(G' c') + h', ±tau)
  + clamp(b'(c'), ±tau)``.

Providers, each timed forward (``fwd``) and forward + backward (``fwdbwd``):

- ``generate+apply``: the weights made by one GEMM (B, C) x (C, N_in*N_out), then the
  fused ``dynamic_linear`` op, kernel variant ``[isa]`` (the layer's path until now);
- ``fused``: the ``generated_linear`` op, variant ``[isa]``: weights made tile by tile
  in registers and used at once, never written;
- ``eager``: the same formula in PyTorch ops (the reference);
- ``compile``: ``torch.compile`` of ``eager`` (inductor, CPU).

Cases run in interleaved rounds (every provider once per round); each ratio is the
median over rounds of the two providers' times in the same round. The floor is the
multiply-adds (generation + application, forward; twice that again backward) at the
variant's own FMA peak measured in the same run.

    python -m benchmarks.bench_generated_linear --threads 1 \
        --out benchmarks/results/generated_linear
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import solid_ext
from solid_ext import ops
from solid_ext.reference import generated_linear_ref

from .bench_train import interleaved, paired
from .common import fma_peaks

TAU = 0.01
# (B, L, N_in, N_out, C): the paper's head (32 -> 32, condition 32) at the BCE batch
# (204 histories), the softmax batch (1024) and larger; a per-position layer (L = 10);
# a wider layer.
SIZES = [
    (204, 1, 32, 32, 32),
    (1024, 1, 32, 32, 32),
    (4096, 1, 32, 32, 32),
    (1024, 10, 32, 32, 32),
    (1024, 1, 64, 64, 32),
]
TINY = [(5, 1, 3, 7, 4), (6, 2, 5, 9, 3)]
LAYERS = ("DUET", "SOLID")
MODES = ("fwd", "fwdbwd")


def layer_inputs(b: int, l: int, n_in: int, n_out: int, c: int, layer: str) -> dict:
    """The tensors of one layer: x, trunk (c, G, base, bias map) and, for SOLID, the
    branch's; generator outputs straddle ±tau so the clip matters."""
    g = torch.Generator().manual_seed(0)

    def draw(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).requires_grad_(True)

    s = TAU / c**0.5
    t = {
        "x": draw(b, l, n_in),
        "c": draw(b, c),
        "G": draw(n_in * n_out, c, scale=s),
        "base": draw(n_in, n_out, scale=0.1),
        "Gb": draw(n_out, c, scale=s),
        "hb": draw(n_out, scale=0.1),
    }
    if layer == "SOLID":
        t.update(c2=draw(b, c), G2=draw(n_in * n_out, c, scale=s), h2=draw(n_in, n_out, scale=TAU))
        t.update(Gb2=draw(n_out, c, scale=s), hb2=draw(n_out, scale=TAU))
    return t


def _bias(t: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = F.linear(t["c"], t["Gb"], t["hb"])
    branch = F.linear(t["c2"], t["Gb2"], t["hb2"]) if "c2" in t else None
    return bias, branch


def generate_apply(t: dict) -> torch.Tensor:
    """The weights generated (one addmm each), then ops.dynamic_linear."""
    b, (n_in, n_out) = t["x"].shape[0], t["base"].shape
    w = F.linear(t["c"], t["G"], t["base"].reshape(-1)).view(b, n_in, n_out)
    bias, bb = _bias(t)
    bw = None
    if "c2" in t:
        bw = F.linear(t["c2"], t["G2"], t["h2"].reshape(-1)).view(b, n_in, n_out)
    return ops.dynamic_linear(t["x"], w, bias, bw, bb, tau=TAU)


def fused(t: dict) -> torch.Tensor:
    """ops.generated_linear for the trunk and (clipped) for the branch."""
    bias, bb = _bias(t)
    y = ops.generated_linear(t["x"], t["c"], t["G"], t["base"]) + bias.unsqueeze(1)
    if "c2" in t:
        y = y + ops.generated_linear(t["x"], t["c2"], t["G2"], t["h2"], tau=TAU)
        y = y + bb.clamp(-TAU, TAU).unsqueeze(1)
    return y


def eager(t: dict) -> torch.Tensor:
    """The layer in PyTorch ops (the references)."""
    bias, bb = _bias(t)
    y = generated_linear_ref(t["x"], t["c"], t["G"], t["base"]) + bias.unsqueeze(1)
    if "c2" in t:
        y = y + generated_linear_ref(t["x"], t["c2"], t["G2"], t["h2"], tau=TAU)
        y = y + bb.clamp(-TAU, TAU).unsqueeze(1)
    return y


def _on(fn: Callable, backend: str, isa: str | None = None) -> Callable:
    def run(t: dict) -> torch.Tensor:
        with solid_ext.use_backend(backend):
            if isa is None:
                return fn(t)
            with solid_ext.use_cpu_isa(isa):
                return fn(t)

    return run


def providers(isas: list[str], compile_: bool) -> dict[str, Callable]:
    out = {}
    for isa in isas:
        out[f"generate+apply[{isa}]"] = _on(generate_apply, "cpu", isa)
        out[f"fused[{isa}]"] = _on(fused, "cpu", isa)
    out["eager"] = _on(eager, "reference")
    if compile_:
        out["compile"] = torch.compile(_on(eager, "reference"), dynamic=False)
    return out


def _call(fn: Callable, t: dict, mode: str) -> Callable[[], None]:
    leaves = [v for v in t.values() if v.requires_grad]

    def fwd() -> None:
        with torch.no_grad():
            fn(t)

    def fwdbwd() -> None:
        for v in leaves:
            v.grad = None
        fn(t).sum().backward()

    return fwd if mode == "fwd" else fwdbwd


def multiply_adds(b: int, l: int, n_in: int, n_out: int, c: int, layer: str) -> int:
    """Forward multiply-adds: generation (weights and bias) and application, per
    generator (one for DUET, two for SOLID)."""
    per = b * (n_in * n_out * c + n_out * c) + b * l * n_in * n_out
    return per * (2 if layer == "SOLID" else 1)


def run(sizes, threads: list[int], rounds: int, reps: int, compile_: bool) -> list[dict]:
    isas = solid_ext.cpu_isas()
    if not isas:
        raise SystemExit("bench_generated_linear: the compiled CPU kernels are not built")
    rows = []
    for nt in threads:
        torch.set_num_threads(nt)
        peaks = fma_peaks(reps=3)
        for size in sizes:
            for layer in LAYERS:
                t = layer_inputs(*size, layer)
                with torch.no_grad():  # the fused op computes what generate+apply does
                    ref = generate_apply(t)
                    got = _on(fused, "cpu")(t)
                    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
                for mode in MODES:
                    fns = {k: _call(f, t, mode) for k, f in providers(isas, compile_).items()}
                    times = interleaved(fns, rounds, reps)
                    rows += _rows(size, layer, mode, nt, times, isas, peaks)
    return rows


def _rows(size, layer, mode, nt, times, isas, peaks) -> list[dict]:
    b, l, n_in, n_out, c = size
    flops = 2 * multiply_adds(*size, layer) * (1 if mode == "fwd" else 3)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    out = []
    for isa in isas:
        gen, fus = f"generate+apply[{isa}]", f"fused[{isa}]"
        peak = peaks.get(isa)
        out.append(
            {
                "layer": layer,
                "B": b,
                "L": l,
                "N_in": n_in,
                "N_out": n_out,
                "C": c,
                "mode": mode,
                "threads": nt,
                "isa": isa,
                "generate_apply_ms": ms[gen],
                "fused_ms": ms[fus],
                "fused_vs_generate_apply": paired(times, fus, gen),
                "fused_vs_eager": paired(times, fus, "eager"),
                "eager_ms": ms["eager"],
                "compile_ms": ms.get("compile"),
                "floor_ms": flops / (peak * 1e9) * 1e3 if peak else None,
            }
        )
    return out


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        "## generated_linear: one generated layer, fused vs generate-then-apply",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_generated_linear` (do not edit).",
        "",
        "Median ms per call; `fused / gen+apply` and `fused / eager` are paired within "
        "rounds (below 1: the fused op is faster). Floor: the multiply-adds at the "
        "variant's FMA peak measured in the same run. `DynamicLinear` uses the fused op "
        'by default (`fused_generation="auto"`) only where these rows show it faster: '
        "`solid_ext.nn.FUSED_*`.",
        "",
    ]
    for nt in sorted({r["threads"] for r in rows}):
        lines += [
            f"### {nt} thread(s)",
            "",
            "| layer | B | L | N_in x N_out, C | mode | variant | gen+apply | fused "
            "| fused / gen+apply | eager | compile | fused / eager | floor |",
            "|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in rows if r["threads"] == nt):
            comp = "–" if r["compile_ms"] is None else f"{r['compile_ms']:.3f}"
            floor = "–" if r["floor_ms"] is None else f"{r['floor_ms']:.3f}"
            lines.append(
                f"| {r['layer']} | {r['B']} | {r['L']} | {r['N_in']}x{r['N_out']}, {r['C']} "
                f"| {r['mode']} | {r['isa']} | {r['generate_apply_ms']:.3f} "
                f"| {r['fused_ms']:.3f} | **{r['fused_vs_generate_apply']:.2f}** "
                f"| {r['eager_ms']:.3f} | {comp} | {r['fused_vs_eager']:.2f} | {floor} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .run import machine_line

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reps", type=int, default=5, help="calls per round and provider")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (smoke)")
    ap.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    ap.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    sizes = TINY if args.tiny else SIZES
    rows = run(sizes, args.threads, args.rounds, args.reps, not args.no_compile)
    md = markdown(rows, machine_line())
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
