"""Public ops: ``dynamic_linear`` and ``codebook_quantize``.

Each call validates its arguments, picks a backend (see :mod:`solid_ext._backend`)
and runs it. The compiled ops live under ``torch.ops.solid_ext``; their fake
(meta) kernels and autograd formulas are registered here so that
``torch.compile(fullgraph=True)`` traces through them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backend
from ._validate import check_codebook_quantize, check_dynamic_linear
from .reference import codebook_quantize_ref, dynamic_linear_ref

__all__ = ["dynamic_linear", "codebook_quantize"]


def dynamic_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    branch_weight: Tensor | None = None,
    branch_bias: Tensor | None = None,
    tau: float = 0.01,
) -> Tensor:
    """Per-sample linear map with a clipped branch (SOLID Eq. 12).

    ``y = x @ (weight + clamp(branch_weight, -tau, tau)) + bias
    + clamp(branch_bias, -tau, tau)``.

    Args:
        x: (B, N_in) or (B, L, N_in).
        weight: (B, N_in, N_out) per-sample trunk weights.
        bias: optional (B, N_out) trunk bias.
        branch_weight: optional (B, N_in, N_out) branch weights, clipped to ±tau.
        branch_bias: optional (B, N_out) branch bias, clipped to ±tau.
        tau: clip threshold, >= 0.

    Returns:
        (B, N_out) or (B, L, N_out). Gradients flow to every tensor argument; the
        branch gradients are zero where ``|branch| > tau`` (as for ``clamp``).
        NaN in any input propagates to the output.
    """
    tau = check_dynamic_linear(x, weight, bias, branch_weight, branch_bias, tau)
    backend = _backend.resolve(x.device, x.dtype)
    if backend == "reference":
        return dynamic_linear_ref(x, weight, bias, branch_weight, branch_bias, tau)
    x3 = x.unsqueeze(1) if x.dim() == 2 else x
    if backend == "triton":
        fn = _backend.triton_module().dynamic_linear
    else:
        fn = torch.ops.solid_ext.dynamic_linear
    y = fn(x3, weight, bias, branch_weight, branch_bias, tau)
    return y.squeeze(1) if x.dim() == 2 else y


def codebook_quantize(
    z: Tensor, codebook: Tensor, straight_through_codebook: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest-code search with a straight-through gradient (SOLID Eq. 13).

    Args:
        z: (..., D) vectors to quantise.
        codebook: (K, D), K >= 1.
        straight_through_codebook: also pass ``quantized``'s gradient to the chosen
            codebook rows (summed per row). Off by default: as in VQ-VAE, the
            codebook then learns only from ``sq_dist``.

    Returns:
        ``(quantized, indices, sq_dist)``: quantized (..., D) equals
        ``codebook[indices]`` and passes its gradient straight to ``z``; indices
        (...) int64, ``argmin_k ||z - C_k||^2`` with ties to the lowest k;
        sq_dist (...) the minimum squared distance, differentiable in ``z`` and
        ``codebook`` so ``sq_dist.mean() / D`` is ``MSE(z, quantized)``.
        A row of z containing NaN gets index 0 and NaN sq_dist; a NaN codebook
        row is chosen by every row that compares against it (as ``torch.argmin``
        treats NaN).
    """
    check_codebook_quantize(z, codebook)
    backend = _backend.resolve(z.device, z.dtype)
    if backend == "reference":
        return codebook_quantize_ref(z, codebook, straight_through_codebook)
    lead, d = z.shape[:-1], z.shape[-1]
    z2 = z.reshape(-1, d)
    if backend == "triton":
        fn = _backend.triton_module().codebook_quantize
    else:
        fn = torch.ops.solid_ext.codebook_quantize
    q, sq, idx = fn(z2, codebook, straight_through_codebook)
    return q.reshape(*lead, d), idx.reshape(lead), sq.reshape(lead)


# --- registration of fake kernels and autograd for the compiled ops -------------


def _register() -> None:
    if _backend.compiled_extension() is None:
        return

    @torch.library.register_fake("solid_ext::dynamic_linear")
    def _(x, weight, bias, branch_weight, branch_bias, tau):
        return x.new_empty((x.shape[0], x.shape[1], weight.shape[2]))

    @torch.library.register_fake("solid_ext::dynamic_linear_backward")
    def _(grad, x, weight, branch_weight, branch_bias, tau, need_dx, need_dw, need_dbw):
        dx = torch.empty_like(x) if need_dx else x.new_empty(0)
        dw = torch.empty_like(weight) if need_dw else weight.new_empty(0)
        has_bw = need_dbw and branch_weight is not None
        dbw = torch.empty_like(weight) if has_bw else weight.new_empty(0)
        db = grad.new_empty((grad.shape[0], grad.shape[2]))
        dbb = torch.empty_like(db) if branch_bias is not None else grad.new_empty(0)
        return dx, dw, dbw, db, dbb

    def _dl_setup(ctx, inputs, output):
        x, weight, bias, branch_weight, branch_bias, tau = inputs
        ctx.save_for_backward(x, weight, branch_weight, branch_bias)
        ctx.tau = tau
        ctx.has_bias = bias is not None

    def _dl_backward(ctx, grad):
        x, weight, branch_weight, branch_bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, dbw, db, dbb = torch.ops.solid_ext.dynamic_linear_backward(
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

    torch.library.register_autograd(
        "solid_ext::dynamic_linear", _dl_backward, setup_context=_dl_setup
    )

    @torch.library.register_fake("solid_ext::codebook_quantize")
    def _(z, codebook, straight_through_codebook):
        m = z.shape[0]
        return (
            z.new_empty((m, z.shape[1])),
            z.new_empty((m,)),
            z.new_empty((m,), dtype=torch.long),
        )

    @torch.library.register_fake("solid_ext::codebook_quantize_backward")
    def _(grad_q, grad_sq, z, codebook, indices, straight_through_codebook):
        return torch.empty_like(z), torch.empty_like(codebook)

    def _cq_setup(ctx, inputs, output):
        z, codebook, st = inputs
        ctx.mark_non_differentiable(output[2])
        ctx.save_for_backward(z, codebook, output[2])
        ctx.st = st

    def _cq_backward(ctx, grad_q, grad_sq, _grad_idx):
        z, codebook, idx = ctx.saved_tensors
        gz, gc = torch.ops.solid_ext.codebook_quantize_backward(
            grad_q, grad_sq, z, codebook, idx, ctx.st
        )
        return gz, gc, None

    torch.library.register_autograd(
        "solid_ext::codebook_quantize", _cq_backward, setup_context=_cq_setup
    )


_register()
