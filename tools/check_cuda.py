"""Compile-check the CUDA kernels without a GPU and record ptxas resource usage.

Every torch-free kernel file ``csrc/cuda/*_kernels.cu`` is compiled with nvcc for each
requested architecture (default sm_80 and sm_90) with all warnings as errors and
``-Xptxas -v``. The ptxas report is parsed into one row per (arch, kernel):
registers, shared memory, stack, spill stores/loads. The table is written as JSON and
markdown. Exit status is non-zero on any compiler warning, error or spill.

``--binding`` also compiles ``csrc/cuda/ops_cuda.cu`` (the ATen binding) against the
installed torch headers. The CPU torch wheel lacks one generated CUDA header
(``c10/cuda/impl/cuda_cmake_macros.h``); an empty stand-in is supplied. This checks
that the binding type-checks; it is not a link (that needs a CUDA build of torch).

Usage: python tools/check_cuda.py [--arch sm_80 --arch sm_90] [--out DIR] [--binding]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-Werror",
    "all-warnings",
    "-Xcompiler",
    "-Wall,-Wextra,-Werror",
    "-Xptxas",
    "-v,-warn-spills,-warn-lmem-usage",
]


def find_nvcc() -> str | None:
    """nvcc on PATH, else the newest /usr/local/cuda*/bin/nvcc."""
    found = shutil.which("nvcc")
    if found:
        return found
    for cand in sorted(Path("/usr/local").glob("cuda*/bin/nvcc"), reverse=True):
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


def _demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, out.stdout.splitlines(), strict=False))


def _short(name: str) -> str:
    # "void solid_ext::cuda::(anonymous namespace)::k<float>(...)" -> "k<float>"
    name = re.sub(r"\(.*\)$", "", name.replace("(anonymous namespace)::", ""))
    name = name.removeprefix("void ").replace("solid_ext::cuda::", "")
    return name.replace("__nv_bfloat16", "bf16").replace("__half", "half")


def parse_ptxas(text: str, arch: str, source: str) -> list[dict]:
    """One dict per kernel entry from ``-Xptxas -v`` output."""
    rows: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
        if m:
            current = m.group(1)
            rows[current] = {"arch": arch, "source": source, "mangled": current}
            continue
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1) if m.group(1) in rows else current
            continue
        if current is None:
            continue
        m = re.search(
            r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line
        )
        if m:
            rows[current].update(
                stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3))
            )
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m:
            rows[current]["registers"] = int(m.group(1))
            smem = re.search(r"(\d+) bytes smem", line)
            rows[current]["static_smem"] = int(smem.group(1)) if smem else 0
    names = _demangle(list(rows))
    out = []
    for mangled, row in rows.items():
        row["kernel"] = _short(names.get(mangled, mangled))
        out.append(row)
    return sorted(out, key=lambda r: r["kernel"])


def compile_one(nvcc: str, src: Path, arch: str, extra: list[str] | None = None) -> dict:
    """Compile one .cu for one arch; return {ok, warnings, log, rows}."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-c", f"-arch={arch}", *NVCC_FLAGS, *(extra or []), "-o",
               str(Path(tmp) / "out.o"), str(src)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=src.parent)
    log = proc.stdout + proc.stderr
    warnings = [
        ln for ln in log.splitlines()
        if re.search(r"\bwarning\b", ln, re.I) and "ptxas info" not in ln
    ]  # fmt: skip
    return {
        "ok": proc.returncode == 0,
        "warnings": warnings,
        "log": log,
        "cmd": " ".join(cmd),
        "rows": parse_ptxas(log, arch, src.name) if proc.returncode == 0 else [],
    }


def compile_binding(nvcc: str, arch: str) -> dict:
    import torch.utils.cpp_extension as ce

    stub = Path(tempfile.mkdtemp()) / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    inc = [f"-I{stub.parents[2]}"] + [f"-I{p}" for p in ce.include_paths()]
    with tempfile.TemporaryDirectory() as tmp:
        # torch's headers need C++20 (bit-field initialisers); warnings from them
        # are not ours, so no -Werror here.
        # --expt-relaxed-constexpr: as torch's BuildExtension passes for every .cu.
        cmd = [nvcc, "-c", f"-arch={arch}", "-std=c++20", "--expt-relaxed-constexpr", *inc, "-o",
               str(Path(tmp) / "ops.o"), str(CUDA_DIR / "ops_cuda.cu")]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=CUDA_DIR)
    return {"ok": proc.returncode == 0, "log": proc.stdout + proc.stderr, "cmd": " ".join(cmd)}


def md_table(columns: list[str], rows: list[list[object]], left: int) -> str:
    """A markdown table: the first ``left`` columns left-aligned, the rest right."""
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|"
    lines = ["| " + " | ".join(columns) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    columns = ["arch", "kernel", "source", "registers", "static smem (B)", "stack (B)",
               "spill stores (B)", "spill loads (B)"]  # fmt: skip
    cells = [
        [r["arch"], f"`{r['kernel']}`", r["source"], r.get("registers", "?"),
         r.get("static_smem", 0), r.get("stack", 0), r.get("spill_stores", 0),
         r.get("spill_loads", 0)]
        for r in rows
    ]  # fmt: skip
    return md_table(columns, cells, left=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="e.g. sm_80 (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "build" / "cuda_check"), help="output dir")
    ap.add_argument("--binding", action="store_true", help="also compile ops_cuda.cu")
    args = ap.parse_args(argv)
    archs = args.arch or ["sm_80", "sm_90"]
    nvcc = find_nvcc()
    if nvcc is None:
        print("check_cuda: nvcc not found (PATH or /usr/local/cuda*/bin)", file=sys.stderr)
        return 2
    sources = sorted(CUDA_DIR.glob("*_kernels.cu"))
    if not sources:
        print(f"check_cuda: no *_kernels.cu under {CUDA_DIR}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    failures: list[str] = []
    for arch in archs:
        for src in sources:
            res = compile_one(nvcc, src, arch)
            if not res["ok"]:
                failures.append(f"{src.name} [{arch}] failed to compile:\n{res['log']}")
            for w in res["warnings"]:
                failures.append(f"{src.name} [{arch}] warning: {w}")
            rows.extend(res["rows"])
        if args.binding:
            res = compile_binding(nvcc, arch)
            if not res["ok"]:
                failures.append(f"ops_cuda.cu [{arch}] failed to compile:\n{res['log'][-4000:]}")
    for r in rows:
        if r.get("spill_stores", 0) or r.get("spill_loads", 0):
            failures.append(
                f"{r['kernel']} [{r['arch']}] spills: {r['spill_stores']} B stores, "
                f"{r['spill_loads']} B loads"
            )
        if "registers" not in r:
            failures.append(f"{r['kernel']} [{r['arch']}]: no register count parsed")
    if not rows and not failures:
        failures.append("no kernels parsed from the ptxas report")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nvcc_version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    report = {
        "nvcc": nvcc,
        "nvcc_version": nvcc_version.strip().splitlines()[-1] if nvcc_version else "",
        "flags": NVCC_FLAGS,
        "archs": archs,
        "kernels": rows,
        "failures": failures,
    }
    (out / "ptxas.json").write_text(json.dumps(report, indent=2))
    table = markdown(rows)
    (out / "ptxas.md").write_text(table)
    print(table)
    print(f"{len(rows)} kernel entries, {len(archs)} archs; report: {out}/ptxas.json, ptxas.md")
    if failures:
        print("\nFAILURES:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print("check_cuda: OK (no warnings, no errors, no spills)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
