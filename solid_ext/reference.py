"""Pure-PyTorch reference implementations of the two fused ops.

These are the test oracle for every backend and the fallback when no compiled
backend is usable. They are written for clarity, differentiate through ordinary
autograd, and make no attempt at speed beyond tiling the distance matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dynamic_linear_ref", "codebook_quantize_ref"]

# Rows of z per distance tile: bounds the (rows, K) scratch of the reference search.
_REF_TILE_ELEMS = 1 << 20


def dynamic_linear_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    branch_weight: Tensor | None = None,
    branch_bias: Tensor | None = None,
    tau: float = 0.01,
) -> Tensor:
    """``x @ (weight + clamp(branch_weight, ±tau)) + bias + clamp(branch_bias, ±tau)``.

    Shapes: x (B, N_in) or (B, L, N_in); weight, branch_weight (B, N_in, N_out);
    bias, branch_bias (B, N_out). Returns (B, N_out) or (B, L, N_out).
    """
    w = weight
    if branch_weight is not None:
        w = w + branch_weight.clamp(-tau, tau)
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(1) if squeeze else x
    y = torch.bmm(x3, w)
    b = bias
    if branch_bias is not None:
        cb = branch_bias.clamp(-tau, tau)
        b = cb if b is None else b + cb
    if b is not None:
        y = y + b.unsqueeze(1)
    return y.squeeze(1) if squeeze else y


def _nearest(z2: Tensor, codebook: Tensor) -> Tensor:
    """Row-wise argmin_k ||z - C_k||^2 with ties to the lowest k, tiled over rows."""
    m, k = z2.shape[0], codebook.shape[0]
    c2 = (codebook * codebook).sum(1)
    ct = codebook.t()
    rows = max(1, _REF_TILE_ELEMS // max(k, 1))
    out = torch.empty(m, dtype=torch.long, device=z2.device)
    for s in range(0, m, rows):
        zt = z2[s : s + rows]
        # ||z||^2 is constant per row and cannot change the argmin.
        scores = torch.addmm(c2.unsqueeze(0), zt, ct, beta=1.0, alpha=-2.0)
        out[s : s + rows] = scores.argmin(dim=1)
    return out


def codebook_quantize_ref(
    z: Tensor, codebook: Tensor, straight_through_codebook: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest-code quantisation with a straight-through gradient.

    Shapes: z (..., D), codebook (K, D). Returns ``(quantized (..., D),
    indices (...) int64, sq_dist (...))``. ``quantized`` equals ``codebook[indices]``
    and passes its gradient to ``z`` unchanged (and to the chosen codebook rows when
    ``straight_through_codebook``); ``sq_dist = ||z - codebook[indices]||^2`` is
    differentiable in both inputs.
    """
    lead = z.shape[:-1]
    d = z.shape[-1]
    z2 = z.reshape(-1, d)
    with torch.no_grad():
        idx = _nearest(z2.detach(), codebook.detach())
    chosen = codebook.index_select(0, idx)
    diff = z2 - chosen
    sq = (diff * diff).sum(-1)
    # z - z.detach() is exactly zero for finite z: the value stays codebook[idx].
    passthrough = z2 - z2.detach()
    base = chosen if straight_through_codebook else chosen.detach()
    q = base + passthrough
    return q.reshape(*lead, d), idx.reshape(lead), sq.reshape(lead)
