"""Compile the C++ CPU kernel sources for generic x86-64 and for x86-64-v3, warnings as
errors, and check that each per-ISA kernel object exports nothing but its own namespace.

    python tools/check_cpu_build.py [--march x86-64 x86-64-v3] [--jobs 2] [--torch-sources]

The torch-facing sources (ops.cpp, csrc/cpu/<op>.cpp) hold no ISA-specific code and
cost ~30 s each of torch headers: `make test` compiles them once, in `make ctest`'s
CMake build (warnings as errors, the compiler's default -march, x86-64 on the GCC of
Debian and Ubuntu), so they are compiled here only with --torch-sources (for the first
march).

Why: the kernels must not depend on the build machine's CPU. A construct that only
compiles cleanly where the default ISA is wide (an AVX-512 vector returned from a
function built for AVX2 warns -Wpsabi) fails here on any machine; and a function
compiled with AVX-512 flags that the linker could merge with another unit's copy
(an inline or template function with external linkage) would crash older CPUs, so
kernels_<isa>.o may define only solid_ext::cpu::<isa>:: symbols.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU = ROOT / "csrc" / "cpu"
sys.path.insert(0, str(ROOT))
from setup import isa_flags  # noqa: E402  (the one reader of csrc/cpu/isa_flags.txt)

WARN = ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]


def torch_includes() -> list[str]:
    from torch.utils.cpp_extension import include_paths

    # As system headers, as CMake and torch's own builds include them: their warnings are
    # not ours to fix.
    return [f"-isystem{p}" for p in include_paths()]


def compile_one(cxx: list[str], src: Path, flags: list[str], obj: Path) -> str:
    """Compiler errors, or "" on success."""
    cmd = [*cxx, "-std=c++17", "-O2", "-fPIC", "-fopenmp", *WARN, *flags, "-c", str(src)]
    cmd += ["-o", str(obj)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    return res.stderr if res.returncode else ""


def foreign_symbols(obj: Path, isa: str) -> list[str]:
    out = subprocess.run(
        ["nm", "-C", "--defined-only", "--extern-only", str(obj)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [line.split(" ", 2)[2] for line in out.splitlines() if line.count(" ") >= 2]
    return [n for n in names if not n.startswith(f"solid_ext::cpu::{isa}::")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--march", nargs="+", default=["x86-64", "x86-64-v3"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--torch-sources",
        action="store_true",
        help="also compile the torch-facing sources (first march)",
    )
    args = ap.parse_args()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print(f"check_cpu_build: {platform.machine()} is not x86-64; nothing to check")
        return 0
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    isas = isa_flags()
    inc = [f"-I{ROOT / 'csrc'}", "-DSOLID_EXT_X86_ISAS"]
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        for march in args.march:
            for src in sorted(CPU.glob("*.cpp")) + [ROOT / "csrc" / "ops.cpp"]:
                isa = src.stem.removeprefix("kernels_") if src.stem.startswith("kernels_") else None
                if isa is None and (not args.torch_sources or march != args.march[0]):
                    continue  # see the module docstring
                flags = [f"-march={march}", *inc]
                if isa is not None:
                    flags += [*isas[isa], "-ffp-contract=fast"]
                else:
                    flags += torch_includes()
                obj = Path(tmp) / f"{march}-{src.stem}.o"
                jobs.append((src, flags, obj, isa))
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda j: compile_one(cxx, j[0], j[1], j[2]), jobs))
        failed = 0
        for (src, flags, obj, isa), err in zip(jobs, results, strict=True):
            march = flags[0]
            if err:
                failed += 1
                print(f"FAIL {src.name} {march}\n{err}")
                continue
            foreign = foreign_symbols(obj, isa) if isa else []
            if foreign:
                failed += 1
                print(f"FAIL {src.name} {march}: symbols outside solid_ext::cpu::{isa}::")
                print("\n".join(f"  {n}" for n in foreign))
            else:
                print(f"ok   {src.name} {march}")
    print(f"{len(jobs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
