"""Build the solid_ext kernels: a CppExtension (CPU), plus CUDA where torch has it.

Install with ``pip install --no-build-isolation -e .`` so the build uses the torch
already installed (an isolated build would fetch another, multi-GB torch).

Environment:
- ``SOLID_EXT_NATIVE=0``: compile for generic x86-64 instead of ``-march=native``.
- ``SOLID_EXT_CUDA=0``: skip the CUDA kernels even where torch and nvcc allow them.
"""

from __future__ import annotations

import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions() -> list:
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    native = os.environ.get("SOLID_EXT_NATIVE", "1") != "0"
    cxx = ["-O3", "-fopenmp"] + (["-march=native"] if native else [])
    sources = ["csrc/module.cpp", "csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    want_cuda = (
        os.environ.get("SOLID_EXT_CUDA", "1") != "0"
        and torch.version.cuda is not None
        and (os.environ.get("CUDA_HOME") or shutil.which("nvcc"))
        and cuda_sources
    )
    if want_cuda:
        return [
            CUDAExtension(
                "solid_ext._C",
                sources + cuda_sources,
                include_dirs=[os.path.join(ROOT, "csrc")],
                extra_compile_args={
                    "cxx": cxx,
                    "nvcc": ["-O3"],
                },
                extra_link_args=["-fopenmp"],
            )
        ]
    return [
        CppExtension(
            "solid_ext._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    ]


def main() -> None:
    from torch.utils.cpp_extension import BuildExtension

    setup(
        packages=find_packages(include=["solid_ext", "solid_ext.*"])
        + find_packages("python", include=["solidrec", "solidrec.*"]),
        package_dir={"solid_ext": "solid_ext", "solidrec": "python/solidrec"},
        ext_modules=_extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )


if __name__ == "__main__":
    main()
