"""generated_linear: every CPU backend and kernel variant against the reference."""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solid_ext
from solid_ext import ops
from solid_ext.reference import dynamic_linear_ref, generated_linear_ref
from solid_ext.testing import generated_linear_inputs

from .conftest import (
    CPU_BACKENDS,
    assert_close_to_truth,
    assert_compiles_like_eager,
    cpu_backend,
    poisoned_empty,
)

TAU = 0.05
make = functools.partial(generated_linear_inputs, tau=TAU)


def run(fn, args, tau):
    leaves = [a.clone().requires_grad_(True) for a in args]
    y = fn(*leaves, tau=tau)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y.backward(g.to(y.dtype))
    return y.detach(), [a.grad for a in leaves]


# (B, L, N_in, N_out, C): L None for 2-D x; N_out not a multiple of any vector width
# (padded columns), B not a multiple of the sample tiles (remainder groups).
SHAPES = [
    (1, None, 1, 1, 1),
    (5, None, 7, 3, 4),
    (13, 1, 32, 32, 32),
    (7, 3, 5, 17, 3),
    (8, 2, 16, 33, 9),
    (3, 4, 3, 64, 1),
]
TAUS = [None, TAU]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", TAUS)
def test_float64_matches_reference(backend, shape, tau):
    args = make(*shape)
    y, grads = run(ops.generated_linear, args, tau)
    y_ref, grads_ref = run(generated_linear_ref, args, tau)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for g, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES[1:4])
@pytest.mark.parametrize("tau", TAUS)
def test_float32_error_within_pytorch_own(backend, shape, tau):
    args64 = make(*shape, seed=3)
    args32 = [a.float() for a in args64]
    y, grads = run(ops.generated_linear, args32, tau)
    y_ref, grads_ref = run(generated_linear_ref, args32, tau)
    y_true, grads_true = run(generated_linear_ref, args64, tau)
    assert y.dtype == torch.float32
    assert_close_to_truth(y, y_ref, y_true)
    for g, gr, gt in zip(grads, grads_ref, grads_true, strict=True):
        assert_close_to_truth(g, gr, gt)


def test_equals_generate_then_apply(backend):
    # The op is dynamic_linear of the generated weights: trunk unclipped, branch clipped.
    x, cond, gen, base = make(6, 3, 8, 12, 5, seed=4)
    w = (cond @ gen.t()).view(6, 8, 12) + base
    torch.testing.assert_close(ops.generated_linear(x, cond, gen, base), torch.bmm(x, w))
    zero = torch.zeros_like(w)
    torch.testing.assert_close(
        ops.generated_linear(x, cond, gen, base, tau=TAU),
        dynamic_linear_ref(x, zero, None, w, None, tau=TAU),
    )


def test_every_output_element_written(backend):
    args = [a.float() for a in make(5, 3, 9, 21, 6)]
    with poisoned_empty():
        y, grads = run(ops.generated_linear, args, TAU)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(g).all() for g in grads)


def test_clip_mask_is_inclusive_at_tau(backend):
    # With C = 1 and cond = 1 each weight is exactly gen + base: |w| == tau passes the
    # gradient (as torch.clamp), |w| > tau blocks it.
    n_in, n_out = 3, 4
    x = make(2, 2, n_in, n_out, 1)[0]
    cond = torch.ones(2, 1, dtype=torch.float64)
    gen = torch.full((n_in * n_out, 1), TAU, dtype=torch.float64)
    gen[0, 0], gen[11, 0] = 1.5 * TAU, -3 * TAU
    base = torch.zeros(n_in, n_out, dtype=torch.float64)
    base[1, 1] = -2 * TAU  # gen + base = -tau: passes
    _, grads = run(ops.generated_linear, [x, cond, gen, base], TAU)
    _, grads_ref = run(generated_linear_ref, [x, cond, gen, base], TAU)
    dgen = grads[2][:, 0]
    assert dgen[0] == 0 and dgen[11] == 0 and dgen[5] != 0
    assert (dgen != 0).sum() == n_in * n_out - 2
    for g, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, gr)


def test_non_contiguous_inputs(backend):
    args = make(4, 3, 6, 10, 5, seed=5, contiguous=False)
    assert not any(a.is_contiguous() for a in args)
    for tau in TAUS:
        y, grads = run(ops.generated_linear, args, tau)
        y_ref, grads_ref = run(generated_linear_ref, args, tau)
        torch.testing.assert_close(y, y_ref)
        for g, gr in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(g, gr)


@pytest.mark.parametrize(
    "shape",
    [
        (0, None, 4, 5, 3),
        (0, 3, 4, 5, 3),
        (3, 0, 4, 5, 3),
        (3, 2, 0, 5, 3),
        (3, 2, 4, 0, 3),
        (3, 2, 4, 5, 0),
    ],
)
def test_zero_size(backend, shape):
    args = make(*shape)
    y, grads = run(ops.generated_linear, args, TAU)
    y_ref, grads_ref = run(generated_linear_ref, args, TAU)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref)
    for g, gr, a in zip(grads, grads_ref, args, strict=True):
        assert g.shape == a.shape
        torch.testing.assert_close(g, gr)


def test_nan_propagates(backend):
    x, cond, gen, base = make(3, 2, 4, 5, 3)
    x[1, 0, 2] = math.nan
    cond[2, 1] = math.nan
    y = ops.generated_linear(x, cond, gen, base, tau=TAU)
    assert torch.isnan(y[1, 0]).all() and not torch.isnan(y[1, 1]).any()
    assert torch.isnan(y[2]).all() and not torch.isnan(y[0]).any()


def test_opcheck():
    if "cpu" not in solid_ext.available_backends():
        pytest.skip("compiled extension not built")
    for shape, tau in [((3, 4, 5, 6, 2), TAU), ((2, 1, 3, 7, 4), None), ((5, 2, 4, 3, 1), 0.0)]:
        args = [a.requires_grad_(True) for a in make(*shape, dtype=torch.float32)]
        torch.library.opcheck(torch.ops.solid_ext.generated_linear, (*args, tau))


def test_gradcheck(backend):
    x, cond, gen, base = make(3, 2, 4, 5, 3, seed=7)
    w = (cond @ gen.t()).view(3, 4, 5) + base
    # The generated weights (this seed) lie away from ±tau, where the clip has no
    # derivative, and on both sides of it.
    assert (w.abs() - TAU).abs().min() > 1e-4
    assert (w.abs() < TAU).any() and (w.abs() > TAU).any()
    leaves = [a.requires_grad_(True) for a in (x, cond, gen, base)]
    for tau in TAUS:
        fn = functools.partial(ops.generated_linear, tau=tau)
        assert torch.autograd.gradcheck(fn, leaves)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(0, 14),
    l=st.one_of(st.none(), st.integers(1, 5)),
    n_in=st.integers(1, 24),
    n_out=st.integers(1, 40),
    c=st.integers(0, 20),
    tau=st.one_of(st.none(), st.floats(0.0, 0.2)),
    seed=st.integers(0, 2**31),
)
def test_fuzz_against_reference(b, l, n_in, n_out, c, tau, seed):
    args = make(b, l, n_in, n_out, c, seed=seed)
    y_ref, grads_ref = run(generated_linear_ref, args, tau)
    for name in CPU_BACKENDS:
        with cpu_backend(name):
            y, grads = run(ops.generated_linear, args, tau)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        for g, gr in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-10)


def test_compile_fullgraph():
    assert_compiles_like_eager(
        functools.partial(ops.generated_linear, tau=TAU), make(4, 3, 8, 6, 5, dtype=torch.float32)
    )


BAD = [
    ("x", lambda a: {**a, "x": a["x"].long()}, "x must be a floating-point"),
    ("x", lambda a: {**a, "x": a["x"][0, 0]}, "x must be (B, N_in) or (B, L, N_in)"),
    ("x", lambda a: {**a, "x": a["x"][..., :2]}, "N_in mismatch"),
    ("cond", lambda a: {**a, "cond": a["cond"][:2]}, "cond must be (B, C)"),
    ("cond", lambda a: {**a, "cond": a["cond"].float()}, "cond has dtype torch.float32"),
    ("gen_weight", lambda a: {**a, "gen_weight": a["gen_weight"][1:]}, "gen_weight must be"),
    ("gen_weight", lambda a: {**a, "gen_weight": a["gen_weight"].t()}, "gen_weight must be"),
    ("base", lambda a: {**a, "base": a["base"][0]}, "base must be (N_in, N_out)"),
    ("tau", lambda a: {**a, "tau": -0.1}, "tau must be a non-negative"),
    ("tau", lambda a: {**a, "tau": "0.1"}, "tau must be a real number"),
]


@pytest.mark.parametrize("name,mutate,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_clearly(backend, name, mutate, msg):
    x, cond, gen, base = make(3, 2, 4, 5, 3)
    a = {"x": x, "cond": cond, "gen_weight": gen, "base": base, "tau": TAU}
    with pytest.raises((ValueError, TypeError)) as err:
        ops.generated_linear(**mutate(a))
    assert msg in str(err.value)
    assert name in str(err.value)


@pytest.mark.parametrize(
    "index,bad,msg",
    [
        (1, lambda t: t[:2], "cond must have shape (B, C)"),
        (2, lambda t: t[:-1], "gen_weight must have shape (N_in*N_out, C)"),
        (3, lambda t: t.float(), "base has dtype"),
        (0, lambda t: t[0], "x must be (B, L, N_in)"),
    ],
)
def test_raw_op_checks_its_arguments(index, bad, msg):
    # torch.ops.solid_ext.generated_linear is public: it checks shapes itself.
    if "cpu" not in solid_ext.available_backends():
        pytest.skip("compiled extension not built")
    args = make(3, 2, 4, 5, 3)
    args[index] = bad(args[index])
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        torch.ops.solid_ext.generated_linear(*args, TAU)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_match_a_float32_computation(dtype):
    args = [a.to(dtype) for a in make(3, 4, 6, 5, 4, seed=8, tau=1.0)]
    grad = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    leaves = [a.clone().requires_grad_(True) for a in args]
    y = ops.generated_linear(*leaves, tau=0.5)
    grads = torch.autograd.grad(y, leaves, grad)
    leaves32 = [a.float().requires_grad_(True) for a in args]
    y32 = generated_linear_ref(*leaves32, tau=0.5)
    grads32 = torch.autograd.grad(y32, leaves32, grad.float())
    tol = {"rtol": 4 * torch.finfo(dtype).eps, "atol": 1e-2}
    assert y.dtype == dtype
    torch.testing.assert_close(y, y32.to(dtype), **tol)
    for g, g32 in zip(grads, grads32, strict=True):
        torch.testing.assert_close(g, g32.to(dtype), **tol)
