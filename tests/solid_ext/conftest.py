from __future__ import annotations

import contextlib
import os

import pytest
import torch

import solid_ext

# Backends that run on CPU tensors in this process, the compiled one once per CPU
# kernel variant this machine can execute ("cpu:avx2"): on an AVX-512 host that is
# all three. Triton (interpreter) has its own test module; CUDA has no device here
# and is covered by the compile/host checks.
CPU_BACKENDS = ["reference"] + [
    f"cpu:{isa}" for isa in solid_ext.cpu_isas() if "cpu" in solid_ext.available_backends()
]


def pytest_collection_modifyitems(config, items):
    """Outside the Triton interpreter, deselect the cases that need it: they run in
    the TRITON_INTERPRET=1 subprocess started by test_triton.py::test_interpreter_suite,
    which fails unless they all ran and passed there."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    keep, drop = [], []
    for it in items:
        (drop if it.get_closest_marker("triton_interpreter") else keep).append(it)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@contextlib.contextmanager
def cpu_backend(name: str):
    """``use_backend`` for a CPU_BACKENDS entry, selecting the kernel variant too."""
    backend, _, isa = name.partition(":")
    with solid_ext.use_backend(backend):
        if isa:
            with solid_ext.use_cpu_isa(isa):
                yield backend
        else:
            yield backend


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    with cpu_backend(request.param) as name:
        yield name


@contextlib.contextmanager
def poisoned_empty():
    """Make every uninitialised allocation NaN, so an output element a kernel
    forgets to write shows up as NaN instead of stale memory."""
    old_det = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = old_fill
        torch.use_deterministic_algorithms(old_det)


def assert_close_to_truth(out, ref32, truth, atol=1e-6, factor=4.0):
    """flash-attention-style tolerance: our float32 error against the float64 truth
    may be at most ``factor`` times PyTorch's own float32 error, plus ``atol``."""
    ours = (out.double() - truth).abs().max().item()
    theirs = (ref32.double() - truth).abs().max().item()
    assert ours <= factor * theirs + atol, f"error {ours:.3e} vs PyTorch's {theirs:.3e}"


def assert_compiles_like_eager(fn, args):
    """``torch.compile(fullgraph=True)`` of ``fn(*args).square().sum()`` (aot_eager)
    traces through the op and gives eager's gradients."""

    def f(*a):
        return fn(*a).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaves = [a.clone().requires_grad_(True) for a in args]
    leaves_c = [a.clone().requires_grad_(True) for a in args]
    f(*leaves).backward()
    compiled(*leaves_c).backward()
    for a, c in zip(leaves, leaves_c, strict=True):
        torch.testing.assert_close(a.grad, c.grad)
