"""The backend switch: ``auto`` resolution by device and dtype, ``SOLID_EXT_BACKEND``,
``use_backend``, and clear errors for unknown or unavailable backends.

CUDA is absent here, so its resolution is checked by making ``available_backends``
report it (the switch is pure Python; what it picks is what the ops call).
"""

from __future__ import annotations

import pytest
import torch

import solid_ext
from solid_ext import _backend, ops

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make the switch believe a GPU with the given backends exists."""

    def install(*names: str) -> None:
        avail = ["reference", "cpu", *names]
        monkeypatch.setattr(_backend, "available_backends", lambda: list(avail))
        monkeypatch.setattr(_backend, "triton_usable", lambda: "triton" in avail)

    return install


def test_cpu_build_is_available():
    assert solid_ext.available_backends()[:2] == ["reference", "cpu"]


@pytest.mark.parametrize(
    ("dtype", "want"),
    [
        (torch.float32, "cpu"),
        (torch.float64, "cpu"),
        (torch.bfloat16, "reference"),  # no C++ CPU kernel for half types
        (torch.float16, "reference"),
    ],
)
def test_auto_on_cpu(dtype, want, monkeypatch):
    monkeypatch.delenv("SOLID_EXT_BACKEND", raising=False)
    assert _backend.resolve(CPU, dtype) == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_auto_on_cuda_prefers_cuda_then_triton(dtype, fake_gpu, monkeypatch):
    monkeypatch.delenv("SOLID_EXT_BACKEND", raising=False)
    fake_gpu("triton", "cuda")
    assert _backend.resolve(CUDA, dtype) == "cuda"
    fake_gpu("triton")
    assert _backend.resolve(CUDA, dtype) == "triton"
    fake_gpu()
    assert _backend.resolve(CUDA, dtype) == "reference"


def test_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv("SOLID_EXT_BACKEND", "Reference ")  # case and spaces forgiven
    assert _backend.resolve(CPU, torch.float32) == "reference"
    monkeypatch.setenv("SOLID_EXT_BACKEND", "cpu")
    assert _backend.resolve(CPU, torch.float64) == "cpu"
    # use_backend takes precedence over the environment, and nests.
    with solid_ext.use_backend("reference"):
        assert _backend.resolve(CPU, torch.float32) == "reference"
        with solid_ext.use_backend("auto"):
            assert _backend.resolve(CPU, torch.float32) == "cpu"
        assert _backend.resolve(CPU, torch.float32) == "reference"
    assert _backend.resolve(CPU, torch.float32) == "cpu"


def test_forced_backend_is_the_one_that_runs(monkeypatch):
    calls = []
    real = ops.dynamic_linear_ref
    monkeypatch.setattr(ops, "dynamic_linear_ref", lambda *a: calls.append(1) or real(*a))
    x, w = torch.randn(3, 4), torch.randn(3, 4, 5)
    with solid_ext.use_backend("cpu"):
        y_cpu = ops.dynamic_linear(x, w)
    assert calls == []
    with solid_ext.use_backend("reference"):
        y_ref = ops.dynamic_linear(x, w)
    assert calls == [1]
    torch.testing.assert_close(y_cpu, y_ref)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match=r"unknown solid_ext backend 'gpu'.*choose one of"):
        solid_ext.use_backend("gpu").__enter__()


def test_unknown_name_in_environment_raises(monkeypatch):
    monkeypatch.setenv("SOLID_EXT_BACKEND", "fast")
    with pytest.raises(ValueError, match="unknown solid_ext backend 'fast'"):
        ops.dynamic_linear(torch.randn(2, 3), torch.randn(2, 3, 4))


def test_unavailable_backend_raises(monkeypatch):
    missing = next(b for b in _backend.BACKENDS if b not in solid_ext.available_backends())
    with pytest.raises(RuntimeError, match=f"'{missing}' is not available here; available:"):
        solid_ext.use_backend(missing).__enter__()
    monkeypatch.setenv("SOLID_EXT_BACKEND", missing)
    with pytest.raises(RuntimeError, match=f"'{missing}' was requested but is not available"):
        ops.codebook_quantize(torch.randn(4, 3), torch.randn(2, 3))


def test_forced_backend_on_wrong_device_or_dtype_raises(fake_gpu):
    fake_gpu("cuda")
    with solid_ext.use_backend("cpu"):
        with pytest.raises(RuntimeError, match="'cpu' cannot run on cuda tensors"):
            _backend.resolve(CUDA, torch.float32)
        with pytest.raises(TypeError, match=r"'cpu' supports .*float32.*got torch.bfloat16"):
            _backend.resolve(CPU, torch.bfloat16)
    with solid_ext.use_backend("cuda"):
        assert _backend.resolve(CUDA, torch.bfloat16) == "cuda"
        with pytest.raises(RuntimeError, match="'cuda' cannot run on cpu tensors"):
            _backend.resolve(CPU, torch.float32)
