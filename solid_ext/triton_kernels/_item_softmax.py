"""Triton kernels for ``item_softmax_xent`` (softmax cross-entropy over every item).

``logits = hidden @ table.T`` (B, N) is never written to memory: each program holds
one (BLOCK_B, BLOCK_N) tile of it in registers at a time (the cut-cross-entropy /
fused-linear-cross-entropy idea).

Forward: one program per BLOCK_B rows of hidden sweeps the items in BLOCK_N tiles
with an online (running max, rescaled sum of exponentials) log-sum-exp. The target
logit is picked out of the tile it falls in by comparison (no gather: an out-of-range
target never touches memory) and, with label smoothing, the row sum of the logits is
accumulated alongside, so ``loss = lse - (1 - s) l_target - (s / N) sum_j l_j``.

Backward: ``dlogits_bj = g_b (softmax_bj - (1 - s) [j == t_b] - s / N)`` is recomputed
tile by tile from the logits and the saved lse, one-hot and smoothing terms included,
by two kernels without atomics (deterministic): ``dhidden = dlogits @ table`` gridded
over (B blocks, D slices) looping over the items, and ``dtable = dlogits^T @ hidden``
gridded over (item blocks, D slices) looping over B. With D up to one slice (64,
the usual case) each tile of logits is computed once per kernel; a larger D is split
into slices that each recompute the logits. For float16/bfloat16 the lse passed in
is the op's output, rounded to the input dtype (bfloat16 at lse ~ 10 is off by up to
0.03, i.e. 3% in every softmax value): the backward recomputes it in float32 first
(one more forward-like sweep).

Accumulation is float32 (float64 for float64 inputs); float16/bfloat16 tiles are
upcast on load and results rounded on store. ``(1 - s, s / N)`` travel as a tiny
tensor in the accumulation dtype: a Python float argument would reach the kernel as
float32. ``chunk`` (the compiled op's items per block) is a hint only: the item tile
here is a register tile fixed by the heuristics below, and no scratch grows with B.

Block heuristics (no autotune: it fails in the interpreter):

* ``tl.dot`` (``input_precision="ieee"``: float32 results match an fp32 matmul, not
  TF32) when the dtype is not float64 and D >= 16. With D <= 64 the whole of D is one
  chunk (BLOCK_K = next_pow2(D), at least 16): the forward keeps its hidden tile in registers for
  the whole sweep, and the backward has a single D slice. A larger D is contracted in
  32-chunks and the backward split into 32-wide slices. Tiles (rows x items, or items x
  rows for dtable) are 64 x 64 / 64 x 32 (forward), 64 x 32 (dhidden), 64 x 32 / 32 x
  32 (dtable), 32 x 32 for D > 64, all with 8 warps: among the few tried, the largest that
  compile without register spills for sm_80 and sm_90 in float32, float16 and bfloat16.
* otherwise (D < 16, float64: Triton has no fp64 dot) a broadcast-multiply-reduce
  over a 3-D tile capped at 8192 float32 / 4096 float64 elements, half that in the
  backward (which holds the gradient tile too).
* The dtable kernel forms its logits transposed (table @ hidden^T): a register tile
  transposed before a dot spills heavily on both archs.

``tools/check_triton.py`` compiles every launch for sm_80/sm_90 and checks spills.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._launch import launch

_REDUCED = (torch.float16, torch.bfloat16)
_WARPS = 8


@triton.jit
def _load_tile(base, offs_r, offs_c, stride, r_mask, c_mask, ACC: tl.constexpr):
    """(rows, cols) tile of a row-major matrix with row stride ``stride``, in ``ACC``;
    zeros outside the masks."""
    return tl.load(
        base + offs_r[:, None] * stride + offs_c[None, :],
        mask=r_mask[:, None] & c_mask[None, :],
        other=0.0,
    ).to(ACC)


@triton.jit
def _mm_nt(a, b, acc, USE_DOT: tl.constexpr):
    """acc + a @ b^T for a (R, K), b (C, K)."""
    if USE_DOT:
        acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
    else:
        acc += tl.sum(a[:, None, :] * b[None, :, :], axis=2)
    return acc


@triton.jit
def _mm_nn(a, b, acc, USE_DOT: tl.constexpr):
    """acc + a @ b for a (R, K), b (K, C)."""
    if USE_DOT:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return acc


@triton.jit
def _logits(
    h_ptr, t_ptr, offs_b, offs_n, b_mask, n_mask, D,
    USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """(BLOCK_B, BLOCK_N) tile of hidden @ table.T, D contracted in BLOCK_K chunks (or,
    with the roles swapped, of table @ hidden.T)."""
    acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=ACC)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < D
        h = _load_tile(h_ptr, offs_b, offs_k, D, b_mask, k_mask, ACC)
        t = _load_tile(t_ptr, offs_n, offs_k, D, n_mask, k_mask, ACC)
        acc = _mm_nt(h, t, acc, USE_DOT)
    return acc


@triton.jit
def _dlogits(l, lse, g, tgt, offs_n, b_mask, n_mask, c0, c1, SMOOTH: tl.constexpr):
    """g_b (softmax_bj - c0 [j == t_b] - c1), zero outside the masks."""
    p = tl.exp(l - lse[:, None])
    d = p - tl.where(offs_n[None, :] == tgt[:, None], c0, 0.0)
    if SMOOTH:
        d = d - c1
    d = g[:, None] * d
    return tl.where(b_mask[:, None] & n_mask[None, :], d, 0.0)


@triton.jit
def _dlogits_t(lt, lse, g, tgt, offs_n, b_mask, n_mask, c0, c1, SMOOTH: tl.constexpr):
    """:func:`_dlogits` transposed, from the (items, rows) logits ``lt``."""
    p = tl.exp(lt - lse[None, :])
    d = p - tl.where(offs_n[:, None] == tgt[None, :], c0, 0.0)
    if SMOOTH:
        d = d - c1
    d = g[None, :] * d
    return tl.where(n_mask[:, None] & b_mask[None, :], d, 0.0)


@triton.jit
def _isx_fwd_kernel(
    h_ptr, t_ptr, tgt_ptr, coef_ptr, loss_ptr, lse_ptr,
    B, N, D,
    SMOOTH: tl.constexpr, RESIDENT: tl.constexpr, USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs_b = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    b_mask = offs_b < B
    offs_k = tl.arange(0, BLOCK_K)
    k_mask = offs_k < D
    tgt = tl.load(tgt_ptr + offs_b, mask=b_mask, other=-1)
    if RESIDENT:
        # D fits one chunk: the hidden tile stays in registers for the whole sweep.
        h = _load_tile(h_ptr, offs_b, offs_k, D, b_mask, k_mask, ACC)
    m = tl.full([BLOCK_B], float("-inf"), dtype=ACC)
    s = tl.zeros([BLOCK_B], dtype=ACC)
    lt = tl.zeros([BLOCK_B], dtype=ACC)
    sl = tl.zeros([BLOCK_B], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        n_mask = offs_n < N
        if RESIDENT:
            t = _load_tile(t_ptr, offs_n, offs_k, D, n_mask, k_mask, ACC)
            l = _mm_nt(h, t, tl.zeros([BLOCK_B, BLOCK_N], dtype=ACC), USE_DOT)
        else:
            l = _logits(
                h_ptr, t_ptr, offs_b, offs_n, b_mask, n_mask, D,
                USE_DOT, ACC, BLOCK_B, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        lt += tl.sum(tl.where(offs_n[None, :] == tgt[:, None], l, 0.0), axis=1)
        if SMOOTH:
            sl += tl.sum(tl.where(n_mask[None, :], l, 0.0), axis=1)
        l = tl.where(n_mask[None, :], l, float("-inf"))
        # Every tile holds at least one item, so m_new is a logit: exp(m - m_new) is
        # 0 on the first tile (m = -inf), never exp(-inf + inf).
        m_new = tl.maximum(m, tl.max(l, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(l - m_new[:, None]), axis=1)
        m = m_new
    lse = m + tl.log(s)
    c0 = tl.load(coef_ptr).to(ACC)
    loss = lse - c0 * lt
    if SMOOTH:
        c1 = tl.load(coef_ptr + 1).to(ACC)
        loss -= c1 * sl
    tl.store(lse_ptr + offs_b, lse.to(lse_ptr.dtype.element_ty), mask=b_mask)
    tl.store(loss_ptr + offs_b, loss.to(loss_ptr.dtype.element_ty), mask=b_mask)


@triton.jit
def _isx_bwd_dh_kernel(
    g_ptr, h_ptr, t_ptr, tgt_ptr, lse_ptr, coef_ptr, dh_ptr,
    B, N, D,
    SMOOTH: tl.constexpr, RESIDENT: tl.constexpr, USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program (B block, D slice): dhidden[rows, slice] = dlogits @ table[:, slice]."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_b = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    b_mask = offs_b < B
    offs_d = pid_d * BLOCK_K + tl.arange(0, BLOCK_K)
    d_mask = offs_d < D
    tgt = tl.load(tgt_ptr + offs_b, mask=b_mask, other=-1)
    g = tl.load(g_ptr + offs_b, mask=b_mask, other=0.0).to(ACC)
    lse = tl.load(lse_ptr + offs_b, mask=b_mask, other=0.0).to(ACC)
    c0 = tl.load(coef_ptr).to(ACC)
    c1 = tl.load(coef_ptr + 1).to(ACC)
    if RESIDENT:
        h = _load_tile(h_ptr, offs_b, offs_d, D, b_mask, d_mask, ACC)
    dh = tl.zeros([BLOCK_B, BLOCK_K], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        n_mask = offs_n < N
        t = _load_tile(t_ptr, offs_n, offs_d, D, n_mask, d_mask, ACC)
        if RESIDENT:
            l = _mm_nt(h, t, tl.zeros([BLOCK_B, BLOCK_N], dtype=ACC), USE_DOT)
        else:
            l = _logits(
                h_ptr, t_ptr, offs_b, offs_n, b_mask, n_mask, D,
                USE_DOT, ACC, BLOCK_B, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        dl = _dlogits(l, lse, g, tgt, offs_n, b_mask, n_mask, c0, c1, SMOOTH)
        dh = _mm_nn(dl, t, dh, USE_DOT)
    tl.store(
        dh_ptr + offs_b[:, None] * D + offs_d[None, :],
        dh.to(dh_ptr.dtype.element_ty),
        mask=b_mask[:, None] & d_mask[None, :],
    )


@triton.jit
def _isx_bwd_dt_kernel(
    g_ptr, h_ptr, t_ptr, tgt_ptr, lse_ptr, coef_ptr, dt_ptr,
    B, N, D,
    SMOOTH: tl.constexpr, RESIDENT: tl.constexpr, USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program (item block, D slice): dtable[items, slice] = dlogits^T @ hidden[:, slice].

    The logits are formed transposed (table @ hidden^T, items x rows), so that no
    register tile is transposed before a dot (that spills on sm_80/sm_90)."""
    pid_n = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    n_mask = offs_n < N
    offs_d = pid_d * BLOCK_K + tl.arange(0, BLOCK_K)
    d_mask = offs_d < D
    c0 = tl.load(coef_ptr).to(ACC)
    c1 = tl.load(coef_ptr + 1).to(ACC)
    if RESIDENT:
        t = _load_tile(t_ptr, offs_n, offs_d, D, n_mask, d_mask, ACC)
    dt = tl.zeros([BLOCK_N, BLOCK_K], dtype=ACC)
    for b0 in range(0, B, BLOCK_B):
        offs_b = (b0 + tl.arange(0, BLOCK_B)).to(tl.int64)
        b_mask = offs_b < B
        tgt = tl.load(tgt_ptr + offs_b, mask=b_mask, other=-1)
        g = tl.load(g_ptr + offs_b, mask=b_mask, other=0.0).to(ACC)
        lse = tl.load(lse_ptr + offs_b, mask=b_mask, other=0.0).to(ACC)
        h = _load_tile(h_ptr, offs_b, offs_d, D, b_mask, d_mask, ACC)
        if RESIDENT:
            lt = _mm_nt(t, h, tl.zeros([BLOCK_N, BLOCK_B], dtype=ACC), USE_DOT)
        else:
            lt = _logits(
                t_ptr, h_ptr, offs_n, offs_b, n_mask, b_mask, D,
                USE_DOT, ACC, BLOCK_N, BLOCK_B, BLOCK_K,
            )  # fmt: skip
        dlt = _dlogits_t(lt, lse, g, tgt, offs_n, b_mask, n_mask, c0, c1, SMOOTH)
        dt = _mm_nn(dlt, h, dt, USE_DOT)
    tl.store(
        dt_ptr + offs_n[:, None] * D + offs_d[None, :],
        dt.to(dt_ptr.dtype.element_ty),
        mask=n_mask[:, None] & d_mask[None, :],
    )


def _np2(n: int) -> int:
    return 1 if n <= 1 else triton.next_power_of_2(n)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def blocks(D: int, dtype: torch.dtype) -> dict[str, int | bool]:
    """Launch constexprs shared by the three kernels, per kernel tile shape:
    ``use_dot``, ``k`` (contraction chunk = backward D slice), and (BLOCK_B, BLOCK_N)
    for ``fwd``, ``dh`` and ``dt`` (see the module doc)."""
    if dtype != torch.float64 and D >= 16:
        if D > 64:
            # D in 32-chunks (the logits) and 32-wide slices (the backward's output).
            return {"use_dot": True, "k": 32, "fwd": (64, 64), "dh": (32, 32), "dt": (32, 32)}
        k = max(16, _np2(D))  # D resident in one chunk
        fwd, dt = ((64, 64), (64, 32)) if k <= 32 else ((64, 32), (32, 32))
        return {"use_dot": True, "k": k, "fwd": fwd, "dh": (64, 32), "dt": dt}
    cap = 4096 if dtype == torch.float64 else 8192
    k = min(16, _np2(D))
    bb = 16
    # The backward holds one more tile (the gradient) beside the 3-D product: half.
    fwd = (bb, max(16, cap // (bb * k)))
    bwd = (bb, max(16, cap // (2 * bb * k)))
    return {"use_dot": False, "k": k, "fwd": fwd, "dh": bwd, "dt": bwd}


def _coef(label_smoothing: float, N: int, dtype: torch.dtype, device: torch.device):
    """``(1 - s, s / N)`` in the accumulation dtype, as the kernels read them."""
    s = float(label_smoothing)
    return torch.tensor([1.0 - s, s / N], dtype=_acc_dtype(dtype), device=device)


def _stats(
    hidden: torch.Tensor,
    table: torch.Tensor,
    target: torch.Tensor,
    coef: torch.Tensor,
    smooth: bool,
    loss: torch.Tensor,
    lse: torch.Tensor,
) -> None:
    """Launch the forward kernel into ``loss`` and ``lse`` (B >= 1, D >= 1)."""
    B, D = hidden.shape
    N = table.shape[0]
    bl = blocks(D, hidden.dtype)
    bb, bn = bl["fwd"]
    acc = tl.float64 if hidden.dtype == torch.float64 else tl.float32
    launch(
        _isx_fwd_kernel, (triton.cdiv(B, bb),),
        hidden, table, target, coef, loss, lse, B, N, D,
        SMOOTH=smooth, RESIDENT=bl["k"] >= D, USE_DOT=bl["use_dot"], ACC=acc,
        BLOCK_B=bb, BLOCK_N=bn, BLOCK_K=bl["k"], num_warps=_WARPS,
    )  # fmt: skip


def forward(
    hidden: torch.Tensor,
    table: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, D), table (N, D), target (B,) -> (loss (B,), lse (B,)), both in
    hidden's dtype. ``chunk`` is a hint only (see the module doc)."""
    hidden, table, target = hidden.contiguous(), table.contiguous(), target.contiguous()
    B, D = hidden.shape
    N = table.shape[0]
    loss = hidden.new_empty((B,))
    lse = hidden.new_empty((B,))
    if B == 0:
        return loss, lse
    if D == 0:
        # Every logit is 0: lse = log N and both subtracted terms vanish.
        return loss.fill_(math.log(N)), lse.fill_(math.log(N))
    coef = _coef(label_smoothing, N, hidden.dtype, hidden.device)
    _stats(hidden, table, target, coef, label_smoothing > 0, loss, lse)
    return loss, lse


def backward(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    table: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    label_smoothing: float,
    chunk: int,
    need_dhidden: bool,
    need_dtable: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dhidden (B, D), dtable (N, D))``; an unneeded one is 0-element."""
    hidden, table, target = hidden.contiguous(), table.contiguous(), target.contiguous()
    B, D = hidden.shape
    N = table.shape[0]
    dh = torch.empty_like(hidden) if need_dhidden else hidden.new_empty(0)
    dt = torch.empty_like(table) if need_dtable else table.new_empty(0)
    if not (need_dhidden or need_dtable):
        return dh, dt
    if B == 0 or D == 0:
        return dh.zero_(), dt.zero_()
    g = grad_loss.contiguous()
    smooth = label_smoothing > 0
    coef = _coef(label_smoothing, N, hidden.dtype, hidden.device)
    if hidden.dtype in _REDUCED:
        # The saved lse is rounded to hidden's dtype: recompute it in float32.
        lse = hidden.new_empty((B,), dtype=torch.float32)
        _stats(hidden, table, target, coef, False, torch.empty_like(lse), lse)
    else:
        lse = lse.contiguous()
    bl = blocks(D, hidden.dtype)
    k = bl["k"]
    acc = tl.float64 if hidden.dtype == torch.float64 else tl.float32
    common = dict(
        SMOOTH=smooth, RESIDENT=k >= D, USE_DOT=bl["use_dot"], ACC=acc,
        BLOCK_K=k, num_warps=_WARPS,
    )  # fmt: skip
    if need_dhidden:
        bb, bn = bl["dh"]
        launch(
            _isx_bwd_dh_kernel, (triton.cdiv(B, bb), triton.cdiv(D, k)),
            g, hidden, table, target, lse, coef, dh, B, N, D,
            BLOCK_B=bb, BLOCK_N=bn, **common,
        )  # fmt: skip
    if need_dtable:
        bb, bn = bl["dt"]
        launch(
            _isx_bwd_dt_kernel, (triton.cdiv(N, bn), triton.cdiv(D, k)),
            g, hidden, table, target, lse, coef, dt, B, N, D,
            BLOCK_B=bb, BLOCK_N=bn, **common,
        )  # fmt: skip
    return dh, dt
