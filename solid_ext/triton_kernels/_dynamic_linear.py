"""Triton kernels for ``dynamic_linear`` (forward and backward).

One program owns one sample ``b`` and a block of output columns (forward) or input
rows (backward). The combined weight ``W = weight + clamp(branch, ±tau)`` is formed
tile by tile in registers and used at once: it never exists in global memory. The
backward recomputes the clip mask ``|branch| <= tau`` from ``branch_weight``
instead of saving one.

Block-size heuristics (no autotune: ``@triton.autotune`` fails in the interpreter):

* ``tl.dot`` (fp32 accumulation, ``input_precision="ieee"`` so float32 results match
  an fp32 bmm instead of TF32) when the dtype is not float64 (Triton has no fp64
  dot) and ``L >= 8``; the L tile is padded to 16, the dot minimum. Inputs are
  upcast to float32 before the dot: the interpreter's bf16 dot is wrong. Dot tiles
  are at most 16 (L) x 32 (N_in) x 32 (N_out) with 8 warps: the largest that compile
  without register spills on sm_80/sm_90 (``tools/check_triton.py``); longer L loops.
* otherwise (L < 8, float64) a broadcast-multiply-reduce over a 3-D tile whose
  element count is capped (8192 float32, 4096 float64) to bound registers.
* At the paper shape (N_in=32, N_out=64) every weight and branch element is read
  exactly once (one or two column tiles per sample; the op is memory-bound).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._launch import launch

# Longest L handled in one tile (fused backward); longer L loops. With BLOCK_O <= 32
# and 8 warps this is the largest dot tile that compiles without register spills on
# sm_80 and sm_90 for float32/bf16/fp16 (tools/check_triton.py).
_MAX_BLOCK_L = 16
_DOT_BLOCK_O = 32


@triton.jit
def _clip(v, tau):
    # where-based so NaN passes through unchanged, as torch.clamp does
    # (tl.minimum/maximum default to fmin/fmax, which drop NaN).
    return tl.where(v < -tau, -tau, tl.where(v > tau, tau, v))


@triton.jit
def _combined_tile(
    w_base, bw_base, offs_i, offs_o, mask, O, tau, HAS_BW: tl.constexpr, ACC: tl.constexpr
):
    """(BLOCK_I, BLOCK_O) tile of weight + clamp(branch); zeros outside ``mask``."""
    ptrs = offs_i[:, None] * O + offs_o[None, :]
    w = tl.load(w_base + ptrs, mask=mask, other=0.0).to(ACC)
    if HAS_BW:
        bw = tl.load(bw_base + ptrs, mask=mask, other=0.0).to(ACC)
        w += _clip(bw, tau)
    return w


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
def _dl_fwd_kernel(
    x_ptr, w_ptr, b_ptr, bw_ptr, bb_ptr, y_ptr,
    L, I, O, tau_ptr,
    HAS_BIAS: tl.constexpr, HAS_BW: tl.constexpr, HAS_BB: tl.constexpr,
    USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    tau = tl.load(tau_ptr).to(ACC)
    pid_b = tl.program_id(0).to(tl.int64)
    pid_o = tl.program_id(1)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = offs_o < O
    brow = tl.zeros([BLOCK_O], dtype=ACC)
    if HAS_BIAS:
        brow += tl.load(b_ptr + pid_b * O + offs_o, mask=o_mask, other=0.0).to(ACC)
    if HAS_BB:
        bb = tl.load(bb_ptr + pid_b * O + offs_o, mask=o_mask, other=0.0).to(ACC)
        brow += _clip(bb, tau)
    x_base = x_ptr + pid_b * L * I
    y_base = y_ptr + pid_b * L * O
    w_base = w_ptr + pid_b * I * O
    bw_base = bw_ptr + pid_b * I * O
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        l_mask = offs_l < L
        acc = tl.zeros([BLOCK_L, BLOCK_O], dtype=ACC) + brow[None, :]
        for i0 in range(0, I, BLOCK_I):
            offs_i = i0 + tl.arange(0, BLOCK_I)
            i_mask = offs_i < I
            w = _combined_tile(
                w_base,
                bw_base,
                offs_i,
                offs_o,
                i_mask[:, None] & o_mask[None, :],
                O,
                tau,
                HAS_BW,
                ACC,
            )
            xt = _load_tile(x_base, offs_l, offs_i, I, l_mask, i_mask, ACC)
            if USE_DOT:
                acc = tl.dot(xt, w, acc, input_precision="ieee")
            else:
                acc += tl.sum(xt[:, :, None] * w[None, :, :], axis=1)
        tl.store(
            y_base + offs_l[:, None] * O + offs_o[None, :],
            acc.to(y_ptr.dtype.element_ty),
            mask=l_mask[:, None] & o_mask[None, :],
        )


@triton.jit
def _dl_bwd_kernel(
    g_ptr, x_ptr, w_ptr, bw_ptr, bb_ptr,
    dx_ptr, dw_ptr, dbw_ptr, db_ptr, dbb_ptr,
    L, I, O, tau_ptr,
    HAS_BW: tl.constexpr, HAS_BB: tl.constexpr,
    NEED_DX: tl.constexpr, NEED_DW: tl.constexpr, NEED_DBW: tl.constexpr,
    USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    """Program (b, i-block): dW/dbranch rows, bias grads (i-block 0) and, when the
    whole L fits one tile (NEED_DX implies it), dx columns of this i-block."""
    tau = tl.load(tau_ptr).to(ACC)
    pid_b = tl.program_id(0).to(tl.int64)
    pid_i = tl.program_id(1)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    i_mask = offs_i < I
    x_base = x_ptr + pid_b * L * I
    g_base = g_ptr + pid_b * L * O
    w_base = w_ptr + pid_b * I * O
    bw_base = bw_ptr + pid_b * I * O
    offs_l0 = tl.arange(0, BLOCK_L)
    dx_acc = tl.zeros([BLOCK_L, BLOCK_I], dtype=ACC)
    for o0 in range(0, O, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        o_mask = o0 + tl.arange(0, BLOCK_O) < O
        io_mask = i_mask[:, None] & o_mask[None, :]
        dw_acc = tl.zeros([BLOCK_I, BLOCK_O], dtype=ACC)
        db_acc = tl.zeros([BLOCK_O], dtype=ACC)
        for l0 in range(0, L, BLOCK_L):
            offs_l = l0 + offs_l0
            l_mask = offs_l < L
            g = _load_tile(g_base, offs_l, offs_o, O, l_mask, o_mask, ACC)
            xt = _load_tile(x_base, offs_l, offs_i, I, l_mask, i_mask, ACC)
            if USE_DOT:
                dw_acc = tl.dot(tl.trans(xt), g, dw_acc, input_precision="ieee")
            else:
                dw_acc += tl.sum(xt[:, :, None] * g[:, None, :], axis=0)
            db_acc += tl.sum(g, axis=0)
            if NEED_DX:
                # Single L tile: g of this o-block is complete here.
                w = _combined_tile(w_base, bw_base, offs_i, offs_o, io_mask, O, tau, HAS_BW, ACC)
                if USE_DOT:
                    dx_acc = tl.dot(g, tl.trans(w), dx_acc, input_precision="ieee")
                else:
                    dx_acc += tl.sum(g[:, None, :] * w[None, :, :], axis=2)
        ptrs = pid_b * I * O + offs_i[:, None] * O + offs_o[None, :]
        if NEED_DW:
            tl.store(dw_ptr + ptrs, dw_acc.to(dw_ptr.dtype.element_ty), mask=io_mask)
        if NEED_DBW:
            bw = tl.load(bw_ptr + ptrs, mask=io_mask, other=0.0).to(ACC)
            # Inclusive at |w| == tau, as torch.clamp's gradient; NaN -> 0.
            inside = (bw >= -tau) & (bw <= tau)
            dbw = tl.where(inside, dw_acc, 0.0)
            tl.store(dbw_ptr + ptrs, dbw.to(dbw_ptr.dtype.element_ty), mask=io_mask)
        # Bias grads once per sample: only i-block 0 writes them.
        # (a block-shaped comparison: the interpreter rejects a scalar bool in a mask)
        b_mask = o_mask & ((offs_o * 0 + pid_i) == 0)
        tl.store(db_ptr + pid_b * O + offs_o, db_acc.to(db_ptr.dtype.element_ty), mask=b_mask)
        if HAS_BB:
            bb = tl.load(bb_ptr + pid_b * O + offs_o, mask=b_mask, other=0.0).to(ACC)
            dbb = tl.where((bb >= -tau) & (bb <= tau), db_acc, 0.0)
            tl.store(dbb_ptr + pid_b * O + offs_o, dbb.to(dbb_ptr.dtype.element_ty), mask=b_mask)
    if NEED_DX:
        offs_l = offs_l0
        tl.store(
            dx_ptr + pid_b * L * I + offs_l[:, None] * I + offs_i[None, :],
            dx_acc.to(dx_ptr.dtype.element_ty),
            mask=(offs_l < L)[:, None] & i_mask[None, :],
        )


@triton.jit
def _dl_bwd_dx_kernel(
    g_ptr, w_ptr, bw_ptr, dx_ptr,
    L, I, O, tau_ptr,
    HAS_BW: tl.constexpr, USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    """dx = grad @ W^T for L longer than one tile: program (b, l-block, i-block)."""
    tau = tl.load(tau_ptr).to(ACC)
    pid_b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(1)
    pid_i = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    l_mask = offs_l < L
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    i_mask = offs_i < I
    g_base = g_ptr + pid_b * L * O
    w_base = w_ptr + pid_b * I * O
    bw_base = bw_ptr + pid_b * I * O
    acc = tl.zeros([BLOCK_L, BLOCK_I], dtype=ACC)
    for o0 in range(0, O, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        o_mask = offs_o < O
        g = _load_tile(g_base, offs_l, offs_o, O, l_mask, o_mask, ACC)
        w = _combined_tile(
            w_base, bw_base, offs_i, offs_o, i_mask[:, None] & o_mask[None, :], O, tau, HAS_BW, ACC
        )
        if USE_DOT:
            acc = tl.dot(g, tl.trans(w), acc, input_precision="ieee")
        else:
            acc += tl.sum(g[:, None, :] * w[None, :, :], axis=2)
    tl.store(
        dx_ptr + pid_b * L * I + offs_l[:, None] * I + offs_i[None, :],
        acc.to(dx_ptr.dtype.element_ty),
        mask=l_mask[:, None] & i_mask[None, :],
    )


def _np2(n: int) -> int:
    return 1 if n <= 1 else triton.next_power_of_2(n)


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def blocks(L: int, I: int, O: int, dtype: torch.dtype) -> tuple[bool, int, int, int]:  # noqa: E741
    """``(use_dot, BLOCK_L, BLOCK_I, BLOCK_O)`` for one problem (see module doc)."""
    use_dot = dtype != torch.float64 and L >= 8
    if use_dot:
        return (
            True,
            min(_MAX_BLOCK_L, max(16, _np2(L))),
            min(32, max(16, _np2(I))),
            min(_DOT_BLOCK_O, max(16, _np2(O))),
        )
    bl, bi, bo = min(_np2(L), 8), min(_np2(I), 32), min(_np2(O), 64)
    budget = 4096 if dtype == torch.float64 else 8192
    while bl * bi * bo > budget and bo > 16:
        bo //= 2
    while bl * bi * bo > budget and bi > 8:
        bi //= 2
    return False, bl, bi, bo


def num_warps(use_dot: bool) -> int:
    """8 warps for the dot tiles (halves registers per thread: no spills), else 4."""
    return 8 if use_dot else 4


@functools.lru_cache(maxsize=64)
def _tau_tensor(tau: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """tau as a 1-element tensor of the input dtype, cached per (tau, dtype, device).

    torch.clamp compares against tau rounded to the tensor's dtype; a Python float
    kernel argument would be specialised as fp32 (wrong for float64, and not the
    bf16/fp16 rounding). Caching avoids a host-to-device copy per call.
    """
    return torch.full((1,), tau, dtype=dtype, device=device)


def _c(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def forward(
    x3: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    branch_weight: torch.Tensor | None,
    branch_bias: torch.Tensor | None,
    tau: float,
) -> torch.Tensor:
    """x3 (B, L, N_in), weight/branch (B, N_in, N_out), biases (B, N_out) -> (B, L, N_out)."""
    x3, weight = x3.contiguous(), weight.contiguous()
    bias, branch_weight, branch_bias = _c(bias), _c(branch_weight), _c(branch_bias)
    B, L, I = x3.shape  # noqa: E741
    O = weight.shape[2]  # noqa: E741
    y = torch.empty((B, L, O), dtype=x3.dtype, device=x3.device)
    if y.numel() == 0:
        return y
    use_dot, bl, bi, bo = blocks(L, I, O, x3.dtype)
    grid = (B, triton.cdiv(O, bo))
    launch(
        _dl_fwd_kernel, grid,
        x3, weight,
        bias if bias is not None else weight,
        branch_weight if branch_weight is not None else weight,
        branch_bias if branch_bias is not None else weight,
        y, L, I, O, _tau_tensor(tau, x3.dtype, x3.device),
        HAS_BIAS=bias is not None, HAS_BW=branch_weight is not None,
        HAS_BB=branch_bias is not None, USE_DOT=use_dot, ACC=_acc_dtype(x3.dtype),
        BLOCK_L=bl, BLOCK_I=bi, BLOCK_O=bo, num_warps=num_warps(use_dot),
    )  # fmt: skip
    return y


def backward(
    grad: torch.Tensor,
    x3: torch.Tensor,
    weight: torch.Tensor,
    branch_weight: torch.Tensor | None,
    branch_bias: torch.Tensor | None,
    tau: float,
    need_dx: bool,
    need_dw: bool,
    need_dbw: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grads ``(dx, dweight, dbranch_weight, dbias, dbranch_bias)``.

    Unneeded ones (and dbranch_* without a branch) are 0-element tensors, as in the
    schema ``solid_ext::dynamic_linear_backward``.
    """
    grad, x3, weight = grad.contiguous(), x3.contiguous(), weight.contiguous()
    branch_weight, branch_bias = _c(branch_weight), _c(branch_bias)
    B, L, I = x3.shape  # noqa: E741
    O = weight.shape[2]  # noqa: E741
    has_bw = branch_weight is not None
    need_dbw = need_dbw and has_bw
    dx = torch.empty_like(x3) if need_dx else x3.new_empty(0)
    dw = torch.empty_like(weight) if need_dw else weight.new_empty(0)
    dbw = torch.empty_like(weight) if need_dbw else weight.new_empty(0)
    db = grad.new_empty((B, O))
    dbb = torch.empty_like(db) if branch_bias is not None else grad.new_empty(0)
    if B == 0 or O == 0:
        return dx, dw, dbw, db, dbb
    if I == 0 or L == 0:
        # Degenerate shapes: a tile loop would write nothing (dx has no elements).
        dw.zero_()
        dbw.zero_()
        db.copy_(grad.sum(1))
        if branch_bias is not None:
            inside = (branch_bias >= -tau) & (branch_bias <= tau)
            dbb.copy_(torch.where(inside, db, torch.zeros_like(db)))
        return dx, dw, dbw, db, dbb
    use_dot, bl, bi, bo = blocks(L, I, O, x3.dtype)
    one_l_tile = bl >= L
    acc = _acc_dtype(x3.dtype)
    tau_t = _tau_tensor(tau, x3.dtype, x3.device)
    dummy = weight
    launch(
        _dl_bwd_kernel, (B, triton.cdiv(I, bi)),
        grad, x3, weight,
        branch_weight if has_bw else dummy,
        branch_bias if branch_bias is not None else dummy,
        dx if need_dx else dummy, dw if need_dw else dummy, dbw if need_dbw else dummy,
        db, dbb if branch_bias is not None else dummy,
        L, I, O, tau_t,
        HAS_BW=has_bw, HAS_BB=branch_bias is not None,
        NEED_DX=need_dx and one_l_tile, NEED_DW=need_dw, NEED_DBW=need_dbw,
        USE_DOT=use_dot, ACC=acc, BLOCK_L=bl, BLOCK_I=bi, BLOCK_O=bo, num_warps=num_warps(use_dot),
    )  # fmt: skip
    if need_dx and not one_l_tile:
        launch(
            _dl_bwd_dx_kernel, (B, triton.cdiv(L, bl), triton.cdiv(I, bi)),
            grad, weight, branch_weight if has_bw else dummy, dx, L, I, O, tau_t,
            HAS_BW=has_bw, USE_DOT=use_dot, ACC=acc,
            BLOCK_L=bl, BLOCK_I=bi, BLOCK_O=bo, num_warps=num_warps(use_dot),
        )  # fmt: skip
    return dx, dw, dbw, db, dbb
