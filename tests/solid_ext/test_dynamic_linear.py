from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solid_ext
from solid_ext import ops
from solid_ext.reference import dynamic_linear_ref
from solid_ext.testing import dynamic_linear_inputs

from .conftest import (
    CPU_BACKENDS,
    assert_close_to_truth,
    assert_compiles_like_eager,
    cpu_backend,
    poisoned_empty,
)

TAU = 0.05


# Fresh random inputs (float64 by default); branch values straddle ±TAU so the clip
# is exercised.
make = functools.partial(dynamic_linear_inputs, tau=TAU)


def run(fn, args, tau=TAU):
    leaves = [a.clone().requires_grad_(True) if a is not None else None for a in args]
    y = fn(*leaves, tau=tau)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y.backward(g.to(y.dtype))
    return y.detach(), [a.grad if a is not None else None for a in leaves]


SHAPES = [
    (1, None, 1, 1),
    (5, None, 7, 3),
    (4, 1, 32, 64),
    (3, 10, 32, 64),
    (6, 3, 5, 17),
    (2, 4, 33, 65),
    (3, 2, 16, 16),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "bias,branch", [(True, True), (False, True), (True, False), (False, False)]
)
def test_float64_matches_reference(backend, shape, bias, branch):
    args = make(*shape, bias=bias, branch=branch)
    y, grads = run(ops.dynamic_linear, args)
    y_ref, grads_ref = run(dynamic_linear_ref, args)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for g, gr in zip(grads, grads_ref, strict=True):
        assert (g is None) == (gr is None)
        if g is not None:
            torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_error_within_pytorch_own(backend, shape):
    args64 = make(*shape, seed=3)
    args32 = [a.float() if a is not None else None for a in args64]
    y, grads = run(ops.dynamic_linear, args32)
    y_ref, grads_ref = run(dynamic_linear_ref, args32)
    y_true, grads_true = run(dynamic_linear_ref, args64)
    assert y.dtype == torch.float32
    assert_close_to_truth(y, y_ref, y_true)
    for g, gr, gt in zip(grads, grads_ref, grads_true, strict=True):
        assert_close_to_truth(g, gr, gt)


def test_every_output_element_written(backend):
    args = make(5, 3, 9, 21, dtype=torch.float32)
    with poisoned_empty():
        y, grads = run(ops.dynamic_linear, args)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(g).all() for g in grads)


def test_clip_mask_is_inclusive_at_tau(backend):
    # |branch| == tau passes the gradient (as torch.clamp), |branch| > tau blocks it.
    b, n_in, n_out = 2, 3, 4
    x, w, bias, _, _ = make(b, None, n_in, n_out)
    bw = torch.full((b, n_in, n_out), TAU, dtype=torch.float64)
    bw[0, 0, 0] = TAU * 1.5
    bw[1, 2, 3] = -TAU * 3
    bb = torch.full((b, n_out), -TAU, dtype=torch.float64)
    bb[1, 1] = 2 * TAU
    _, grads = run(ops.dynamic_linear, [x, w, bias, bw, bb])
    _, grads_ref = run(dynamic_linear_ref, [x, w, bias, bw, bb])
    assert grads[3][0, 0, 0] == 0 and grads[3][1, 2, 3] == 0 and grads[4][1, 1] == 0
    assert (grads[3] != 0).sum() == b * n_in * n_out - 2
    torch.testing.assert_close(grads[3], grads_ref[3])
    torch.testing.assert_close(grads[4], grads_ref[4])


def test_non_contiguous_inputs(backend):
    x, w, bias, bw, bb = args = make(4, 3, 6, 10, seed=5, contiguous=False)
    assert not any(a.is_contiguous() for a in (x, w, bias, bw))
    y, grads = run(ops.dynamic_linear, args)
    y_ref, grads_ref = run(dynamic_linear_ref, args)
    torch.testing.assert_close(y, y_ref)
    for g, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, gr)


@pytest.mark.parametrize("b,l", [(0, None), (0, 3), (3, 0)])
def test_zero_size(backend, b, l):
    args = make(b, l, 4, 5)
    y, grads = run(ops.dynamic_linear, args)
    assert y.shape == ((b, 5) if l is None else (b, l, 5))
    for g, a in zip(grads, args, strict=True):
        assert g.shape == a.shape
    if l == 0:
        assert (grads[2] == 0).all()  # bias gets the sum of an empty gradient


def test_nan_propagates(backend):
    x, w, bias, bw, bb = make(3, 2, 4, 5)
    x[1, 0, 2] = math.nan
    bw[2, 1, 1] = math.nan
    y = ops.dynamic_linear(x, w, bias, bw, bb, tau=TAU)
    assert torch.isnan(y[1, 0]).all() and not torch.isnan(y[1, 1]).any()
    assert torch.isnan(y[2]).any() and not torch.isnan(y[0]).any()


def test_opcheck():
    if "cpu" not in solid_ext.available_backends():
        pytest.skip("compiled extension not built")
    for shape, bias, branch in [
        ((3, 4, 5, 6), True, True),
        ((2, 1, 3, 7), False, True),
        ((2, 3, 4, 5), True, False),
        ((4, 2, 3, 3), False, False),
    ]:
        x, w, b, bw, bb = make(*shape, dtype=torch.float32, bias=bias, branch=branch)
        args = [a.requires_grad_(True) if a is not None else None for a in (x, w, b, bw, bb)]
        torch.library.opcheck(torch.ops.solid_ext.dynamic_linear, (*args, TAU))


def test_gradcheck(backend):
    args = make(3, 2, 4, 5, seed=7)
    # Keep branch values away from ±tau, where the clip is not differentiable.
    for t in (args[3], args[4]):
        t.copy_(torch.where((t.abs() - TAU).abs() < 1e-3, t * 0.5, t))
    leaves = [a.requires_grad_(True) for a in args]
    assert torch.autograd.gradcheck(lambda *a: ops.dynamic_linear(*a, tau=TAU), leaves)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(0, 9),
    l=st.one_of(st.none(), st.integers(1, 6)),
    n_in=st.integers(1, 40),
    n_out=st.integers(1, 70),
    bias=st.booleans(),
    branch=st.booleans(),
    tau=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_fuzz_against_reference(b, l, n_in, n_out, bias, branch, tau, seed):
    args = make(b, l, n_in, n_out, bias=bias, branch=branch, seed=seed)
    for name in CPU_BACKENDS:
        with cpu_backend(name):
            y, grads = run(ops.dynamic_linear, args, tau=tau)
        y_ref, grads_ref = run(dynamic_linear_ref, args, tau=tau)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        for g, gr in zip(grads, grads_ref, strict=True):
            if gr is not None:
                torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-10)


def test_compile_fullgraph():
    assert_compiles_like_eager(
        functools.partial(ops.dynamic_linear, tau=TAU), make(4, 3, 8, 6, dtype=torch.float32)
    )


BAD = [
    ("x", lambda a: {**a, "x": a["x"].long()}, "x must be a floating-point"),
    ("x", lambda a: {**a, "x": a["x"][0, 0]}, "x must be (B, N_in) or (B, L, N_in)"),
    ("weight", lambda a: {**a, "weight": a["weight"][0]}, "weight must be (B, N_in, N_out)"),
    ("x", lambda a: {**a, "x": a["x"][:2]}, "batch mismatch"),
    ("x", lambda a: {**a, "x": a["x"][..., :2]}, "N_in mismatch"),
    ("weight", lambda a: {**a, "weight": a["weight"].float()}, "weight has dtype torch.float32"),
    ("bias", lambda a: {**a, "bias": a["bias"][:, :2]}, "bias must be (B, N_out)"),
    (
        "branch_weight",
        lambda a: {**a, "branch_weight": a["branch_weight"][:, :2]},
        "branch_weight must match weight",
    ),
    (
        "branch_bias",
        lambda a: {**a, "branch_bias": a["branch_bias"].float()},
        "branch_bias has dtype",
    ),
    ("tau", lambda a: {**a, "tau": -0.1}, "tau must be a non-negative"),
    ("tau", lambda a: {**a, "tau": math.nan}, "tau must be a non-negative"),
]


@pytest.mark.parametrize("name,mutate,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_clearly(backend, name, mutate, msg):
    x, w, b, bw, bb = make(3, 2, 4, 5)
    a = {"x": x, "weight": w, "bias": b, "branch_weight": bw, "branch_bias": bb, "tau": TAU}
    with pytest.raises((ValueError, TypeError)) as err:
        ops.dynamic_linear(**mutate(a))
    assert msg in str(err.value)
    assert name in str(err.value)


@pytest.mark.parametrize(
    "bad", [None, math.nan, -0.1, math.inf, -math.inf, torch.tensor(0.1), "0.1", True]
)
def test_bad_tau_is_named(backend, bad):
    # Every entry point says what is wrong with tau, not an error from deep inside.
    x, w, b, bw, bb = make(3, 2, 4, 5)
    for fn in (ops.dynamic_linear, dynamic_linear_ref):
        with pytest.raises((TypeError, ValueError), match=r"\btau\b"):
            fn(x, w, b, bw, bb, tau=bad)


@pytest.mark.parametrize("tau", [0.01, 1e5, 1e30, 1e300])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_match_a_float32_computation(dtype, tau):
    # A tau beyond float16's range is valid (it clips nothing) and once made
    # torch.clamp raise an overflow; half inputs are computed in float32 internally
    # and must agree with a float32 computation cast back.
    args = [a.to(dtype) for a in make(3, 4, 6, 5, seed=8)]
    args[3] = args[3] * 100  # branch values well beyond a small tau
    grad = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    leaves = [a.clone().requires_grad_(True) for a in args]
    y = ops.dynamic_linear(*leaves, tau=tau)
    grads = torch.autograd.grad(y, leaves, grad)
    leaves32 = [a.float().requires_grad_(True) for a in args]
    y32 = dynamic_linear_ref(*leaves32, tau=tau)
    grads32 = torch.autograd.grad(y32, leaves32, grad.float())
    assert y.dtype == dtype
    tol = {"rtol": 4 * torch.finfo(dtype).eps, "atol": 1e-3}
    torch.testing.assert_close(y, y32.to(dtype), **tol)
    for g, g32 in zip(grads, grads32, strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(g, g32.to(dtype), **tol)


def test_tau_beyond_float32_range_clips_nothing(backend):
    # float32 kernels given a finite tau above float32's largest value: no clipping
    # (the reference once raised an overflow in torch.clamp).
    args = [a.float() for a in make(2, 3, 4, 5, seed=9)]
    y = ops.dynamic_linear(*args, tau=1e300)
    expect = dynamic_linear_ref(args[0], args[1] + args[3], args[2] + args[4], None, None)
    torch.testing.assert_close(y, expect)
