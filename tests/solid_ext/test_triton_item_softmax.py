"""Triton ``item_softmax_xent`` vs the reference, on CPU tensors in the interpreter.

Same conventions as test_triton.py: TRITON_INTERPRET=1 must be set before ``triton``
is imported, so an ordinary run deselects every case here and test_triton.py's
``test_interpreter_suite`` runs this file with it in one TRITON_INTERPRET=1
subprocess. Shapes are deliberately not block multiples (N = 1, 7, 300,
1000; B odd; D below, at and just past the dot minimum and the 32 tile), and every
output is allocated under ``poisoned_empty`` (NaN-filled), so an element a kernel
fails to write shows up as NaN.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

pytest.importorskip("triton")

import solid_ext  # noqa: E402
from solid_ext import triton_kernels as tk  # noqa: E402
from solid_ext.reference import item_softmax_xent_ref  # noqa: E402
from solid_ext.testing import non_contiguous  # noqa: E402

from .conftest import assert_close_to_truth, poisoned_empty  # noqa: E402

IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
interp = pytest.mark.triton_interpreter
CHUNK = 4096
# The interpreter run must pass at least this many cases (a vacuous-pass guard).
MIN_CASES = 35


def _inputs(B, N, D, dtype, seed, scale=1.0, contiguous=True):
    """Fresh random (hidden, table, target); target hits the first and the last item."""
    g = torch.Generator().manual_seed(seed)
    hidden = (scale * torch.randn(B, D, generator=g, dtype=torch.float64)).to(dtype)
    table = torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)
    target = torch.randint(0, N, (B,), generator=g)
    target[0] = 0
    target[-1] = N - 1
    if not contiguous:
        hidden = non_contiguous(hidden)
    return hidden, table, target


def _tol(dtype):
    return {
        torch.float64: {"atol": 1e-12, "rtol": 1e-12},
        torch.float16: {"atol": 2e-2, "rtol": 1e-2},
        torch.bfloat16: {"atol": 1e-1, "rtol": 2e-2},
    }[dtype]


def _ref(hidden, table, target, ls, need, g, dtype):
    """(loss, lse, *grads of need) of the reference, computed in ``dtype``."""
    leaves = [
        t.detach().to(dtype).requires_grad_(n) for t, n in zip((hidden, table), need, strict=True)
    ]
    loss = item_softmax_xent_ref(*leaves, target, ls)
    grads = torch.autograd.grad(loss, [t for t in leaves if t.requires_grad], g.to(dtype))
    lse = torch.logsumexp(leaves[0].detach() @ leaves[1].detach().T, dim=1)
    return [loss.detach(), lse, *grads]


def _check(B, N, D, dtype, ls, seed, scale=1.0, contiguous=True, need=(True, True), rel=0.0):
    """Loss, lse and the gradients of ``need`` (hidden, table) against autograd through
    the reference on the same values: float64 to 1e-12; float32 within 4x PyTorch's own
    float32 error against the float64 truth, plus 16 ulps and ``rel`` times the output's
    largest magnitude; float16/bfloat16 against the float32 reference (the truth they are
    rounded from)."""
    hidden, table, target = _inputs(B, N, D, dtype, seed, scale, contiguous)
    leaves = [t.clone().requires_grad_(n) for t, n in zip((hidden, table), need, strict=True)]
    if not contiguous:
        assert not leaves[0].is_contiguous()
    g = torch.randn(B, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    with poisoned_empty():
        loss, lse = tk.item_softmax_xent(leaves[0], leaves[1], target, ls, CHUNK)
        wanted = [t for t, n in zip(leaves, need, strict=True) if n]
        grads = torch.autograd.grad(loss, wanted, g)
    assert loss.shape == (B,) and lse.shape == (B,)
    got = [loss.detach(), lse, *grads]
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else torch.float64
    want = _ref(hidden, table, target, ls, need, g, ref_dtype)
    ref32 = _ref(hidden, table, target, ls, need, g, dtype) if dtype == torch.float32 else None
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == dtype
        assert not torch.isnan(a).any(), "NaN in output: an element was not written"
        if ref32 is None:
            torch.testing.assert_close(a.to(ref_dtype), b, **_tol(dtype))
        else:
            # Plus 16 float32 ulps of the largest magnitude: PyTorch's own float32 error
            # (the bound's scale) depends on the CPU's BLAS kernel, about half as large
            # with AVX-512 as with AVX2, where 4x it failed by 1.4x (8.3e-6 vs 6.1e-6).
            floor = 16 * torch.finfo(torch.float32).eps * b.abs().max().item()
            assert_close_to_truth(a, ref32[i], b, atol=1e-6 + floor + rel * b.abs().max().item())


# (B, N, D): a single item and row below the dot minimum; D at the dot minimum and
# one 32 tile; D just past it with N past several item tiles; many items with a
# broadcast (small-D) tile.
SHAPES = [(1, 1, 5), (3, 7, 32), (17, 300, 33), (3, 1000, 5)]


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@interp
def test_matches_reference(dtype, shape, ls):
    B, N, D = shape
    _check(B, N, D, dtype, ls, seed=B * 7919 + N * 31 + D + int(ls * 10))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@interp
def test_noncontiguous_hidden(dtype):
    _check(17, 70, 33, dtype, 0.1, seed=11, contiguous=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("D", [5, 33])
@interp
def test_half(dtype, D):
    # Also covers the backward's float32 recompute of the (rounded) lse.
    _check(17, 300, D, dtype, 0.1, seed=D, scale=0.3)


@pytest.mark.parametrize("need", [(True, False), (False, True)], ids=["dhidden", "dtable"])
@interp
def test_partial_grads(need):
    _check(3, 70, 32, torch.float32, 0.1, seed=5, need=need)


@pytest.mark.parametrize("D", [5, 130])
@interp
def test_large_logits_are_stable(D):
    # Logits in the hundreds: exp would overflow without the running max. D = 130
    # contracts D in several chunks and splits the backward into D slices. A float32
    # logit near 100 is off by ~1e-5, and the backward recomputes the logits (in
    # another summation order in the interpreter, where PyTorch reuses its own), so
    # each softmax value carries ~1e-5 relative error: allowed at 5e-5 of the output.
    _check(3, 300, D, torch.float32, 0.1, seed=3, scale=30.0 / math.sqrt(D), rel=5e-5)


@interp
def test_label_smoothing_one():
    _check(3, 7, 5, torch.float64, 1.0, seed=2)


@interp
def test_backward_is_deterministic():
    hidden, table, target = _inputs(17, 300, 32, torch.float32, seed=9)
    g = torch.randn(17)
    loss, lse = tk.item_softmax_xent(hidden, table, target, 0.1, CHUNK)
    op = torch.ops.solid_ext_triton.item_softmax_xent_backward
    a = op(g, hidden, table, target, lse, 0.1, CHUNK, True, True)
    b = op(g, hidden, table, target, lse, 0.1, CHUNK, True, True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Unneeded gradients are 0-element.
    dh, dt = op(g, hidden, table, target, lse, 0.1, CHUNK, False, True)
    assert dh.numel() == 0 and torch.equal(dt, a[1])
    dh, dt = op(g, hidden, table, target, lse, 0.1, CHUNK, True, False)
    assert dt.numel() == 0 and torch.equal(dh, a[0])


@interp
def test_chunk_is_only_a_hint():
    hidden, table, target = _inputs(3, 70, 5, torch.float64, seed=4)
    a = tk.item_softmax_xent(hidden, table, target, 0.1, 1)
    b = tk.item_softmax_xent(hidden, table, target, 0.1, CHUNK)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@interp
def test_empty_batch_and_zero_dim():
    table = torch.randn(7, 4, requires_grad=True)
    hidden = torch.randn(0, 4, requires_grad=True)
    loss, lse = tk.item_softmax_xent(hidden, table, torch.zeros(0, dtype=torch.long), 0.1, CHUNK)
    assert loss.shape == (0,) and lse.shape == (0,)
    (dt,) = torch.autograd.grad(loss.sum(), table)
    assert torch.equal(dt, torch.zeros_like(table))
    # D = 0: every logit is 0, so each loss is log N and the gradients are empty.
    hidden, table = torch.randn(3, 0, requires_grad=True), torch.randn(7, 0, requires_grad=True)
    target = torch.tensor([0, 3, 6])
    loss, lse = tk.item_softmax_xent(hidden, table, target, 0.1, CHUNK)
    torch.testing.assert_close(loss.detach(), torch.full((3,), math.log(7)))
    torch.testing.assert_close(loss.detach(), item_softmax_xent_ref(hidden, table, target, 0.1))
    dh, dt = torch.autograd.grad(loss.sum(), (hidden, table))
    assert dh.shape == (3, 0) and dt.shape == (7, 0)


@interp
def test_through_public_op(monkeypatch):
    calls = []
    real = tk.item_softmax_xent

    def spy(*args):
        calls.append(args[3:])
        return real(*args)

    monkeypatch.setattr(tk, "item_softmax_xent", spy)
    hidden, table, target = _inputs(3, 7, 32, torch.float32, seed=8)
    hl, tl_ = hidden.clone().requires_grad_(True), table.clone().requires_grad_(True)
    with solid_ext.use_backend("triton"):
        loss = solid_ext.ops.item_softmax_xent(hl, tl_, target, label_smoothing=0.1, chunk=4)
    assert loss.shape == (3,) and calls == [(0.1, 4)]
    hr, tr = hidden.clone().requires_grad_(True), table.clone().requires_grad_(True)
    ref = item_softmax_xent_ref(hr, tr, target, 0.1)
    torch.testing.assert_close(loss, ref)
    grads = torch.autograd.grad(loss.sum(), (hl, tl_))
    grads_ref = torch.autograd.grad(ref.sum(), (hr, tr))
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("ls", [0.0, 0.1])
@interp
def test_opcheck(ls):
    hidden, table, target = _inputs(3, 7, 5, torch.float32, seed=6)
    args = (hidden.requires_grad_(True), table.requires_grad_(True), target, ls, CHUNK)
    torch.library.opcheck(torch.ops.solid_ext_triton.item_softmax_xent, args)


@interp
def test_compiles_like_eager():
    hidden, table, target = _inputs(3, 7, 5, torch.float32, seed=12)

    def f(h, t):
        return tk.item_softmax_xent(h, t, target, 0.1, CHUNK)[0].square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaves = [hidden.clone().requires_grad_(True), table.clone().requires_grad_(True)]
    leaves_c = [hidden.clone().requires_grad_(True), table.clone().requires_grad_(True)]
    f(*leaves).backward()
    compiled(*leaves_c).backward()
    for a, c in zip(leaves, leaves_c, strict=True):
        torch.testing.assert_close(a.grad, c.grad)


@interp
def test_rejects_bad_arguments():
    hidden, table, target = _inputs(3, 7, 5, torch.float32, seed=1)
    op = tk.item_softmax_xent
    bad = [
        ("hidden", (hidden[0], table, target, 0.0, CHUNK)),
        ("hidden", (hidden.long(), table, target, 0.0, CHUNK)),
        ("table", (hidden, table[:, :4], target, 0.0, CHUNK)),
        ("table", (hidden, table[:0], target[:0] * 0, 0.0, CHUNK)),
        ("table", (hidden, table.double(), target, 0.0, CHUNK)),
        ("target", (hidden, table, target.int(), 0.0, CHUNK)),
        ("target", (hidden, table, target[:2], 0.0, CHUNK)),
        ("target", (hidden, table, torch.tensor([0, 7, 1]), 0.0, CHUNK)),
        ("target", (hidden, table, torch.tensor([0, -1, 1]), 0.0, CHUNK)),
        ("label_smoothing", (hidden, table, target, 1.5, CHUNK)),
        ("label_smoothing", (hidden, table, target, -0.1, CHUNK)),
        ("label_smoothing", (hidden, table, target, float("nan"), CHUNK)),
        ("chunk", (hidden, table, target, 0.0, 0)),
    ]
    for name, args in bad:
        with pytest.raises((ValueError, TypeError, IndexError), match=rf"\b{name}\b"):
            op(*args)
    loss, lse = op(hidden, table, target, 0.1, CHUNK)
    bwd = torch.ops.solid_ext_triton.item_softmax_xent_backward
    g = torch.ones(3)
    for name, args in [
        ("grad_loss", (g[:2], hidden, table, target, lse, 0.1, CHUNK, True, True)),
        ("grad_loss", (g.double(), hidden, table, target, lse, 0.1, CHUNK, True, True)),
        ("lse", (g, hidden, table, target, lse[:2], 0.1, CHUNK, True, True)),
        ("target", (g, hidden, table, torch.tensor([0, 7, 1]), lse, 0.1, CHUNK, True, True)),
        ("table", (g, hidden, table[:, :4], target, lse, 0.1, CHUNK, True, True)),
    ]:
        with pytest.raises((ValueError, TypeError, IndexError), match=rf"\b{name}\b"):
            bwd(*args)
