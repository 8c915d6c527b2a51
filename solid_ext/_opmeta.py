"""Fake (meta) kernels and autograd formulas shared by every backend's op registration.

The compiled ops (``solid_ext::*``, registered in :mod:`solid_ext.ops`) and the Triton
ops (``solid_ext_triton::*``, in :mod:`solid_ext.triton_kernels._ops`) have the same
schemas and 0-element conventions (``csrc/ops.cpp``): one definition of each shape
rule and each backward formula serves both, parameterised by the backward op to call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import reference


def dynamic_linear_fake(x, weight, bias, branch_weight, branch_bias, tau) -> Tensor:
    """(B, L, N_in), (B, N_in, N_out) -> (B, L, N_out)."""
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[2]))


def dynamic_linear_backward_fake(
    grad, x, weight, branch_weight, branch_bias, tau, need_dx, need_dw, need_dbw
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbranch_weight, dbias, dbranch_bias)``; unneeded ones 0-element."""
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    dw = torch.empty_like(weight) if need_dw else weight.new_empty(0)
    has_bw = need_dbw and branch_weight is not None
    dbw = torch.empty_like(weight) if has_bw else weight.new_empty(0)
    db = grad.new_empty((grad.shape[0], grad.shape[2]))
    dbb = torch.empty_like(db) if branch_bias is not None else grad.new_empty(0)
    return dx, dw, dbw, db, dbb


def generated_linear_fake(x, cond, gen_weight, base, tau) -> Tensor:
    """(B, L, N_in), base (N_in, N_out) -> (B, L, N_out)."""
    return x.new_empty((x.shape[0], x.shape[1], base.shape[1]))


def generated_linear_backward_fake(
    grad, x, cond, gen_weight, base, tau, need_dx, need_dcond, need_dgen, need_dbase
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dcond, dgen_weight, dbase)``; unneeded ones 0-element."""
    return tuple(
        torch.empty_like(t) if need else t.new_empty(0)
        for t, need in (
            (x, need_dx),
            (cond, need_dcond),
            (gen_weight, need_dgen),
            (base, need_dbase),
        )
    )


def codebook_quantize_fake(z, codebook, straight_through_codebook) -> tuple[Tensor, ...]:
    """(M, D), (K, D) -> quantized (M, D), sq_dist (M,), indices (M,) int64."""
    m = z.shape[0]
    return z.new_empty((m, z.shape[1])), z.new_empty((m,)), z.new_empty((m,), dtype=torch.long)


def codebook_quantize_backward_fake(
    grad_q, grad_sq, z, codebook, indices, straight_through_codebook
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(z), torch.empty_like(codebook)


def _formula_grads(
    formula: Callable[[], Tensor | tuple[Tensor, ...]],
    grads: tuple[Tensor | None, ...],
    inputs: tuple[Tensor | None, ...],
    need: tuple[bool, ...],
) -> list[Tensor | None]:
    """The gradients of ``formula()`` (the op's pure-PyTorch formula over ``inputs``) for
    the inputs ``need`` marks, as a graph of differentiable ops.

    An op's backward runs its fused backward op, which has no derivative of its own. When
    autograd asks for a graph of the backward (``create_graph=True``: a second-order
    gradient, gradgradcheck, MAML-style inner loops) grad mode is on inside it, and the
    backward follows this formula instead: exact second-order gradients at the
    reference's speed. torch.compile traces the backward with grad mode off: the fused
    op stays.
    """
    wrt = [x for x, n in zip(inputs, need, strict=True) if n and x is not None]
    with torch.enable_grad():
        outs = formula()
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None and o.requires_grad]
    got = iter(
        torch.autograd.grad(
            [o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True, allow_unused=True
        )
        if pairs and wrt
        else [None] * len(wrt)
    )
    out: list[Tensor | None] = []
    for x, n in zip(inputs, need, strict=True):
        if n and x is not None:
            g = next(got)
            out.append(torch.zeros_like(x) if g is None else g)
        else:
            out.append(None)
    return out


def dynamic_linear_autograd(backward_op: Callable[..., Any]) -> tuple[Callable, Callable]:
    """``(backward, setup_context)`` for a dynamic_linear op whose backward is
    ``backward_op`` (schema of ``dynamic_linear_backward``)."""

    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, branch_weight, branch_bias, tau = inputs
        ctx.save_for_backward(x, weight, bias, branch_weight, branch_bias)
        ctx.tau = tau
        ctx.has_bias = bias is not None

    def backward(ctx, grad):
        x, weight, bias, branch_weight, branch_bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: see _formula_grads
            inputs = (x, weight, bias, branch_weight, branch_bias)
            return (
                *_formula_grads(
                    lambda: reference.dynamic_linear_ref(*inputs, tau=ctx.tau),
                    (grad,),
                    inputs,
                    need[:5],
                ),
                None,
            )
        dx, dw, dbw, db, dbb = backward_op(
            grad, x, weight, branch_weight, branch_bias, ctx.tau, need[0], need[1], need[3]
        )
        return (
            dx if need[0] else None,
            dw if need[1] else None,
            db if ctx.has_bias and need[2] else None,
            dbw if branch_weight is not None and need[3] else None,
            dbb if branch_bias is not None and need[4] else None,
            None,
        )

    return backward, setup_context


def generated_linear_autograd(backward_op: Callable[..., Any]) -> tuple[Callable, Callable]:
    """``(backward, setup_context)`` for a generated_linear op whose backward is
    ``backward_op`` (schema of ``generated_linear_backward``)."""

    def setup_context(ctx, inputs, output) -> None:
        x, cond, gen_weight, base, tau = inputs
        ctx.save_for_backward(x, cond, gen_weight, base)
        ctx.tau = tau

    def backward(ctx, grad):
        x, cond, gen_weight, base = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: see _formula_grads
            inputs = (x, cond, gen_weight, base)
            formula = lambda: reference.generated_linear_ref(*inputs, tau=ctx.tau)  # noqa: E731
            return (*_formula_grads(formula, (grad,), inputs, need[:4]), None)
        grads = backward_op(grad, x, cond, gen_weight, base, ctx.tau, *need[:4])
        return (*(g if n else None for g, n in zip(grads, need[:4], strict=True)), None)

    return backward, setup_context


def codebook_quantize_autograd(backward_op: Callable[..., Any]) -> tuple[Callable, Callable]:
    """``(backward, setup_context)`` for a codebook_quantize op whose backward is
    ``backward_op`` (schema of ``codebook_quantize_backward``)."""

    def setup_context(ctx, inputs, output) -> None:
        z, codebook, st = inputs
        ctx.mark_non_differentiable(output[2])
        ctx.save_for_backward(z, codebook, output[2])
        ctx.st = st

    def backward(ctx, grad_q, grad_sq, _grad_idx):
        z, codebook, idx = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: see _formula_grads
            gz, gc = _formula_grads(
                lambda: reference.codebook_quantize_at(z, codebook, idx, ctx.st),
                (grad_q, grad_sq),
                (z, codebook),
                ctx.needs_input_grad[:2],
            )
            return gz, gc, None
        gz, gc = backward_op(grad_q, grad_sq, z, codebook, idx, ctx.st)
        return gz, gc, None

    return backward, setup_context


def sparse_row_update_fake(
    weight, state1, state2, indices, grad, kind, lr, beta1, beta2, eps, weight_decay, step
) -> None:
    """In place on weight, state1 and state2: nothing is returned."""
    return None


def item_softmax_xent_fake(hidden, table, target, label_smoothing, chunk) -> tuple[Tensor, Tensor]:
    """hidden (B, D), table (N, D) -> (loss (B,), lse (B,)): lse is each row's
    log-sum-exp over the N logits, kept for the backward."""
    b = hidden.shape[0]
    return hidden.new_empty((b,)), hidden.new_empty((b,))


def item_softmax_xent_backward_fake(
    grad_loss, hidden, table, target, lse, label_smoothing, chunk, need_dhidden, need_dtable
) -> tuple[Tensor, Tensor]:
    """``(dhidden, dtable)``; an unneeded one 0-element."""
    dh = torch.empty_like(hidden) if need_dhidden else hidden.new_empty(0)
    dt = torch.empty_like(table) if need_dtable else table.new_empty(0)
    return dh, dt


def item_softmax_xent_autograd(backward_op: Callable[..., Any]) -> tuple[Callable, Callable]:
    """``(backward, setup_context)`` for an item_softmax_xent op whose backward is
    ``backward_op`` (schema of ``item_softmax_xent_backward``)."""

    def setup_context(ctx, inputs, output) -> None:
        hidden, table, target, label_smoothing, chunk = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(hidden, table, target, output[1])
        ctx.label_smoothing, ctx.chunk = label_smoothing, chunk

    def backward(ctx, grad_loss, _grad_lse):
        hidden, table, target, lse = ctx.saved_tensors
        need = ctx.needs_input_grad
        if grad_loss is None:
            grad_loss = hidden.new_zeros(hidden.shape[0])
        if torch.is_grad_enabled():  # create_graph: see _formula_grads
            dh, dt = _formula_grads(
                lambda: reference.item_softmax_xent_formula(
                    hidden, table, target, ctx.label_smoothing
                ),
                (grad_loss,),
                (hidden, table),
                need[:2],
            )
            return dh, dt, None, None, None
        dh, dt = backward_op(
            grad_loss, hidden, table, target, lse, ctx.label_smoothing, ctx.chunk, need[0], need[1]
        )
        return (dh if need[0] else None, dt if need[1] else None, None, None, None)

    return backward, setup_context


def topk_scores_fake(queries, table, k, exclude) -> tuple[Tensor, Tensor]:
    """queries (B, D), table (N, D) -> (values (B, k), indices (B, k) int64)."""
    b = queries.shape[0]
    return queries.new_empty((b, k)), queries.new_empty((b, k), dtype=torch.int64)


def score_ranks_fake(queries, table, target, exclude) -> Tensor:
    """queries (B, D), table (N, D), target (B,) -> ranks (B,) int64."""
    return queries.new_empty((queries.shape[0],), dtype=torch.int64)
