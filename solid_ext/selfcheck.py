"""``python -m solid_ext.selfcheck``: every usable backend vs the reference, and timings.

On a CUDA machine: checks forward and every gradient of both ops for each backend
(reference, cuda, triton) on CUDA tensors in float32 (and bf16 for triton/cuda vs a
float32 reference), then times forward+backward of each against the eager reference
at the paper's sizes, and prints one PASS/FAIL table. Without CUDA it checks what
runs on CPU (cpu kernels; triton only if TRITON_INTERPRET=1 was set before start)
at tiny sizes and says plainly that the GPU checks did not run.
``--cpu-timing`` also times the CPU kernels at tiny sizes (exercises the timing path).
Exit status: 0 every backend correct (and faster than eager where timed); 1 a backend
disagrees with the reference or fails to run; 3 correct but slower than eager somewhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch

from . import _backend, ops
from .reference import codebook_quantize_ref, dynamic_linear_ref, generated_linear_ref
from .testing import codebook_quantize_inputs, dynamic_linear_inputs, generated_linear_inputs

TAU = 0.01
Row = dict[str, object]


def _dl_args(B: int, L: int, I: int, O: int, dtype, device) -> list[torch.Tensor]:  # noqa: E741
    return dynamic_linear_inputs(B, L, I, O, dtype=dtype, device=device, tau=TAU, weight_scale=0.3)


def _gl_args(B: int, L: int, I: int, O: int, C: int, dtype, device) -> list[torch.Tensor]:  # noqa: E741
    return generated_linear_inputs(B, L, I, O, C, dtype=dtype, device=device, tau=TAU)


def _cq_args(M: int, K: int, D: int, dtype, device) -> list[torch.Tensor]:
    return list(codebook_quantize_inputs(M, K, D, dtype=dtype, device=device, seed=1))


def _grads(fn: Callable, args: list[torch.Tensor], seed: int = 2):
    args = [a.detach().clone().requires_grad_(True) for a in args]
    out = fn(*args)
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o.is_floating_point()]
    g = torch.Generator(device="cpu").manual_seed(seed)
    cot = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, args, cot, allow_unused=True)
    return [o.detach() for o in outs], [
        torch.zeros_like(a) if d is None else d for a, d in zip(args, grads, strict=True)
    ]


def _max_err(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    err = 0.0
    for a, b in zip(got, want, strict=True):
        err = max(err, ((a.double() - b.double()).abs() / (1 + b.double().abs())).max().item())
    return err


def _dl(x, w, b, bw, bb):
    return ops.dynamic_linear(x, w, b, bw, bb, TAU)


def _dl_ref(x, w, b, bw, bb):
    return dynamic_linear_ref(x, w, b, bw, bb, TAU)


def _gl(x, c, g, base):
    return ops.generated_linear(x, c, g, base, TAU)


def _gl_ref(x, c, g, base):
    return generated_linear_ref(x, c, g, base, TAU)


def _cq(z, c):
    q, _idx, sq = ops.codebook_quantize(z, c, True)
    return q, sq


def _cq_ref(z, c):
    q, _idx, sq = codebook_quantize_ref(z, c, True)
    return q, sq


def check(backend: str, device: str, dtype: torch.dtype, sizes: dict) -> list[Row]:
    """Forward + all grads of every op for one backend vs the float32/64 reference."""
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}.get(dtype, 5e-2)
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    rows = []
    cases = [
        ("dynamic_linear", _dl, _dl_ref, _dl_args(*sizes["dl"], dtype, device)),
        ("generated_linear", _gl, _gl_ref, _gl_args(*sizes["gl"], dtype, device)),
        ("codebook_quantize", _cq, _cq_ref, _cq_args(*sizes["cq"], dtype, device)),
    ]
    for name, fn, ref, args in cases:
        try:
            with _backend.use_backend(backend):
                outs, grads = _grads(fn, args)
            r_outs, r_grads = _grads(ref, [a.to(ref_dtype) for a in args])
            err = _max_err(outs + grads, r_outs + r_grads)
            ok = err <= tol
            note = f"max rel err {err:.2e} (tol {tol:g})"
        except Exception as exc:  # report, keep checking the rest
            ok, note = False, f"{type(exc).__name__}: {exc}"[:120]
        rows.append(
            {
                "backend": backend,
                "op": name,
                "dtype": str(dtype).split(".")[-1],
                "ok": ok,
                "note": note,
            }
        )
    return rows


def _time(fn: Callable, args: list[torch.Tensor], device: str, reps: int) -> float:
    args = [a.detach().clone().requires_grad_(True) for a in args]

    def step():
        out = fn(*args)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o.is_floating_point()]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps * 1e3
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps * 1e6


def timings(backends: list[str], device: str, reps: int, small: bool = False) -> list[Row]:
    """fwd+bwd time (us) per backend vs the eager reference at the paper's sizes (tiny
    sizes with ``small``, to exercise the path on a CPU). Each row carries a verdict:
    ``FASTER`` (beats eager), ``SLOWER`` or ``ERROR``."""
    if small:
        dl_sizes, cq_sizes = [(64, 10, 32, 64)], [(512, 64, 32)]
        gl_sizes = [(64, 1, 32, 32, 32)]
    else:
        dl_sizes = [(1024, 1, 32, 64), (1024, 10, 32, 64), (16384, 10, 32, 64)]
        gl_sizes = [(1024, 1, 32, 32, 32), (16384, 1, 32, 32, 32)]
        cq_sizes = [(10240, 256, 32), (163840, 1024, 64)]
    f32 = torch.float32
    problems = (
        [
            (f"dynamic_linear B={B} L={L} {I}x{O}", _dl, _dl_ref, _dl_args(B, L, I, O, f32, device))
            for B, L, I, O in dl_sizes  # noqa: E741
        ]
        + [
            (
                f"generated_linear B={B} L={L} {I}x{O} C={C}",
                _gl,
                _gl_ref,
                _gl_args(B, L, I, O, C, f32, device),
            )
            for B, L, I, O, C in gl_sizes  # noqa: E741
        ]
        + [
            (f"codebook_quantize M={M} K={K} D={D}", _cq, _cq_ref, _cq_args(M, K, D, f32, device))
            for M, K, D in cq_sizes
        ]
    )
    return _time_problems(problems, backends, device, reps)


def _time_problems(problems: list, backends: list[str], device: str, reps: int) -> list[Row]:
    rows = []
    for label, fn, ref, args in problems:
        eager = _time(ref, args, device, reps)
        for b in backends:
            try:
                with _backend.use_backend(b):
                    t = _time(fn, args, device, reps)
                rows.append(
                    {
                        "problem": label,
                        "backend": b,
                        "us": t,
                        "eager_us": eager,
                        "speedup": eager / t,
                        "verdict": "FASTER" if t < eager else "SLOWER",
                    }
                )
            except Exception as exc:
                rows.append(
                    {
                        "problem": label,
                        "backend": b,
                        "error": f"{type(exc).__name__}: {exc}"[:100],
                        "verdict": "ERROR",
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="solid_ext backend self-check")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions (CUDA)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument(
        "--cpu-timing", action="store_true", help="also time the CPU kernels (tiny sizes)"
    )
    args = ap.parse_args(argv)
    has_cuda = torch.cuda.is_available()
    avail = _backend.available_backends()
    print(f"torch {torch.__version__}, CUDA available: {has_cuda}, backends: {avail}")
    if "cpu" in avail:
        print(
            f"CPU kernels: {_backend.cpu_isa()} (variants this CPU runs: "
            f"{', '.join(_backend.cpu_isas())}; choose with SOLID_EXT_CPU_ISA)"
        )
    if has_cuda:
        print(f"device: {torch.cuda.get_device_name()}")
        device = "cuda"
        backends = [b for b in ("reference", "cuda", "triton") if b in avail]
        sizes = {"dl": (37, 10, 32, 64), "gl": (37, 3, 32, 33, 32), "cq": (1000, 300, 32)}
        dtypes = [torch.float32, torch.bfloat16]
    else:
        device = "cpu"
        backends = [b for b in ("reference", "cpu", "triton") if b in avail]
        sizes = {"dl": (3, 10, 5, 7), "gl": (3, 2, 5, 7, 4), "cq": (37, 70, 5)}
        dtypes = [torch.float32]
    rows: list[Row] = []
    for b in backends:
        for dt in dtypes:
            if dt != torch.float32 and b in ("cpu", "reference"):
                continue
            if b == "cpu" and device == "cpu":  # every CPU kernel variant this CPU runs
                for isa in _backend.cpu_isas():
                    with _backend.use_cpu_isa(isa):
                        for r in check(b, device, dt, sizes):
                            rows.append({**r, "backend": f"cpu:{isa}"})
            else:
                rows.extend(check(b, device, dt, sizes))
    print(f"\n{'backend':<12} {'op':<18} {'dtype':<9} {'result':<6} detail")
    for r in rows:
        verdict = "PASS" if r["ok"] else "FAIL"
        print(f"{r['backend']:<12} {r['op']:<18} {r['dtype']:<9} {verdict:<6} {r['note']}")
    timed: list[Row] = []
    if (has_cuda and not args.no_timing) or args.cpu_timing:
        clock = "CUDA events" if has_cuda else "wall clock, tiny CPU sizes"
        print(f"\nforward+backward, float32, mean of {args.reps} ({clock}); eager = reference")
        print(
            f"{'problem':<40} {'backend':<10} {'time us':>10} {'eager us':>10} {'speedup':>8} "
            "verdict"
        )
        timed = timings(
            [b for b in backends if b not in ("reference", "triton") or has_cuda],
            device,
            args.reps,
            small=not has_cuda,
        )
        for r in timed:
            if "error" in r:
                print(f"{r['problem']:<40} {r['backend']:<10} ERROR {r['error']}")
            else:
                print(
                    f"{r['problem']:<40} {r['backend']:<10} {r['us']:>10.1f} "
                    f"{r['eager_us']:>10.1f} {r['speedup']:>7.2f}x {r['verdict']}"
                )
    if not has_cuda:
        print(
            "\nNO CUDA DEVICE: the GPU checks (cuda and triton backends on CUDA tensors, "
            "timings) did NOT run."
        )
        if "triton" not in backends:
            print("triton interpreter not checked: set TRITON_INTERPRET=1 before Python starts.")
    failed = [r for r in rows if not r["ok"]]
    errors = [r for r in timed if r["verdict"] == "ERROR"]
    slower = [r for r in timed if r["verdict"] == "SLOWER"]
    print(
        f"\nSUMMARY: correctness {len(rows) - len(failed)}/{len(rows)} PASS"
        + (f"; timing {len(timed) - len(errors) - len(slower)}/{len(timed)} faster than eager"
           if timed else "")
    )  # fmt: skip
    if failed or errors:
        print("VERDICT: BROKEN -- a backend disagrees with the reference or fails to run.")
        return 1
    if slower:
        print("VERDICT: CORRECT BUT SLOWER than eager on: " + ", ".join(
            f"{r['backend']} {r['problem']}" for r in slower))  # fmt: skip
        return 3
    print("VERDICT: OK -- every backend matches the reference" + (
        " and beats eager everywhere it was timed." if timed else "."))  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
