"""Build the solid_ext kernels: a CppExtension (CPU), plus CUDA where torch has it.

Install with ``pip install --no-build-isolation -e .`` so the build uses the torch
already installed (an isolated build would fetch another, multi-GB torch).

The CPU kernels are built once per instruction set (csrc/cpu/kernels_<isa>.cpp, each
with the flags csrc/cpu/isa_flags.txt gives it: baseline everywhere, avx2 and avx512
on x86-64) into the one extension, which picks a variant at run time from the CPU.
No flag targets the build machine's own CPU, so a build runs on any CPU of its
architecture.

Environment: ``SOLID_EXT_CUDA=0`` skips the CUDA kernels even where torch and nvcc
allow them; ``CXX`` names the compiler of the per-ISA kernel objects (default c++).
"""

from __future__ import annotations

import glob
import os
import platform
import shlex
import shutil
import subprocess

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
X86 = platform.machine().lower() in ("x86_64", "amd64")
# Kernel objects get the project's own warning policy (CI's CMake build applies it to
# every source); the torch-facing sources only -Wall, as torch headers vary by version.
ISA_CXXFLAGS = ["-O3", "-fPIC", "-std=c++17", "-ffp-contract=fast", "-Wall", "-Wextra", "-Werror"]


def isa_flags() -> dict[str, list[str]]:
    """{variant: compiler flags} from csrc/cpu/isa_flags.txt, for this architecture."""
    out = {}
    with open(os.path.join(ROOT, "csrc", "cpu", "isa_flags.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, flags = line.partition(":")
                out[name.strip()] = shlex.split(flags)
    return out if X86 else {"baseline": []}


def _defines() -> list[tuple[str, str | None]]:
    return [("SOLID_EXT_X86_ISAS", None)] if X86 else []


def _extensions() -> list:
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cxx = ["-O3", "-fopenmp", "-Wall"]
    # kernels_<isa>.cpp are compiled by Build with their own flags, not here.
    cpu_sources = [
        s
        for s in sorted(glob.glob("csrc/cpu/*.cpp"))
        if not os.path.basename(s).startswith("kernels_")
    ]
    sources = ["csrc/module.cpp", "csrc/ops.cpp", *cpu_sources]
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    want_cuda = (
        os.environ.get("SOLID_EXT_CUDA", "1") != "0"
        and torch.version.cuda is not None
        and (os.environ.get("CUDA_HOME") or shutil.which("nvcc"))
        and cuda_sources
    )
    common = dict(
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=_defines(),
        extra_link_args=["-fopenmp"],
    )
    if want_cuda:
        return [
            CUDAExtension(
                "solid_ext._C",
                sources + cuda_sources,
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
                **common,
            )
        ]
    return [CppExtension("solid_ext._C", sources, extra_compile_args={"cxx": cxx}, **common)]


def _build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    class Build(BuildExtension.with_options(use_ninja=True)):
        """Compiles each kernels_<isa>.cpp with its own flags (setuptools has no
        per-source flags), then links the objects into the extension."""

        def build_extensions(self) -> None:
            objects = self._isa_objects()
            for ext in self.extensions:
                ext.extra_objects = [*objects, *ext.extra_objects]
            super().build_extensions()

        def _isa_objects(self) -> list[str]:
            cxx = shlex.split(os.environ.get("CXX", "c++"))
            out_dir = os.path.join(os.path.abspath(self.build_temp), "isa")
            os.makedirs(out_dir, exist_ok=True)
            defines = [f"-D{k}" for k, _ in _defines()]
            deps = [
                os.path.join(ROOT, "csrc", "cpu", n)
                for n in ("kernels_impl.h", "kernels.h", "isa_flags.txt")
            ]
            objects = []
            for isa, flags in isa_flags().items():
                src = os.path.join(ROOT, "csrc", "cpu", f"kernels_{isa}.cpp")
                obj = os.path.join(out_dir, f"kernels_{isa}.o")
                cmd = [
                    *cxx,
                    *ISA_CXXFLAGS,
                    *defines,
                    *flags,
                    f"-I{ROOT}/csrc",
                    "-c",
                    src,
                    "-o",
                    obj,
                ]
                newest = max(os.path.getmtime(p) for p in [src, *deps])
                if not os.path.exists(obj) or os.path.getmtime(obj) < newest:
                    print(" ".join(cmd), flush=True)
                    subprocess.run(cmd, check=True)
                objects.append(obj)
            return objects

    return Build


#: What to run instead, when torch cannot be imported (an isolated build, or no torch).
INSTALL_HINT = (
    "solid_ext builds its kernels against the torch already installed, which pip's build "
    "isolation hides: install torch first, then run "
    "`pip install --no-build-isolation -e .` (or without -e). See README.md, Install."
)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit(f"error: {INSTALL_HINT}") from None


def main() -> None:
    _require_torch()
    setup(
        packages=find_packages(include=["solid_ext", "solid_ext.*"])
        + find_packages("python", include=["solidrec", "solidrec.*"]),
        package_dir={"solid_ext": "solid_ext", "solidrec": "python/solidrec"},
        ext_modules=_extensions(),
        cmdclass={"build_ext": _build_ext_class()},
    )


if __name__ == "__main__":
    main()
