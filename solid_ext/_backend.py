"""Backend selection: which implementation of the ops runs for a given device.

Backends:
- ``reference``: pure PyTorch (any device, any float dtype); oracle and fallback.
- ``cpu``: the C++ kernels of the compiled extension (CPU tensors, float32/float64).
- ``triton``: Triton kernels (CUDA tensors; CPU tensors when ``TRITON_INTERPRET=1``).
- ``cuda``: the CUDA C++ kernels of the compiled extension (CUDA tensors).

``auto`` (the default) picks, for CPU tensors, ``cpu`` then ``reference``; for CUDA
tensors, ``cuda`` then ``triton`` then ``reference``. Force a backend with the
environment variable ``SOLID_EXT_BACKEND`` or, taking precedence, the context
manager :func:`use_backend`.

The ``cpu`` backend holds one variant of its kernels per instruction set
(``avx512``, ``avx2``, ``baseline``) and runs the widest the CPU supports;
:func:`cpu_isa` tells which, ``SOLID_EXT_CPU_ISA`` or :func:`use_cpu_isa` choose.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")
_CHOICES = ("auto", *BACKENDS)
# A plain module-level stack rather than a ContextVar: torch.compile can trace (and
# guard on) a global, not ContextVar.get. The override is process-wide, not per thread.
_forced: list[str] = []
# dtypes each compiled backend has kernels for (the CUDA kernels accumulate half and
# bfloat16 in float32; the C++ CPU kernels are float32/float64 only).
_KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


@functools.cache
def compiled_extension() -> ModuleType | None:
    """The compiled ``solid_ext._C`` module, or None (with one warning) if absent."""
    try:
        return importlib.import_module("solid_ext._C")
    except (ImportError, OSError) as exc:
        warnings.warn(
            f"solid_ext: compiled kernels unavailable ({exc}); using the pure-PyTorch "
            "reference. Build them with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _has_kernel(key: str) -> bool:
    if compiled_extension() is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("solid_ext::dynamic_linear", key)


@functools.cache
def _triton_module() -> ModuleType | None:
    try:
        return importlib.import_module("solid_ext.triton_kernels")
    except ImportError:
        return None


def triton_usable() -> bool:
    """Triton kernels can run here: a GPU, or the interpreter on CPU tensors."""
    mod = _triton_module()
    return mod is not None and bool(getattr(mod, "is_available", lambda: False)())


def available_backends() -> list[str]:
    """Names of the backends that are built and usable on this machine."""
    out = ["reference"]
    if _has_kernel("CPU"):
        out.append("cpu")
    if triton_usable():
        out.append("triton")
    if torch.cuda.is_available() and _has_kernel("CUDA"):
        out.append("cuda")
    return out


def _check_name(name: str) -> str:
    name = name.strip().lower()
    if name not in _CHOICES:
        raise ValueError(f"unknown solid_ext backend {name!r}; choose one of {_CHOICES}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend (``auto`` restores device-based choice) inside a ``with`` block."""
    name = _check_name(name)
    if name != "auto" and name not in available_backends():
        raise RuntimeError(
            f"solid_ext backend {name!r} is not available here; available: {available_backends()}"
        )
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def requested_backend() -> str:
    """The backend asked for by :func:`use_backend` or ``SOLID_EXT_BACKEND``."""
    if _forced:
        return _forced[-1]
    return _check_name(os.environ.get("SOLID_EXT_BACKEND", "auto") or "auto")


@torch.compiler.assume_constant_result
def resolve(device: torch.device, dtype: torch.dtype) -> str:
    """The backend that will run an op on tensors of this device and dtype.

    Under ``torch.compile`` this runs once at trace time: the choice is baked into
    the compiled graph (changing the backend later does not recompile).
    """
    name = requested_backend()
    if name == "auto":
        if device.type == "cuda":
            if dtype in _KERNEL_DTYPES["cuda"] and "cuda" in available_backends():
                return "cuda"
            return "triton" if triton_usable() else "reference"
        if device.type == "cpu" and dtype in _KERNEL_DTYPES["cpu"] and _has_kernel("CPU"):
            return "cpu"
        return "reference"
    if name not in available_backends():
        raise RuntimeError(
            f"solid_ext backend {name!r} was requested but is not available here; "
            f"available: {available_backends()}"
        )
    if name in ("cpu", "cuda"):
        if device.type != name:
            raise RuntimeError(f"solid_ext backend {name!r} cannot run on {device.type} tensors")
        if dtype not in _KERNEL_DTYPES[name]:
            raise TypeError(
                f"solid_ext backend {name!r} supports {list(_KERNEL_DTYPES[name])}, got {dtype}"
            )
    return name


def cpu_isas() -> list[str]:
    """CPU kernel variants built into the extension and runnable on this CPU, widest
    first (among ``avx512``, ``avx2``, ``baseline``); empty without the extension."""
    ext = compiled_extension()
    return list(ext.cpu_isas_supported()) if ext is not None else []


def cpu_isa() -> str | None:
    """The CPU kernel variant the ``cpu`` backend runs: the widest this CPU supports,
    or ``SOLID_EXT_CPU_ISA`` (``avx512|avx2|baseline|auto``), or :func:`use_cpu_isa`.
    None without the compiled extension. Raises ValueError, naming the value and the
    variants this CPU supports, if ``SOLID_EXT_CPU_ISA`` is unknown or unsupported."""
    ext = compiled_extension()
    return ext.cpu_isa() if ext is not None else None


@contextlib.contextmanager
def use_cpu_isa(name: str) -> Iterator[str]:
    """Run the CPU kernels of variant ``name`` inside a ``with`` block (process-wide,
    like :func:`use_backend`; ``auto`` restores the default). Yields the name."""
    ext = compiled_extension()
    if ext is None:
        raise RuntimeError("solid_ext: the compiled CPU kernels are not available here")
    previous = ext.cpu_isa()
    ext.set_cpu_isa(name)
    try:
        yield ext.cpu_isa()
    finally:
        ext.set_cpu_isa(previous)


def triton_module() -> ModuleType:
    mod = _triton_module()
    if mod is None:
        raise RuntimeError("solid_ext.triton_kernels could not be imported")
    return mod
