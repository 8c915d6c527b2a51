"""Triton kernels for ``generated_linear`` (forward and backward).

Per sample ``b``: ``W_b[i, o] = sum_k gen_weight[i*N_out + o, k] cond[b, k] + base[i, o]``,
clipped to ±tau when tau is given, and ``y[b] = x[b] @ W_b``. The (B, N_in, N_out)
weights never exist in global memory: every program generates a tile of them in
registers (a small GEMM, ``cond`` block x ``gen_weight`` rows) and consumes it at once.

* Forward: program (block of BLOCK_B samples, block of N_out). For each L tile and
  each N_in tile it generates the (BLOCK_B, BLOCK_I, BLOCK_O) weight tile (looping
  over C) and accumulates ``x @ W`` per sample. With L longer than one tile the weight
  tile is regenerated per L tile (a (C / BLOCK_L)-fold extra read of ``gen_weight``
  tiles; the common case, L <= 16, generates each tile once).
* ``dx = grad @ W^T`` is the forward kernel again, with the roles of N_in and N_out
  swapped: it reads ``gen_weight``/``base`` through strides (``s_in``, ``s_out``), so
  ``W^T`` is generated the same way.
* Weight-side grads: program (chunk of samples, (N_in, N_out) tile, C block). For each
  sample block in its chunk it forms ``dW = x^T grad`` for the tile (looping over L),
  masks it with the recomputed ``-tau <= pre <= tau`` (inclusive, as torch.clamp's
  gradient; NaN -> 0), and adds ``dW^T cond`` (dgen_weight) and ``dW`` (dbase) into
  register accumulators and writes ``dW gen_weight`` (dcond) for its C block. Sums
  across programs go through per-program partial buffers (dgen/dbase per sample chunk,
  dcond per weight tile) summed by torch afterwards: deterministic, no atomics. The
  chunk count is capped (:data:`_MAX_SPLIT`), which bounds the partial buffers.

Block-size heuristics (no autotune: ``@triton.autotune`` fails in the interpreter):
``tl.dot`` (fp32 accumulation, ``input_precision="ieee"``, inputs upcast to float32:
the interpreter's bf16 dot is wrong) wherever the problem fills the 16-element dot
minimum (generation: B >= 8 and C >= 8; application: L >= 8), never for float64 (no
fp64 dot); otherwise broadcast-multiply-reduce tiles whose element count is capped.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dynamic_linear import _acc_dtype, _clip, _np2, _tau_tensor
from ._launch import launch

# Elements of a broadcast-multiply-reduce product tile (bounds registers).
_BUDGET = {torch.float64: 4096}
_BUDGET_DEFAULT = 8192
# Weight-grad kernel: at most this many sample chunks (each writes an (N_in*N_out, C)
# partial dgen_weight), aiming at about _TARGET_PROGRAMS programs in all.
_MAX_SPLIT = 32
_TARGET_PROGRAMS = 256


@triton.jit
def _gen_tile(
    cond_ptr, gen_ptr, base_ptr, offs_b, b_mask, i0, o0, I, O, C, s_in, s_out,
    GEN_DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Pre-clip weights of samples ``offs_b`` for (i0.., o0..), as (BLOCK_B, BLOCK_I *
    BLOCK_O) with column ``r`` = (i0 + r // BLOCK_O, o0 + r % BLOCK_O); zeros outside
    the masks. Weight (i, o) is row ``i*s_in + o*s_out`` of gen_weight and element
    ``i*s_in + o*s_out`` of base."""
    r = tl.arange(0, BLOCK_I * BLOCK_O)
    ri = i0 + r // BLOCK_O
    ro = o0 + r % BLOCK_O
    r_mask = (ri < I) & (ro < O)
    rows = ri.to(tl.int64) * s_in + ro * s_out
    w = tl.zeros([BLOCK_B, BLOCK_I * BLOCK_O], dtype=ACC)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < C
        ct = tl.load(
            cond_ptr + offs_b[:, None] * C + offs_k[None, :],
            mask=b_mask[:, None] & k_mask[None, :],
            other=0.0,
        ).to(ACC)
        gt = tl.load(
            gen_ptr + rows[:, None] * C + offs_k[None, :],
            mask=r_mask[:, None] & k_mask[None, :],
            other=0.0,
        ).to(ACC)
        if GEN_DOT:
            w = tl.dot(ct, tl.trans(gt), w, input_precision="ieee")
        else:
            w += tl.sum(ct[:, None, :] * gt[None, :, :], axis=2)
    base = tl.load(base_ptr + rows, mask=r_mask, other=0.0).to(ACC)
    return w + base[None, :]


@triton.jit
def _gl_fwd_kernel(
    x_ptr, cond_ptr, gen_ptr, base_ptr, y_ptr,
    B, L, I, O, C, s_in, s_out, tau_ptr,
    HAS_TAU: tl.constexpr, GEN_DOT: tl.constexpr, APPLY_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_I: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y (B, L, O) = x (B, L, I) @ W_b: program (sample block, O block)."""
    pid_b = tl.program_id(0)
    pid_o = tl.program_id(1)
    offs_b = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_mask = offs_b < B
    o0 = pid_o * BLOCK_O
    offs_o = o0 + tl.arange(0, BLOCK_O)
    o_mask = offs_o < O
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        bl_mask = b_mask[:, None, None] & (offs_l < L)[None, :, None]
        acc = tl.zeros([BLOCK_B, BLOCK_L, BLOCK_O], dtype=ACC)
        for i0 in range(0, I, BLOCK_I):
            offs_i = i0 + tl.arange(0, BLOCK_I)
            w = _gen_tile(
                cond_ptr, gen_ptr, base_ptr, offs_b, b_mask, i0, o0, I, O, C, s_in, s_out,
                GEN_DOT, ACC, BLOCK_B, BLOCK_I, BLOCK_O, BLOCK_K,
            )  # fmt: skip
            if HAS_TAU:
                w = _clip(w, tl.load(tau_ptr).to(ACC))
            w = tl.reshape(w, (BLOCK_B, BLOCK_I, BLOCK_O))
            xt = tl.load(
                x_ptr + offs_b[:, None, None] * L * I + offs_l[None, :, None] * I
                + offs_i[None, None, :],
                mask=bl_mask & (offs_i < I)[None, None, :],
                other=0.0,
            ).to(ACC)  # fmt: skip
            if APPLY_DOT:
                acc = tl.dot(xt, w, acc, input_precision="ieee")
            else:
                acc += tl.sum(xt[:, :, :, None] * w[:, None, :, :], axis=2)
        tl.store(
            y_ptr + offs_b[:, None, None] * L * O + offs_l[None, :, None] * O
            + offs_o[None, None, :],
            acc.to(y_ptr.dtype.element_ty),
            mask=bl_mask & o_mask[None, None, :],
        )  # fmt: skip


@triton.jit
def _gl_bwd_kernel(
    g_ptr, x_ptr, cond_ptr, gen_ptr, base_ptr,
    dcond_part_ptr, dgen_part_ptr, dbase_part_ptr,
    B, L, I, O, C, B_PER, tau_ptr,
    HAS_TAU: tl.constexpr, NEED_DCOND: tl.constexpr, NEED_DGEN: tl.constexpr,
    NEED_DBASE: tl.constexpr, GEN_DOT: tl.constexpr, APPLY_DOT: tl.constexpr,
    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr,
    BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program (sample chunk s, (I, O) tile t, C block): over samples
    [s*B_PER, (s+1)*B_PER), dgen partial[s, rows of t, C block] = sum_b dW_b^T cond,
    dbase partial[s, t] = sum_b dW_b (C block 0 only), and dcond partial[t, b, C block]
    = dW_b gen_weight[rows of t]."""
    pid_s = tl.program_id(0)
    pid_t = tl.program_id(1)
    pid_k = tl.program_id(2)
    n_o = tl.cdiv(O, BLOCK_O)
    i0 = (pid_t // n_o) * BLOCK_I
    o0 = (pid_t % n_o) * BLOCK_O
    offs_i = i0 + tl.arange(0, BLOCK_I)
    offs_o = o0 + tl.arange(0, BLOCK_O)
    r = tl.arange(0, BLOCK_I * BLOCK_O)
    ri = i0 + r // BLOCK_O
    ro = o0 + r % BLOCK_O
    r_mask = (ri < I) & (ro < O)
    rows = ri.to(tl.int64) * O + ro
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < C
    rk_mask = r_mask[:, None] & k_mask[None, :]
    if NEED_DCOND:
        gt = tl.load(gen_ptr + rows[:, None] * C + offs_k[None, :], mask=rk_mask, other=0.0)
        gt = gt.to(ACC)
    dgen = tl.zeros([BLOCK_I * BLOCK_O, BLOCK_K], dtype=ACC)
    dbase = tl.zeros([BLOCK_I * BLOCK_O], dtype=ACC)
    for b0 in range(0, B_PER, BLOCK_B):
        offs_b = pid_s.to(tl.int64) * B_PER + b0 + tl.arange(0, BLOCK_B)
        b_mask = offs_b < B
        dw = tl.zeros([BLOCK_B, BLOCK_I, BLOCK_O], dtype=ACC)
        for l0 in range(0, L, BLOCK_L):
            offs_l = l0 + tl.arange(0, BLOCK_L)
            l_mask = offs_l < L
            # x^T tile (BLOCK_B, BLOCK_I, BLOCK_L) and grad tile (BLOCK_B, BLOCK_L, BLOCK_O)
            xt = tl.load(
                x_ptr + offs_b[:, None, None] * L * I + offs_i[None, :, None]
                + offs_l[None, None, :] * I,
                mask=b_mask[:, None, None] & (offs_i < I)[None, :, None]
                & l_mask[None, None, :],
                other=0.0,
            ).to(ACC)  # fmt: skip
            gt3 = tl.load(
                g_ptr + offs_b[:, None, None] * L * O + offs_l[None, :, None] * O
                + offs_o[None, None, :],
                mask=b_mask[:, None, None] & l_mask[None, :, None] & (offs_o < O)[None, None, :],
                other=0.0,
            ).to(ACC)  # fmt: skip
            if APPLY_DOT:
                dw = tl.dot(xt, gt3, dw, input_precision="ieee")
            else:
                dw += tl.sum(xt[:, :, :, None] * gt3[:, None, :, :], axis=2)
        dw = tl.reshape(dw, (BLOCK_B, BLOCK_I * BLOCK_O))
        if HAS_TAU:
            tau = tl.load(tau_ptr).to(ACC)
            pre = _gen_tile(
                cond_ptr, gen_ptr, base_ptr, offs_b, b_mask, i0, o0, I, O, C, O, 1,
                GEN_DOT, ACC, BLOCK_B, BLOCK_I, BLOCK_O, BLOCK_K,
            )  # fmt: skip
            # Inclusive at |pre| == tau, as torch.clamp's gradient; NaN -> 0.
            dw = tl.where((pre >= -tau) & (pre <= tau), dw, 0.0)
        if NEED_DBASE:
            dbase += tl.sum(dw, axis=0)
        if NEED_DGEN:
            ct = tl.load(
                cond_ptr + offs_b[:, None] * C + offs_k[None, :],
                mask=b_mask[:, None] & k_mask[None, :],
                other=0.0,
            ).to(ACC)
            if GEN_DOT:
                dgen = tl.dot(tl.trans(dw), ct, dgen, input_precision="ieee")
            else:
                dgen += tl.sum(dw[:, :, None] * ct[:, None, :], axis=0)
        if NEED_DCOND:
            if GEN_DOT:
                dc = tl.dot(dw, gt, input_precision="ieee")
            else:
                dc = tl.sum(dw[:, :, None] * gt[None, :, :], axis=1)
            tl.store(
                dcond_part_ptr + pid_t.to(tl.int64) * B * C + offs_b[:, None] * C
                + offs_k[None, :],
                dc,
                mask=b_mask[:, None] & k_mask[None, :],
            )  # fmt: skip
    part = pid_s.to(tl.int64) * I * O
    if NEED_DGEN:
        tl.store(dgen_part_ptr + (part + rows)[:, None] * C + offs_k[None, :], dgen, mask=rk_mask)
    if NEED_DBASE:
        # Once per tile: only C block 0 writes (a block-shaped comparison: the
        # interpreter rejects a scalar bool in a mask).
        tl.store(dbase_part_ptr + part + rows, dbase, mask=r_mask & ((r * 0 + pid_k) == 0))


def blocks(
    B: int,
    L: int,
    I: int,  # noqa: E741
    O: int,  # noqa: E741
    C: int,
    dtype: torch.dtype,
) -> tuple[bool, bool, int, int, int, int, int]:
    """``(gen_dot, apply_dot, BLOCK_B, BLOCK_L, BLOCK_I, BLOCK_O, BLOCK_K)`` (module doc).

    gen_dot: the weight generation (B x C by C x (I*O)) and the dcond/dgen products use
    ``tl.dot`` (BLOCK_B, BLOCK_K >= 16); apply_dot: ``x @ W`` and ``x^T grad`` do
    (BLOCK_L, BLOCK_I, BLOCK_O >= 16)."""
    fp64 = dtype == torch.float64
    gen_dot = not fp64 and B >= 8 and C >= 8
    apply_dot = not fp64 and L >= 8
    bb = 16 if gen_dot else min(_np2(B), 16)
    bk = 16 if gen_dot else min(_np2(C), 16)
    if apply_dot:
        bl, bi, bo = 16, 16, max(16, min(_np2(O), 32))
    else:
        bl, bi, bo = min(_np2(L), 8), min(_np2(I), 16), min(_np2(O), 32)
    budget = _BUDGET.get(dtype, _BUDGET_DEFAULT)

    def too_big() -> bool:
        return (
            bb * bi * bo > budget
            or (not apply_dot and bb * bl * bi * bo > budget)
            or (not gen_dot and bb * bi * bo * bk > budget)
        )

    # Shrink what no dot needs at 16 first: the C block, then N_out, N_in, samples.
    while too_big() and not gen_dot and bk > 4:
        bk //= 2
    while too_big() and bo > (16 if apply_dot else 8):
        bo //= 2
    while too_big() and bi > (16 if apply_dot else 4):
        bi //= 2
    while too_big() and bb > (16 if gen_dot else 1):
        bb //= 2
    while too_big() and not gen_dot and bk > 1:
        bk //= 2
    return gen_dot, apply_dot, bb, bl, bi, bo, bk


def num_warps(gen_dot: bool, apply_dot: bool) -> int:
    """8 warps when a dot tile is used (fewer registers per thread), else 4."""
    return 8 if gen_dot or apply_dot else 4


def _tau_arg(tau: float | None, like: torch.Tensor) -> torch.Tensor:
    # tau rounded to the inputs' dtype, as torch.clamp compares it; any tensor without.
    return like if tau is None else _tau_tensor(tau, like.dtype, like.device)


def _apply(
    x3: torch.Tensor,
    cond: torch.Tensor,
    gen_weight: torch.Tensor,
    base: torch.Tensor,
    tau: float | None,
    out: torch.Tensor,
    s_in: int,
    s_out: int,
) -> None:
    """``out[b] = x3[b] @ V_b`` where V_b[p, q] (p < x3's last dim, q < out's) is
    generated from row ``p*s_in + q*s_out`` (contiguous inputs; no empty dims)."""
    B, L, P = x3.shape
    Q = out.shape[2]
    C = cond.shape[1]
    gen_dot, apply_dot, bb, bl, bi, bo, bk = blocks(B, L, P, Q, C, x3.dtype)
    launch(
        _gl_fwd_kernel, (triton.cdiv(B, bb), triton.cdiv(Q, bo)),
        x3, cond, gen_weight, base, out, B, L, P, Q, C, s_in, s_out, _tau_arg(tau, x3),
        HAS_TAU=tau is not None, GEN_DOT=gen_dot, APPLY_DOT=apply_dot,
        ACC=_acc_dtype(x3.dtype), BLOCK_B=bb, BLOCK_L=bl, BLOCK_I=bi, BLOCK_O=bo,
        BLOCK_K=bk, num_warps=num_warps(gen_dot, apply_dot),
    )  # fmt: skip


def forward(
    x3: torch.Tensor,
    cond: torch.Tensor,
    gen_weight: torch.Tensor,
    base: torch.Tensor,
    tau: float | None,
) -> torch.Tensor:
    """x3 (B, L, N_in), cond (B, C), gen_weight (N_in*N_out, C), base (N_in, N_out)
    -> (B, L, N_out)."""
    x3, cond, gen_weight, base = (t.contiguous() for t in (x3, cond, gen_weight, base))
    B, L, I = x3.shape  # noqa: E741
    O = base.shape[1]  # noqa: E741
    y = torch.empty((B, L, O), dtype=x3.dtype, device=x3.device)
    if y.numel() == 0:
        return y
    if I == 0:
        return y.zero_()
    _apply(x3, cond, gen_weight, base, tau, y, O, 1)
    return y


def backward(
    grad: torch.Tensor,
    x3: torch.Tensor,
    cond: torch.Tensor,
    gen_weight: torch.Tensor,
    base: torch.Tensor,
    tau: float | None,
    need_dx: bool,
    need_dcond: bool,
    need_dgen: bool,
    need_dbase: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grads ``(dx, dcond, dgen_weight, dbase)``; unneeded ones are 0-element tensors,
    as in the schema ``solid_ext::generated_linear_backward``."""
    grad, x3, cond, gen_weight, base = (t.contiguous() for t in (grad, x3, cond, gen_weight, base))
    B, L, I = x3.shape  # noqa: E741
    O = base.shape[1]  # noqa: E741
    C = cond.shape[1]
    dx = torch.empty_like(x3) if need_dx else x3.new_empty(0)
    if need_dx and dx.numel():
        if O == 0:
            dx.zero_()
        else:
            _apply(grad, cond, gen_weight, base, tau, dx, 1, O)
    if not (need_dcond or need_dgen or need_dbase):
        return dx, cond.new_empty(0), gen_weight.new_empty(0), base.new_empty(0)
    if B == 0 or L == 0 or I == 0 or O == 0:
        # No weight gradient at all (no samples/rows, or no weights).
        dcond = torch.zeros_like(cond) if need_dcond else cond.new_empty(0)
        dgen = torch.zeros_like(gen_weight) if need_dgen else gen_weight.new_empty(0)
        dbase = torch.zeros_like(base) if need_dbase else base.new_empty(0)
        return dx, dcond, dgen, dbase
    gen_dot, apply_dot, bb, bl, bi, bo, bk = blocks(B, L, I, O, C, x3.dtype)
    n_tiles = triton.cdiv(I, bi) * triton.cdiv(O, bo)
    n_k = max(1, triton.cdiv(C, bk))  # one C block even for C = 0: dbase needs it
    n_b = triton.cdiv(B, bb)
    split = max(1, min(n_b, _MAX_SPLIT, triton.cdiv(_TARGET_PROGRAMS, n_tiles * n_k)))
    b_per = triton.cdiv(n_b, split) * bb
    split = triton.cdiv(B, b_per)
    acc_t = torch.float64 if x3.dtype == torch.float64 else torch.float32
    dcond_p = cond.new_empty((n_tiles, B, C), dtype=acc_t) if need_dcond else None
    dgen_p = gen_weight.new_empty((split, I * O, C), dtype=acc_t) if need_dgen else None
    dbase_p = base.new_empty((split, I * O), dtype=acc_t) if need_dbase else None
    dummy = x3
    launch(
        _gl_bwd_kernel, (split, n_tiles, n_k),
        grad, x3, cond, gen_weight, base,
        dummy if dcond_p is None else dcond_p,
        dummy if dgen_p is None else dgen_p,
        dummy if dbase_p is None else dbase_p,
        B, L, I, O, C, b_per, _tau_arg(tau, x3),
        HAS_TAU=tau is not None, NEED_DCOND=need_dcond, NEED_DGEN=need_dgen,
        NEED_DBASE=need_dbase, GEN_DOT=gen_dot, APPLY_DOT=apply_dot,
        ACC=_acc_dtype(x3.dtype), BLOCK_B=bb, BLOCK_L=bl, BLOCK_I=bi, BLOCK_O=bo,
        BLOCK_K=bk, num_warps=num_warps(gen_dot, apply_dot),
    )  # fmt: skip

    def total(part: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if part is None:
            return like.new_empty(0)
        return part.sum(0).view(like.shape).to(like.dtype)

    return dx, total(dcond_p, cond), total(dgen_p, gen_weight), total(dbase_p, base)
