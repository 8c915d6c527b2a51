"""Second-order gradients through every differentiable op, on every CPU backend and
kernel variant: a backward asked to build a graph (``create_graph=True``) follows the
op's differentiable formula, so gradgradcheck passes and d(dL/dx)/dw equals the
reference's (it was all zeros before: the fused backward ops have no derivative).
Without ``create_graph`` the fused backward op still runs."""

from __future__ import annotations

import functools

import pytest
import torch

import solid_ext
from solid_ext import ops
from solid_ext.reference import (
    codebook_quantize_ref,
    dynamic_linear_ref,
    generated_linear_ref,
    item_softmax_xent_ref,
)
from solid_ext.testing import (
    codebook_quantize_inputs,
    dynamic_linear_inputs,
    generated_linear_inputs,
)

TAU = 0.01


def _away_from_clip(t: torch.Tensor) -> torch.Tensor:
    """The clip at ±tau has no derivative: keep values away from it."""
    return t.copy_(torch.where((t.abs() - TAU).abs() < 1e-3, t * 0.5, t))


def _dynamic_linear_leaves(seq_len: int | None = 2):
    x, w, b, bw, bb = dynamic_linear_inputs(3, seq_len, 4, 5, seed=7, tau=TAU)
    _away_from_clip(bw), _away_from_clip(bb)
    return [a.requires_grad_(True) for a in (x, w, b, bw, bb)]


def _second_order(fn, leaves, first: int, second: int) -> torch.Tensor:
    """d(sum(dL/d leaves[first]) ) / d leaves[second] with L = sum(fn(*leaves)^2)."""
    out = fn(*leaves)
    out = out[0] if isinstance(out, tuple) else out
    (g,) = torch.autograd.grad(out.pow(2).sum(), leaves[first], create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), leaves[second])
    return gg


def test_dynamic_linear_second_order_equals_the_reference(backend):
    leaves = _dynamic_linear_leaves()
    fused = functools.partial(ops.dynamic_linear, tau=TAU)
    ref = functools.partial(dynamic_linear_ref, tau=TAU)
    got = _second_order(fused, leaves, 0, 1)
    assert got.abs().max() > 0.1  # the bug: exactly zero
    torch.testing.assert_close(got, _second_order(ref, leaves, 0, 1))
    torch.testing.assert_close(_second_order(fused, leaves, 1, 0), _second_order(ref, leaves, 1, 0))


@pytest.mark.parametrize("seq_len", [None, 2])
def test_dynamic_linear_gradgradcheck(backend, seq_len):
    leaves = _dynamic_linear_leaves(seq_len)
    assert torch.autograd.gradgradcheck(lambda *a: ops.dynamic_linear(*a, tau=TAU), leaves)


@pytest.mark.parametrize("tau", [TAU, None])
def test_generated_linear_gradgradcheck(backend, tau):
    args = generated_linear_inputs(3, 2, 4, 5, 3, seed=7, tau=TAU)
    leaves = [a.requires_grad_(True) for a in args]
    assert torch.autograd.gradgradcheck(functools.partial(ops.generated_linear, tau=tau), leaves)
    ref = functools.partial(generated_linear_ref, tau=tau)
    got = _second_order(functools.partial(ops.generated_linear, tau=tau), leaves, 1, 2)
    torch.testing.assert_close(got, _second_order(ref, leaves, 1, 2))


@pytest.mark.parametrize("st_codebook", [False, True])
def test_codebook_quantize_gradgradcheck(backend, st_codebook):
    z, c = codebook_quantize_inputs((5,), 7, 3, seed=11)
    zl, cl = z.requires_grad_(True), c.requires_grad_(True)

    def f(zz, cc):  # sq_dist: the output with a true derivative
        return ops.codebook_quantize(zz, cc, st_codebook)[2]

    assert torch.autograd.gradgradcheck(f, (zl, cl))
    # The straight-through output's second-order terms follow the reference too.
    for fn in (ops.codebook_quantize, codebook_quantize_ref):
        q, _, sq = fn(zl, cl, st_codebook)
        (gz,) = torch.autograd.grad((q * q).sum() + (sq * sq).sum(), zl, create_graph=True)
        (gc,) = torch.autograd.grad(gz.pow(2).sum(), cl)
        if fn is ops.codebook_quantize:
            got = gc
    torch.testing.assert_close(got, gc)


def test_item_softmax_xent_gradgradcheck(backend):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = (torch.randn(11, 4, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    y = torch.randint(0, 11, (3,), generator=g)
    assert torch.autograd.gradgradcheck(
        lambda a, b: ops.item_softmax_xent(a, b, y, 0.2, chunk=4), (h, t)
    )

    def formula(a, b):
        logits = a @ b.T  # item_softmax_xent_ref builds no graph: the same value here
        return torch.nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.2)

    torch.testing.assert_close(
        ops.item_softmax_xent(h, t, y, 0.2).detach(), item_softmax_xent_ref(h, t, y, 0.2)
    )
    fused = lambda a, b: ops.item_softmax_xent(a, b, y, 0.2, chunk=4)  # noqa: E731
    torch.testing.assert_close(
        _second_order(fused, [h, t], 0, 1), _second_order(formula, [h, t], 0, 1)
    )


@pytest.mark.skipif("cpu" not in solid_ext.available_backends(), reason="no compiled kernels")
def test_first_order_backward_still_runs_the_fused_op(monkeypatch):
    """The formula is for create_graph only: a plain backward never calls it."""
    import solid_ext._opmeta as meta

    def refuse(*args, **kwargs):
        raise AssertionError("the formula ran in a first-order backward")

    leaves = _dynamic_linear_leaves()
    monkeypatch.setattr(meta.reference, "dynamic_linear_ref", refuse)
    with solid_ext.use_backend("cpu"):
        ops.dynamic_linear(*leaves, tau=TAU).sum().backward()
    assert leaves[1].grad is not None and leaves[1].grad.abs().max() > 0
    with solid_ext.use_backend("cpu"), pytest.raises(AssertionError, match="formula ran"):
        y = ops.dynamic_linear(*leaves, tau=TAU)
        torch.autograd.grad(y.sum(), leaves[0], create_graph=True)
