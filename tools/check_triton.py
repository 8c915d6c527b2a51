"""Compile every Triton kernel launch the ops make to cubin for real GPUs, without one.

The interpreter (``TRITON_INTERPRET=1``) proves the kernels' numerics but accepts code
that the GPU compiler rejects (layouts, dot shapes, dtype rules). This tool runs the
ops' host code on CPU tensors with ``JITFunction.run`` replaced by a recorder, so every
distinct launch (kernel, argument types, constexprs, num_warps) the ops make for a set
of representative problems is captured; each is then compiled ahead of time with
``triton.compile`` for sm_80 and sm_90 (Triton's bundled ptxas does the last step),
and ``ptxas -v`` on the PTX reports registers, shared memory and spills.

Exit status is non-zero if any launch fails to compile or spills.

Usage: python tools/check_triton.py [--arch 80 --arch 90] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
_TYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
}
_OPTIONS = ("num_warps", "num_stages", "num_ctas")


@functools.cache
def _check_cuda():
    """tools/check_cuda.py (its ptxas parser), loaded once."""
    spec = importlib.util.spec_from_file_location("check_cuda", ROOT / "tools" / "check_cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arg_type(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unsupported kernel argument {value!r}")


@contextmanager
def recording(launches: list[dict]):
    """Replace kernel launches by a recorder of their signature and constexprs."""
    from triton.runtime.jit import JITFunction

    real = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        bound = dict(zip(self.arg_names, args, strict=False))
        bound.update({k: v for k, v in kwargs.items() if k in self.arg_names})
        sig, const = {}, {}
        for p in self.params:
            if p.is_constexpr:
                sig[p.name] = "constexpr"
                const[p.name] = bound[p.name]
            else:
                sig[p.name] = _arg_type(bound[p.name])
        options = {k: v for k, v in kwargs.items() if k in _OPTIONS}
        launches.append({"fn": self, "signature": sig, "constexprs": const, "options": options})

    JITFunction.run = record
    try:
        yield
    finally:
        JITFunction.run = real


def representative_launches() -> list[dict]:
    """Every distinct launch the ops make over shapes covering each code path."""
    from solid_ext.triton_kernels import _codebook_quantize as cq
    from solid_ext.triton_kernels import _dynamic_linear as dl

    launches: list[dict] = []
    with recording(launches):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            for B, L, I, O in ((3, 1, 5, 7), (2, 10, 32, 64), (2, 70, 33, 65)):  # noqa: E741
                x = torch.randn(B, L, I).to(dtype)
                w = torch.randn(B, I, O).to(dtype)
                b = torch.randn(B, O).to(dtype)
                for branch in (False, True):
                    bw, bb = (w, b) if branch else (None, None)
                    dl.forward(x, w, b, bw, bb, 0.01)
                    dl.backward(
                        torch.randn(B, L, O).to(dtype), x, w, bw, bb, 0.01, True, True, True
                    )
            for M, K, D in ((37, 70, 5), (64, 256, 32), (64, 1024, 64)):
                z, c = torch.randn(M, D).to(dtype), torch.randn(K, D).to(dtype)
                cq.forward(z, c)
                idx = torch.zeros(M, dtype=torch.long)
                for st in (False, True):
                    cq.backward(
                        torch.randn(M, D).to(dtype), torch.randn(M).to(dtype), z, c, idx, st
                    )
    unique: dict[str, dict] = {}
    for la in launches:
        key = json.dumps(
            [la["fn"].__name__, la["signature"], {k: str(v) for k, v in la["constexprs"].items()},
             la["options"]], sort_keys=True,
        )  # fmt: skip
        unique.setdefault(key, la)
    return list(unique.values())


def compile_launch(la: dict, arch: int) -> dict:
    """Compile one recorded launch for ``sm_<arch>``; report ptxas's resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    name = la["fn"].__name__
    consts = ", ".join(f"{k}={v}" for k, v in la["constexprs"].items())
    types = sorted({t for t in la["signature"].values() if t.startswith("*fp") or t == "*bf16"})
    row = {"arch": f"sm_{arch}", "kernel": name, "dtypes": "/".join(types), "constexprs": consts}
    try:
        src = ASTSource(la["fn"], la["signature"], constexprs=la["constexprs"])
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=la["options"])
    except Exception as exc:  # the point of the tool: report, then fail at the end
        return {**row, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    row["shared"] = int(kernel.metadata.shared)
    ptxas = get_ptxas(arch).path
    # Triton targets the arch-specific variant (sm_90a on Hopper): ask ptxas for that.
    target = re.search(r"^\.target\s+(sm_\w+)", kernel.asm["ptx"], re.M)
    gpu = target.group(1) if target else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(kernel.asm["ptx"])
        proc = subprocess.run(
            [ptxas, "-v", f"--gpu-name={gpu}", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
            capture_output=True,
            text=True,
        )
    parsed = _check_cuda().parse_ptxas(proc.stdout + proc.stderr, gpu, "triton")
    if proc.returncode != 0 or not parsed:
        return {**row, "ok": False, "error": (proc.stdout + proc.stderr)[-300:]}
    p = parsed[0]
    row.update(
        ok=p.get("spill_stores", 0) == 0 and p.get("spill_loads", 0) == 0,
        registers=p.get("registers"),
        spill_stores=p.get("spill_stores", 0),
        spill_loads=p.get("spill_loads", 0),
    )
    return row


def summary(rows: list[dict]) -> str:
    """One line per (arch, kernel): variants compiled, worst registers/shared, spills."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arch"], r["kernel"]), []).append(r)
    lines = [
        "| arch | kernel | variants | compiled | max registers | max shared (B) | spills (B) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (arch, kernel), rs in sorted(groups.items()):
        ok = [r for r in rs if "registers" in r]
        spills = sum(r.get("spill_stores", 0) + r.get("spill_loads", 0) for r in ok)
        lines.append(
            f"| {arch} | `{kernel}` | {len(rs)} | {len(ok)} | "
            f"{max((r['registers'] for r in ok), default='-')} | "
            f"{max((r['shared'] for r in ok), default='-')} | {spills} |"
        )
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    head = (
        "| arch | kernel | dtypes | constexprs | registers | shared (B) | spills (B) |\n"
        "|---|---|---|---|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['arch']} | `{r['kernel']}` | {r['dtypes']} | {r['constexprs']} | "
        f"{r.get('registers', '-')} | {r.get('shared', '-')} | "
        f"{r.get('spill_stores', 0) + r.get('spill_loads', 0) if r['ok'] else 'FAILED'} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, action="append", help="SM version, e.g. 90 (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "build" / "triton_check"), help="output dir")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    import triton

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the default; silences a notice
    archs = args.arch or [80, 90]
    launches = representative_launches()
    rows = [compile_launch(la, a) for a in archs for la in launches]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "triton_ptxas.json").write_text(json.dumps(rows, indent=1))
    (out / "triton_ptxas.md").write_text(
        "# Triton kernels compiled for real GPUs (no GPU used)\n\n"
        "Generated by `python tools/check_triton.py --out docs/triton` "
        f"(triton {triton.__version__}); do not edit by hand.\n\n"
        + summary(rows) + "\n## Every launch variant\n\n" + markdown(rows)
    )  # fmt: skip
    failed = [r for r in rows if not r["ok"]]
    for r in failed:
        print(f"FAILED {r['arch']} {r['kernel']} [{r['constexprs']}]: {r.get('error', 'spills')}")
    print(f"{len(rows) - len(failed)}/{len(rows)} launches compiled for {archs} without spills")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
