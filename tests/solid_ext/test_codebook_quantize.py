from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solid_ext
from solid_ext import ops
from solid_ext.reference import codebook_quantize_ref
from solid_ext.testing import codebook_quantize_inputs

from .conftest import CPU_BACKENDS, cpu_backend, poisoned_empty

# (z, codebook): z (*lead, D), codebook (K, D), float64 by default.
make = codebook_quantize_inputs


def true_sq_dist(z, c):
    """Exact (M, K) squared distances in float64 by broadcasting: small sizes only."""
    z2 = z.reshape(-1, z.shape[-1]).double()
    return ((z2[:, None, :] - c.double()[None]) ** 2).sum(-1)


def run(fn, z, c, st_codebook=False, seed=1):
    zl, cl = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
    q, idx, sq = fn(zl, cl, st_codebook)
    g = torch.Generator().manual_seed(seed)
    gq = torch.randn(q.shape, generator=g, dtype=torch.float64).to(q.dtype)
    gs = torch.randn(sq.shape, generator=g, dtype=torch.float64).to(sq.dtype)
    torch.autograd.backward([q, sq], [gq, gs])
    return q.detach(), idx, sq.detach(), zl.grad, cl.grad


SHAPES = [
    ((1,), 1, 1),
    ((7,), 3, 5),
    ((33,), 64, 32),
    ((4, 9), 45, 13),
    ((130,), 257, 64),
    ((2, 3, 5), 1000, 8),
    ((65,), 31, 17),
]


@pytest.mark.parametrize("lead,k,d", SHAPES)
@pytest.mark.parametrize("st_codebook", [False, True])
def test_float64_matches_reference(backend, lead, k, d, st_codebook):
    z, c = make(lead, k, d)
    out = run(ops.codebook_quantize, z, c, st_codebook)
    ref = run(codebook_quantize_ref, z, c, st_codebook)
    assert out[1].dtype == torch.long and out[1].shape == lead
    assert torch.equal(out[1], ref[1])
    assert torch.equal(out[0], c[out[1]])  # quantized is exactly the chosen code
    for a, b in zip(out[2:], ref[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # and the index really is the exact argmin
    dist = true_sq_dist(z, c)
    torch.testing.assert_close(out[2].reshape(-1), dist.min(1).values, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lead,k,d", SHAPES)
def test_float32_picks_a_true_nearest_code(backend, lead, k, d):
    z, c = make(lead, k, d, dtype=torch.float32, seed=4)
    q, idx, sq, gz, gc = run(ops.codebook_quantize, z, c)
    dist = true_sq_dist(z, c)
    best = dist.min(1).values
    chosen = dist.gather(1, idx.reshape(-1, 1)).squeeze(1)
    # Near-ties may resolve either way in float32, but only within rounding error.
    assert (chosen - best <= 1e-5 * (1 + best)).all()
    torch.testing.assert_close(sq.reshape(-1).double(), chosen, rtol=1e-5, atol=1e-5)
    assert torch.equal(q, c[idx])
    # gradients given these indices match the float64 formula
    z64, c64 = z.double(), c.double()
    ref = run(codebook_quantize_ref, z64, c64)
    same = (idx == ref[1]).reshape(-1)
    torch.testing.assert_close(
        gz.double().reshape(-1, d)[same], ref[3].reshape(-1, d)[same], rtol=1e-5, atol=1e-5
    )


def test_ties_pick_lowest_index(backend):
    # Integer-valued data: every distance is exact, so ties are real ties.
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    c = torch.cat([c, c.repeat(20, 1)])  # spans several code tiles
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0], [-5.0, 0.0]])
    for dtype in (torch.float32, torch.float64):
        _, idx, sq = ops.codebook_quantize(z.to(dtype), c.to(dtype))
        assert idx.tolist() == [0, 1, 0, 4]
        assert sq.tolist() == [1.0, 4.0, 1.0, 16.0]


def test_straight_through_gradients(backend):
    z, c = make((6,), 4, 3)
    for st_codebook in (False, True):
        _, idx, _, gz, gc = run(ops.codebook_quantize, z, c, st_codebook, seed=2)
        # recompute by hand: gq passes to z; gs * 2(z - c) to z and -2(z - c) to c
        g = torch.Generator().manual_seed(2)
        gq = torch.randn(6, 3, generator=g, dtype=torch.float64)
        gs = torch.randn(6, generator=g, dtype=torch.float64)
        diff = z - c[idx]
        torch.testing.assert_close(gz, gq + 2 * gs[:, None] * diff)
        exp_c = torch.zeros_like(c).index_add_(0, idx, -2 * gs[:, None] * diff)
        if st_codebook:
            exp_c.index_add_(0, idx, gq)
        torch.testing.assert_close(gc, exp_c)


def test_every_output_element_written(backend):
    z, c = make((77,), 300, 19, dtype=torch.float32)
    with poisoned_empty():
        out = run(ops.codebook_quantize, z, c, True)
    for t in (out[0], out[2], out[3], out[4]):
        assert torch.isfinite(t).all()
    assert ((out[1] >= 0) & (out[1] < 300)).all()


def test_non_contiguous(backend):
    z, c = make((20,), 30, 12)
    zt, ct = make((20,), 30, 12, contiguous=False)
    assert not zt.is_contiguous() and not ct.is_contiguous()
    out = run(ops.codebook_quantize, zt, ct)
    ref = run(codebook_quantize_ref, z, c)
    assert torch.equal(out[1], ref[1])
    for a, b in zip(out[2:], ref[2:], strict=True):
        torch.testing.assert_close(a, b)


def test_zero_rows(backend):
    z, c = make((0,), 5, 4)
    q, idx, sq, gz, gc = run(ops.codebook_quantize, z, c)
    assert q.shape == (0, 4) and idx.shape == (0,) and sq.shape == (0,)
    assert gz.shape == (0, 4) and torch.equal(gc, torch.zeros_like(c))


def test_nan_semantics(backend):
    z, c = make((5,), 6, 3)
    z[1, 2] = math.nan
    q, idx, sq = ops.codebook_quantize(z, c)
    assert idx[1] == 0 and math.isnan(sq[1]) and torch.isfinite(sq[[0, 2, 3, 4]]).all()
    c[3, 0] = math.nan
    q, idx, sq = ops.codebook_quantize(z, c)
    _, idx_ref, _ = codebook_quantize_ref(z, c)
    assert torch.equal(idx, idx_ref)
    # a NaN code wins every finite row; the NaN row still takes index 0
    assert idx.tolist() == [3, 0, 3, 3, 3] and torch.isnan(sq).all()


def test_opcheck():
    if "cpu" not in solid_ext.available_backends():
        pytest.skip("compiled extension not built")
    for m, k, d, st_codebook in [(9, 4, 3, False), (17, 33, 8, True), (1, 1, 1, False)]:
        z, c = make((m,), k, d, dtype=torch.float32)
        torch.library.opcheck(
            torch.ops.solid_ext.codebook_quantize,
            (z.requires_grad_(True), c.requires_grad_(True), st_codebook),
        )


@pytest.mark.parametrize("st_codebook", [False, True])
def test_gradcheck(backend, st_codebook):
    z, c = make((5,), 7, 3, seed=11)
    zl, cl = z.requires_grad_(True), c.requires_grad_(True)

    # Only sq_dist has a true derivative: quantized's straight-through gradient is a
    # deliberate surrogate (checked in test_straight_through_gradients).
    def f(zz, cc):
        return ops.codebook_quantize(zz, cc, st_codebook)[2]

    assert torch.autograd.gradcheck(f, (zl, cl))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 90),
    k=st.integers(1, 300),
    d=st.integers(1, 70),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_fuzz_against_reference(m, k, d, scale, seed):
    z, c = make((m,), k, d, seed=seed, scale=scale)
    ref = run(codebook_quantize_ref, z, c, True)
    for name in CPU_BACKENDS:
        with cpu_backend(name):
            out = run(ops.codebook_quantize, z, c, True)
        assert torch.equal(out[1], ref[1])
        for a, b in zip(out[2:], ref[2:], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * scale * scale)


def test_compile_fullgraph():
    z, c = make((40,), 16, 8, dtype=torch.float32)

    def f(zz, cc):
        q, idx, sq = ops.codebook_quantize(zz, cc, True)
        return q.sin().sum() + sq.mean(), idx

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = [z.clone().requires_grad_(True), c.clone().requires_grad_(True)]
    b = [z.clone().requires_grad_(True), c.clone().requires_grad_(True)]
    la, ia = f(*a)
    lb, ib = compiled(*b)
    assert torch.equal(ia, ib)
    la.backward()
    lb.backward()
    torch.testing.assert_close(a[0].grad, b[0].grad)
    torch.testing.assert_close(a[1].grad, b[1].grad)


BAD = [
    ("z", lambda z, c: (z.long(), c), "z must be a floating-point"),
    ("codebook", lambda z, c: (z, c[0]), "codebook must be (K, D)"),
    ("codebook", lambda z, c: (z, c[:0]), "codebook is empty"),
    ("codebook", lambda z, c: (z, c[:, :2]), "D mismatch"),
    ("codebook", lambda z, c: (z, c.float()), "codebook has dtype torch.float32"),
    ("codebook", lambda z, c: (z, c.to("meta")), "codebook is on meta"),
    ("z", lambda z, c: (z.sum(), c), "z must have a trailing feature dim"),
]


@pytest.mark.parametrize("name,mutate,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_clearly(backend, name, mutate, msg):
    z, c = make((4,), 5, 3)
    with pytest.raises((ValueError, TypeError)) as err:
        ops.codebook_quantize(*mutate(z, c))
    assert msg in str(err.value) and name in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_infinite_inputs_follow_the_reference(backend, dtype):
    # Non-finite inputs take the search's NaN-aware path (finite ones skip it):
    # infinite scores and the NaNs of inf * 0 must resolve as torch.argmin does.
    z, c = make((40,), 70, 9, dtype=dtype, seed=5)
    c[::7, 4] = 0.0  # inf * 0 = NaN for these codes
    z[3, 2] = math.inf
    z[11, 4] = -math.inf
    z[20] = math.inf
    c[50, 1] = -math.inf
    _, idx, _ = ops.codebook_quantize(z, c)
    _, idx_ref, _ = codebook_quantize_ref(z, c)
    assert torch.equal(idx, idx_ref)


def _infinite_rows(dtype):
    z, c = make((12,), 9, 4, dtype=dtype, seed=6)
    z[2, 1] = math.inf
    z[5, 3] = -math.inf
    z[8] = math.inf
    return z, c


@pytest.mark.parametrize("st_codebook", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_infinite_inputs_quantized_and_straight_through_gradient(backend, dtype, st_codebook):
    # The contract: quantized is exactly codebook[indices] (never NaN), and with only
    # quantized in the loss the gradient to z is the upstream gradient unchanged, also
    # for an infinite z: sq_dist's zero gradient contributes exactly zero, not 0 * inf.
    z, c = _infinite_rows(dtype)
    zl, cl = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
    q, idx, sq = ops.codebook_quantize(zl, cl, st_codebook)
    assert torch.equal(q.detach(), c[idx])
    assert torch.isinf(sq[[2, 5, 8]]).all()
    gq = torch.randn(q.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    q.backward(gq)
    assert torch.equal(zl.grad, gq)
    expect_c = torch.zeros_like(c)
    if st_codebook:
        expect_c.index_add_(0, idx, gq)
    if cl.grad is not None:
        torch.testing.assert_close(cl.grad, expect_c)
    else:
        assert not st_codebook


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_infinite_inputs_gradients_agree_with_the_reference(backend, dtype):
    # With a gradient on sq_dist too, an infinite z gives infinite gradients (2 g (z - C)),
    # the same in every backend; a zero sq_dist gradient still contributes nothing.
    z, c = _infinite_rows(dtype)
    out = run(ops.codebook_quantize, z, c, True)
    ref = run(codebook_quantize_ref, z, c, True)
    assert torch.equal(out[1], ref[1])
    assert torch.equal(out[0], c[out[1]]) and torch.equal(ref[0], c[ref[1]])
    for a, b in zip(out[2:], ref[2:], strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)
    assert torch.isinf(out[3][[2, 5, 8]]).any()
    for fn in (ops.codebook_quantize, codebook_quantize_ref):
        zl, cl = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
        q, _, sq = fn(zl, cl, True)
        (q.sum() + 0.0 * sq.sum()).backward()
        assert torch.equal(zl.grad, torch.ones_like(z))
        assert torch.isfinite(cl.grad).all()


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, 1.0, torch.tensor(True)])
def test_straight_through_flag_must_be_a_bool(backend, bad):
    z, c = make((4,), 5, 3)
    for fn in (ops.codebook_quantize, codebook_quantize_ref):
        with pytest.raises(TypeError, match="straight_through_codebook must be a bool"):
            fn(z, c, bad)


@pytest.mark.parametrize("lead", [(4,), (2, 3), (0,)])
def test_zero_dim_codes(backend, lead):
    # D = 0: every distance is 0, so the first code wins (ties go to the lowest index);
    # quantized and the z gradient are empty and the codebook gradient is (K, 0).
    z, c = make(lead, 5, 0)
    q, idx, sq, gz, gc = run(ops.codebook_quantize, z, c, True)
    assert q.shape == (*lead, 0) and idx.shape == lead and sq.shape == lead
    assert (idx == 0).all() and (sq == 0).all()
    assert gz.shape == (*lead, 0) and gc.shape == (5, 0)
    ref = run(codebook_quantize_ref, z, c, True)
    assert torch.equal(ref[1], idx) and torch.equal(ref[2], sq)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_match_a_float32_computation(dtype):
    # Large but valid half values: ||C_k||^2 alone overflows float16, so a search in
    # float16 saw only infinities. Half inputs are computed in float32 internally.
    g = torch.Generator().manual_seed(0)
    c = (torch.randn(6, 32, generator=g) * 150).to(dtype)
    z = (c.float()[torch.arange(10) % 6] + torch.randn(10, 32, generator=g)).to(dtype)
    zl, cl = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
    q, idx, sq = ops.codebook_quantize(zl, cl, True)
    z32, c32 = z.float().requires_grad_(True), c.float().requires_grad_(True)
    q32, idx32, sq32 = codebook_quantize_ref(z32, c32, True)
    assert torch.equal(idx, idx32) and torch.equal(idx, torch.arange(10) % 6)
    assert q.dtype == dtype and torch.equal(q.detach(), c[idx])
    assert sq.dtype == dtype and torch.equal(sq.detach(), sq32.detach().to(dtype))
    (q.sum() + sq.sum()).backward()
    (q32.sum() + sq32.sum()).backward()
    assert torch.equal(zl.grad, z32.grad.to(dtype))
    # Two rows per code: quantized's straight-through part is summed in the input dtype.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(cl.grad, c32.grad.to(dtype), rtol=4 * eps, atol=1e-5)
