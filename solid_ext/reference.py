"""Pure-PyTorch reference implementations of the fused ops.

These are the test oracle for every backend and the fallback when no compiled
backend is usable. They are written for clarity, differentiate through ordinary
autograd (plus two small autograd functions that pin down the straight-through and
non-finite conventions of ``codebook_quantize``), and make no attempt at speed beyond
tiling the distance matrix. float16/bfloat16 inputs are computed in float32 and the
results rounded back, as the CUDA and Triton kernels accumulate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validate import check_straight_through, check_tau

__all__ = [
    "as_rows",
    "clip_bound",
    "codebook_quantize_ref",
    "dynamic_linear_ref",
    "generated_linear_ref",
    "item_softmax_xent_ref",
    "sparse_row_update_ref",
]

# Rows of z per distance tile: bounds the (rows, K) scratch of the reference search.
_REF_TILE_ELEMS = 1 << 20
_REDUCED = (torch.float16, torch.bfloat16)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16 overflows at 65504: ||C_k||^2 or x @ W of valid inputs can exceed it.
    return torch.float32 if dtype in _REDUCED else dtype


def clip_bound(tau: float, dtype: torch.dtype) -> float:
    """tau as the clamp bound for tensors of ``dtype``.

    Rounded to ``dtype`` as ``torch.clamp`` (and every kernel) compares it, except that
    a tau beyond the dtype's range becomes inf: it clips nothing either way, but
    ``torch.clamp`` raises an overflow error for it.
    """
    if dtype == torch.float64 or (dtype == torch.float32 and tau <= torch.finfo(dtype).max):
        return tau
    return torch.tensor(tau, dtype=torch.float64).to(dtype).item()


def as_rows(z: Tensor) -> Tensor:
    """(..., D) -> (M, D). With D = 0 the row count is given: reshape(-1, 0) is ambiguous."""
    d = z.shape[-1]
    return z.reshape(-1, d) if d else z.reshape(math.prod(z.shape[:-1]), 0)


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
    bias, branch_bias (B, N_out). Returns (B, N_out) or (B, L, N_out). tau must be a
    finite float >= 0; it is compared in the inputs' dtype (see :func:`clip_bound`).
    """
    tau = check_tau(tau)
    dtype = x.dtype
    bound = clip_bound(tau, dtype)
    work = _work_dtype(dtype)
    if work != dtype:
        x, weight, bias, branch_weight, branch_bias = (
            None if t is None else t.to(work) for t in (x, weight, bias, branch_weight, branch_bias)
        )
    w = weight
    if branch_weight is not None:
        w = w + branch_weight.clamp(-bound, bound)
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(1) if squeeze else x
    y = torch.bmm(x3, w)
    b = bias
    if branch_bias is not None:
        cb = branch_bias.clamp(-bound, bound)
        b = cb if b is None else b + cb
    if b is not None:
        y = y + b.unsqueeze(1)
    y = y.squeeze(1) if squeeze else y
    return y.to(dtype)


def generated_linear_ref(
    x: Tensor,
    cond: Tensor,
    gen_weight: Tensor,
    base: Tensor,
    tau: float | None = None,
) -> Tensor:
    """``x @ f(reshape(cond @ gen_weight^T) + base)`` per sample, f = clamp(±tau) or,
    with ``tau=None``, the identity: a layer whose weights a full-rank generator makes.

    Shapes: x (B, N_in) or (B, L, N_in); cond (B, C); gen_weight (N_in*N_out, C), row
    ``i*N_out + o`` generating weight (i, o) (``nn.Linear(C, N_in*N_out).weight``);
    base (N_in, N_out), added to every sample's weight before the clip. Returns
    (B, N_out) or (B, L, N_out). This oracle forms the (B, N_in, N_out) weights.
    """
    if tau is not None:
        tau = check_tau(tau)
    dtype = x.dtype
    work = _work_dtype(dtype)
    if work != dtype:
        x, cond, gen_weight, base = (t.to(work) for t in (x, cond, gen_weight, base))
    n_in, n_out = base.shape
    w = (cond @ gen_weight.t()).view(cond.shape[0], n_in, n_out) + base
    if tau is not None:
        bound = clip_bound(tau, dtype)
        w = w.clamp(-bound, bound)
    squeeze = x.dim() == 2
    y = torch.bmm(x.unsqueeze(1) if squeeze else x, w)
    return (y.squeeze(1) if squeeze else y).to(dtype)


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


class _StraightThrough(torch.autograd.Function):
    """The value of ``chosen``; the gradient passes unchanged to ``z`` and ``chosen``.

    ``chosen + (z - z.detach())`` would be the same for finite z, but inf - inf makes
    the value NaN where z is infinite; quantized must stay exactly codebook[indices].
    """

    @staticmethod
    def forward(ctx, z: Tensor, chosen: Tensor) -> Tensor:
        return chosen.clone()

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor]:
        return g, g


class _SqDist(torch.autograd.Function):
    """``sum((z - c)^2, -1)`` whose gradient ``±2 g (z - c)`` is exactly zero where g is.

    Plain autograd would give 0 * inf = NaN for an infinite z with an unused (zero)
    sq_dist gradient, turning quantized's straight-through gradient into NaN; every
    kernel backend skips the term for a zero g, and so does this oracle.
    """

    @staticmethod
    def forward(ctx, z: Tensor, c: Tensor) -> Tensor:
        # z and c, not z - c: a difference made here (grad mode off) would cut the
        # backward's own graph, and with it second-order gradients.
        ctx.save_for_backward(z, c)
        diff = z - c
        return (diff * diff).sum(-1)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor]:
        z, c = ctx.saved_tensors
        diff = z - c
        g = g.unsqueeze(-1)
        t = torch.where(g != 0, 2 * g * diff, torch.zeros_like(diff))
        return t, -t


def codebook_quantize_ref(
    z: Tensor, codebook: Tensor, straight_through_codebook: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest-code quantisation with a straight-through gradient.

    Shapes: z (..., D), codebook (K, D). Returns ``(quantized (..., D),
    indices (...) int64, sq_dist (...))``. ``quantized`` equals ``codebook[indices]``
    (also where z is infinite) and passes its gradient to ``z`` unchanged (and to the
    chosen codebook rows when ``straight_through_codebook``, a bool);
    ``sq_dist = ||z - codebook[indices]||^2`` is differentiable in both inputs, a zero
    sq_dist gradient contributing exactly zero (see :func:`solid_ext.codebook_quantize`).
    """
    straight_through_codebook = check_straight_through(straight_through_codebook)
    z2 = as_rows(z)
    work = _work_dtype(z.dtype)
    zw, cw = (z2, codebook) if work == z.dtype else (z2.to(work), codebook.to(work))
    with torch.no_grad():
        idx = _nearest(zw.detach(), cw.detach())
    q, sq = codebook_quantize_at(z, codebook, idx, straight_through_codebook)
    return q, idx.reshape(z.shape[:-1]), sq


def codebook_quantize_at(
    z: Tensor, codebook: Tensor, idx: Tensor, straight_through_codebook: bool = False
) -> tuple[Tensor, Tensor]:
    """``(quantized, sq_dist)`` of :func:`codebook_quantize_ref` for given code indices
    ``idx`` (z's leading shape or flat), differentiable to any order: the formula the
    ops' backward follows where a second-order gradient is asked for."""
    lead = z.shape[:-1]
    d = z.shape[-1]
    z2 = as_rows(z)
    idx = idx.reshape(-1)
    work = _work_dtype(z.dtype)
    zw, cw = (z2, codebook) if work == z.dtype else (z2.to(work), codebook.to(work))
    chosen = codebook.index_select(0, idx)
    chosen_w = chosen if cw is codebook else cw.index_select(0, idx)
    sq = _SqDist.apply(zw, chosen_w).to(z.dtype)
    base = chosen if straight_through_codebook else chosen.detach()
    q = _StraightThrough.apply(z2, base)
    return q.reshape(*lead, d), sq.reshape(lead)


@torch.no_grad()
def sparse_row_update_ref(
    weight: Tensor,
    state1: Tensor,
    state2: Tensor,
    indices: Tensor | None,
    grad: Tensor,
    kind: str,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    step: int = 1,
) -> None:
    """Row-wise optimizer step on the rows ``indices`` names, in place.

    ``grad`` row j belongs to row ``indices[j]`` of ``weight`` (N, D); duplicate indices
    are summed first. ``indices=None``: ``grad`` is (N, D), one row per row of weight.
    Rows that no index names are left untouched, state included.

    - ``lazy_adam``: Adam (with L2 ``weight_decay`` added to the gradient, as
      ``torch.optim.Adam``) on the touched rows only; state1/state2 (N, D) are the first
      and second moments. The moments of untouched rows are not decayed (lazy, as
      TensorFlow's LazyAdam and ``torch.optim.SparseAdam``); bias correction uses the
      global ``step``. With every row touched each step it is ``torch.optim.Adam``.
    - ``rowwise_adagrad``: state1 (N,) accumulates each row's mean squared gradient,
      ``w -= lr g / (sqrt(state1) + eps)``; state2 is unused (0 elements).
    """
    rows_all = indices is None
    if rows_all:
        g = grad.to(weight.dtype)
        w = weight
    else:
        rows, inv = torch.unique(indices, return_inverse=True)
        g = weight.new_zeros((len(rows), weight.shape[1])).index_add_(0, inv, grad)
        w = weight[rows]
    if weight_decay:
        g = g + weight_decay * w
    if kind == "lazy_adam":
        m = (state1 if rows_all else state1[rows]).mul(beta1).add_(g, alpha=1 - beta1)
        v = (state2 if rows_all else state2[rows]).mul(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        new_w = w - (lr / (1 - beta1**step)) * m / denom
        s1, s2 = m, v
    elif kind == "rowwise_adagrad":
        s1 = (state1 if rows_all else state1[rows]) + (g * g).mean(1)
        new_w = w - lr * g / (s1.sqrt() + eps).unsqueeze(1)
        s2 = None
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if rows_all:
        weight.copy_(new_w)
        state1.copy_(s1)
        if s2 is not None:
            state2.copy_(s2)
    else:
        weight[rows] = new_w
        state1[rows] = s1
        if s2 is not None:
            state2[rows] = s2


def item_softmax_xent_ref(
    hidden: Tensor, table: Tensor, target: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """Softmax cross-entropy of each row of ``hidden`` (B, D) over every row of
    ``table`` (N, D) (logits ``hidden @ table.T``), target (B,) in [0, N) -> (B,).

    ``loss_b = lse_b - (1 - s) logit_b,target - s mean_j logit_bj`` (s the label
    smoothing), as ``F.cross_entropy(..., reduction="none")``. The oracle: it builds
    the (B, N) logits, which the kernels never do.
    """
    return item_softmax_xent_formula(hidden, table, target, label_smoothing)


def item_softmax_xent_formula(
    hidden: Tensor, table: Tensor, target: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """:func:`item_softmax_xent_ref`'s value as a differentiable graph (it builds the
    (B, N) logits): what the ops' backward differentiates where a second-order
    gradient is asked for."""
    wd = _work_dtype(hidden.dtype)
    logits = hidden.to(wd) @ table.to(wd).T
    out = torch.nn.functional.cross_entropy(
        logits, target, reduction="none", label_smoothing=label_smoothing
    )
    return out.to(hidden.dtype)


def _check_finite(op: str, **tensors: Tensor) -> None:
    for name, t in tensors.items():
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{op}: {name} holds NaN or infinity (no order of its scores is defined)"
            )


def topk_scores_ref(
    queries: Tensor,
    table: Tensor,
    k: int,
    exclude: Tensor | None = None,
    chunk: int = 65536,
) -> tuple[Tensor, Tensor]:
    """The ``k`` rows of ``table`` (N, D) of largest inner product with each row of
    ``queries`` (B, D) -> (values (B, k), indices (B, k) int64), best first, ties to
    the lowest index; ``exclude`` (B, E) int64 names items a row must skip (-1 pads).
    Slots left when fewer than k items remain hold (-inf, -1).

    The oracle and the fallback: items in chunks of ``chunk``, each chunk's (B, chunk)
    scores merged into the running best by a stable sort (so equal scores keep the
    lower index). Inputs must be finite (NaN has no place in an order).
    """
    _check_finite("topk_scores", queries=queries, table=table)
    wd = _work_dtype(queries.dtype)
    q = queries.to(wd)
    b, n = q.shape[0], table.shape[0]
    best_v = q.new_empty((b, 0))
    best_i = torch.empty((b, 0), dtype=torch.int64, device=q.device)
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        s = q @ table[c0:c1].to(wd).T
        if exclude is not None and exclude.numel():
            ex = exclude - c0
            inside = (ex >= 0) & (ex < c1 - c0)
            # Out-of-chunk entries (and -1 padding) land in a spare column, dropped.
            s = torch.cat([s, s.new_zeros(b, 1)], 1)
            s.scatter_(1, torch.where(inside, ex, c1 - c0), -math.inf)
            s = s[:, :-1]
        idx = torch.arange(c0, c1, device=q.device).expand(b, -1)
        v, i = torch.cat([best_v, s], 1), torch.cat([best_i, idx], 1)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
        best_v, best_i = v.gather(1, order), i.gather(1, order)
    best_i = best_i.masked_fill(best_v == -math.inf, -1)
    return best_v.to(queries.dtype), best_i


def ranks_from_scores(scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> Tensor:
    """The rank of each row's target among the columns of ``scores`` (B, N), 1 = best,
    ties counted against the target, excluded columns (``exclude`` (B, E), -1 pads)
    skipped: ``1 + #{n != target, n not excluded : s_n >= s_target}`` (B,) int64."""
    b = scores.shape[0]
    s = scores.clone()
    st = s.gather(1, target[:, None])
    ge = s >= st
    if exclude is not None and exclude.numel():
        keep = exclude >= 0
        rows = torch.arange(b, device=s.device)[:, None].expand_as(exclude)
        ge[rows[keep], exclude[keep]] = False
    ge[torch.arange(b, device=s.device), target] = False
    return 1 + ge.sum(1)


def score_ranks_ref(
    queries: Tensor,
    table: Tensor,
    target: Tensor,
    exclude: Tensor | None = None,
    chunk: int = 65536,
) -> Tensor:
    """Each row's target's rank among the rows of ``table`` (N, D) by inner product
    with ``queries`` (B, D): ``1 + #{n != target, n not excluded : q . t_n >= q .
    t_target}`` (B,) int64, ties counted against the target (a constant scorer ranks
    every target last). ``exclude`` (B, E) as in :func:`topk_scores_ref`. Items in
    chunks of ``chunk``; the oracle and the fallback."""
    _check_finite("score_ranks", queries=queries, table=table)
    wd = _work_dtype(queries.dtype)
    q = queries.to(wd)
    b, n = q.shape[0], table.shape[0]
    st = (q * table[target].to(wd)).sum(1, keepdim=True)
    rows = torch.arange(b, device=q.device)
    count = torch.zeros(b, dtype=torch.int64, device=q.device)
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        ge = q @ table[c0:c1].to(wd).T >= st
        own = (target >= c0) & (target < c1)
        ge[rows[own], target[own] - c0] = False
        if exclude is not None and exclude.numel():
            hit = (exclude >= c0) & (exclude < c1)
            ge[rows[:, None].expand_as(exclude)[hit], exclude[hit] - c0] = False
        count += ge.sum(1)
    return 1 + count
