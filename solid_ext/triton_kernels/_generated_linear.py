"""Triton kernels for ``generated_linear`` (forward and backward).

Per sample ``b``: ``W_b[i, o] = sum_k gen_weight[i*N_out + o, k] cond[b, k] + base[i, o]``,
clipped to ±tau when tau is given, and ``y[b] = x[b] @ W_b``. The (B, N_in, N_out)
weights never exist in global memory: programs generate them one input row at a time
for a block of samples, ``W[b-block, i, o-block] = cond[b-block] @ gen_weight[rows]^T
+ base[i, o-block]`` (a small GEMM over C), and consume that row at once.

* Forward (:func:`_gl_fwd_kernel`): program (block of BLOCK_B samples, block of N_out);
  for each L tile it walks the N_in rows, generating row i and adding the rank-1
  update ``x[:, :, i] (x) W[:, i, :]`` to the (BLOCK_B, BLOCK_L, BLOCK_Q) accumulator.
  With L longer than one tile (16) the rows are regenerated per L tile. ``dW`` in the
  backward is formed the same way, one rank-1 update per row of x/grad.
* ``dx = grad @ W^T`` is the same kernel with the roles of N_in and N_out swapped:
  it addresses gen_weight/base rows through ``row = p*s_p + q*s_q``, so it generates
  ``W^T`` rows (a strided gather of gen_weight rows).
* dgen_weight and dbase (:func:`_gl_bwd_gen_kernel`): program ((row i, N_out block),
  chunk of samples, C block). Per sample block it forms ``dW[b, i, o-block] =
  sum_l x[b, l, i] grad[b, l, o]`` (masked with the recomputed ``-tau <= pre <= tau``,
  inclusive as torch.clamp's gradient, NaN -> 0) and accumulates ``dW^T cond`` and
  ``sum_b dW`` in registers. Chunks write partial sums that torch adds afterwards
  (deterministic, no atomics); the chunk count is small (:data:`_MAX_SPLIT`), which
  bounds the partial buffers.
* dcond (:func:`_gl_bwd_cond_kernel`): program (sample block, C block) walking every
  (row, N_out block) tile, recomputing the masked dW and accumulating ``dW gen_weight``:
  complete sums, no partials.

Block-size heuristics (no autotune: ``@triton.autotune`` fails in the interpreter):
the generation GEMM and the dgen/dcond products use ``tl.dot`` on 16 x 16 x 16 tiles
(fp32 accumulation, ``input_precision="ieee"`` so float32 matches an fp32 matmul,
inputs upcast to float32: the interpreter's bf16 dot is wrong) when B >= 8 and C >= 8
fill the 16-wide dot minimum, never for float64. Otherwise the generation is a loop of
rank-1 updates over C, and dgen/dcond are broadcast products; the accumulator and
product tiles are capped at 8192 float32 / 4096 float64 elements. Offsets within a
block of samples are 32-bit (16 * L * N_in etc. must stay below 2**31), block bases and
gen_weight offsets 64-bit. Larger dot tiles (and 3-D dots over a flattened (N_in,
N_out) tile) spill registers: fp32 "ieee" dots are FMA loops that hold whole K
strips per thread. Warps per kernel: :func:`num_warps`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dynamic_linear import _acc_dtype, _clip, _np2, _tau_tensor
from ._launch import launch

_BUDGET = {torch.float64: 4096}
_BUDGET_DEFAULT = 8192
# dgen kernel: at most this many sample chunks (each writes an (N_in*N_out, C) partial
# dgen_weight), chosen to give about _TARGET_PROGRAMS programs in all.
_MAX_SPLIT = 8
_TARGET_PROGRAMS = 256


@triton.jit
def _gen_row(
    cond_blk, gen_ptr, base_ptr, lb, b_mask, row0, offs_q, q_mask, C, s_q,
    GEN_DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Pre-clip weights (BLOCK_B, BLOCK_Q) of the samples ``lb`` of a block (cond rows
    at ``cond_blk``) from gen_weight rows (and base elements) ``row0 + offs_q * s_q``;
    zeros outside the masks."""
    rows = row0 + offs_q * s_q
    gen_rows = gen_ptr + rows.to(tl.int64) * C
    w = tl.zeros([BLOCK_B, BLOCK_Q], dtype=ACC)
    if GEN_DOT:
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < C
            ct = tl.load(
                cond_blk + lb[:, None] * C + offs_k[None, :],
                mask=b_mask[:, None] & k_mask[None, :],
                other=0.0,
            ).to(ACC)
            # gen_weight rows as columns: (BLOCK_K, BLOCK_Q)
            gt = tl.load(
                gen_rows[None, :] + offs_k[:, None],
                mask=k_mask[:, None] & q_mask[None, :],
                other=0.0,
            ).to(ACC)
            w = tl.dot(ct, gt, w, input_precision="ieee")
    else:  # rank-1 updates, one feature at a time
        for k in range(0, C):
            ck = tl.load(cond_blk + lb * C + k, mask=b_mask, other=0.0).to(ACC)
            gk = tl.load(gen_rows + k, mask=q_mask, other=0.0).to(ACC)
            w += ck[:, None] * gk[None, :]
    base = tl.load(base_ptr + rows, mask=q_mask, other=0.0).to(ACC)
    return w + base[None, :]


@triton.jit
def _masked_dw(
    g_blk, x_blk, cond_blk, gen_ptr, base_ptr, lb, b_mask, i, offs_o, o_mask,
    L, I, O, C, tau,
    HAS_TAU: tl.constexpr, GEN_DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """dW[b, i, o] = sum_l x[b, l, i] grad[b, l, o] (BLOCK_B, BLOCK_O) for the samples
    ``lb`` of a block, zero where the forward clipped (pre-clip weight outside
    [-tau, tau], or NaN)."""
    dw = tl.zeros([BLOCK_B, BLOCK_O], dtype=ACC)
    for l in range(0, L):  # rank-1 updates, one row of x/grad at a time
        xc = tl.load(x_blk + (lb * L + l) * I + i, mask=b_mask, other=0.0).to(ACC)
        gr = tl.load(
            g_blk + (lb * L + l)[:, None] * O + offs_o[None, :],
            mask=b_mask[:, None] & o_mask[None, :],
            other=0.0,
        ).to(ACC)
        dw += xc[:, None] * gr
    if HAS_TAU:
        pre = _gen_row(
            cond_blk, gen_ptr, base_ptr, lb, b_mask, i * O, offs_o, o_mask,
            C, 1, GEN_DOT, ACC, BLOCK_B, BLOCK_O, BLOCK_K,
        )  # fmt: skip
        # Inclusive at |pre| == tau, as torch.clamp's gradient; NaN -> 0.
        dw = tl.where((pre >= -tau) & (pre <= tau), dw, 0.0)
    return dw


@triton.jit
def _gl_fwd_kernel(
    x_ptr, cond_ptr, gen_ptr, base_ptr, y_ptr,
    B, L, P, Q, C, s_p, s_q, tau_ptr,
    HAS_TAU: tl.constexpr, GEN_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y (B, L, Q) = x (B, L, P) @ V_b with V_b[p, q] generated from gen_weight row
    ``p*s_p + q*s_q``: program (sample block, Q block)."""
    b0 = tl.program_id(0) * BLOCK_B
    offs_q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < Q
    lb = tl.arange(0, BLOCK_B)  # sample within the block
    b_mask = b0 + lb < B
    # 64-bit block bases, 32-bit offsets within a block
    x_blk = x_ptr + b0.to(tl.int64) * L * P
    y_blk = y_ptr + b0.to(tl.int64) * L * Q
    cond_blk = cond_ptr + b0.to(tl.int64) * C
    if HAS_TAU:
        tau = tl.load(tau_ptr).to(ACC)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        bl_mask = b_mask[:, None] & (offs_l < L)[None, :]
        x_rows = x_blk + lb[:, None] * (L * P) + offs_l[None, :] * P
        acc = tl.zeros([BLOCK_B, BLOCK_L, BLOCK_Q], dtype=ACC)
        for p in range(0, P):
            w = _gen_row(
                cond_blk, gen_ptr, base_ptr, lb, b_mask, p * s_p, offs_q, q_mask, C, s_q,
                GEN_DOT, ACC, BLOCK_B, BLOCK_Q, BLOCK_K,
            )  # fmt: skip
            if HAS_TAU:
                w = _clip(w, tau)
            xc = tl.load(x_rows + p, mask=bl_mask, other=0.0).to(ACC)
            acc += xc[:, :, None] * w[:, None, :]
        tl.store(
            y_blk + (lb[:, None] * (L * Q) + offs_l[None, :] * Q)[:, :, None]
            + offs_q[None, None, :],
            acc.to(y_ptr.dtype.element_ty),
            mask=bl_mask[:, :, None] & q_mask[None, None, :],
        )  # fmt: skip


@triton.jit
def _gl_bwd_gen_kernel(
    g_ptr, x_ptr, cond_ptr, gen_ptr, base_ptr, dgen_part_ptr, dbase_part_ptr,
    B, L, I, O, C, B_PER, tau_ptr,
    HAS_TAU: tl.constexpr, NEED_DGEN: tl.constexpr, NEED_DBASE: tl.constexpr,
    GEN_DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program ((row i, O block) t, sample chunk s, C block): over samples
    [s*B_PER, (s+1)*B_PER), dgen partial[s, i*O + o, C block] = sum_b dW[b, i, o]
    cond[b, k] and dbase partial[s, i*O + o] = sum_b dW[b, i, o] (C block 0 only).
    The tiles, N_in * cdiv(N_out, BLOCK_O) of them, are on grid axis 0: axes 1 and 2
    are limited to 65535 programs."""
    pid_t = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_k = tl.program_id(2)
    n_o = tl.cdiv(O, BLOCK_O)
    i = pid_t // n_o
    offs_o = (pid_t % n_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = offs_o < O
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < C
    lb = tl.arange(0, BLOCK_B)
    tau = 0.0
    if HAS_TAU:
        tau = tl.load(tau_ptr).to(ACC)
    dgen = tl.zeros([BLOCK_O, BLOCK_K], dtype=ACC)
    dbase = tl.zeros([BLOCK_O], dtype=ACC)
    for bb in range(0, B_PER, BLOCK_B):
        b0 = pid_s * B_PER + bb
        b_mask = b0 + lb < B
        cond_blk = cond_ptr + b0.to(tl.int64) * C
        dw = _masked_dw(
            g_ptr + b0.to(tl.int64) * L * O, x_ptr + b0.to(tl.int64) * L * I, cond_blk,
            gen_ptr, base_ptr, lb, b_mask, i, offs_o, o_mask, L, I, O, C, tau,
            HAS_TAU, GEN_DOT, ACC, BLOCK_B, BLOCK_O, BLOCK_K,
        )  # fmt: skip
        if NEED_DBASE:
            dbase += tl.sum(dw, axis=0)
        if NEED_DGEN:
            ct = tl.load(
                cond_blk + lb[:, None] * C + offs_k[None, :],
                mask=b_mask[:, None] & k_mask[None, :],
                other=0.0,
            ).to(ACC)
            if GEN_DOT:
                dgen = tl.dot(tl.trans(dw), ct, dgen, input_precision="ieee")
            else:
                dgen += tl.sum(dw[:, :, None] * ct[:, None, :], axis=0)
    part = pid_s.to(tl.int64) * I * O + i * O  # partial s, weight row i
    if NEED_DGEN:
        tl.store(
            dgen_part_ptr + part * C + offs_o[:, None] * C + offs_k[None, :],
            dgen,
            mask=o_mask[:, None] & k_mask[None, :],
        )
    if NEED_DBASE:
        # Once per tile: only C block 0 writes (a block-shaped comparison: the
        # interpreter rejects a scalar bool in a mask).
        tl.store(dbase_part_ptr + part + offs_o, dbase, mask=o_mask & ((offs_o * 0 + pid_k) == 0))


@triton.jit
def _gl_bwd_cond_kernel(
    g_ptr, x_ptr, cond_ptr, gen_ptr, base_ptr, dcond_ptr,
    B, L, I, O, C, tau_ptr,
    HAS_TAU: tl.constexpr, GEN_DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program (sample block, C block): dcond[b, k] = sum_{i, o} dW[b, i, o]
    gen_weight[i*O + o, k], over every (row i, O block) tile in turn."""
    b0 = tl.program_id(0) * BLOCK_B
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < C
    lb = tl.arange(0, BLOCK_B)
    b_mask = b0 + lb < B
    g_blk = g_ptr + b0.to(tl.int64) * L * O
    x_blk = x_ptr + b0.to(tl.int64) * L * I
    cond_blk = cond_ptr + b0.to(tl.int64) * C
    tau = 0.0
    if HAS_TAU:
        tau = tl.load(tau_ptr).to(ACC)
    n_o = tl.cdiv(O, BLOCK_O)
    dc = tl.zeros([BLOCK_B, BLOCK_K], dtype=ACC)
    for t in range(0, I * n_o):
        i = t // n_o
        offs_o = (t % n_o) * BLOCK_O + tl.arange(0, BLOCK_O)
        o_mask = offs_o < O
        dw = _masked_dw(
            g_blk, x_blk, cond_blk, gen_ptr, base_ptr, lb, b_mask, i, offs_o, o_mask,
            L, I, O, C, tau, HAS_TAU, GEN_DOT, ACC, BLOCK_B, BLOCK_O, BLOCK_K,
        )  # fmt: skip
        gt = tl.load(
            gen_ptr + (i * O + offs_o).to(tl.int64)[:, None] * C + offs_k[None, :],
            mask=o_mask[:, None] & k_mask[None, :],
            other=0.0,
        ).to(ACC)
        if GEN_DOT:
            dc = tl.dot(dw, gt, dc, input_precision="ieee")
        else:
            dc += tl.sum(dw[:, :, None] * gt[None, :, :], axis=1)
    tl.store(
        dcond_ptr + b0.to(tl.int64) * C + lb[:, None] * C + offs_k[None, :],
        dc.to(dcond_ptr.dtype.element_ty),
        mask=b_mask[:, None] & k_mask[None, :],
    )


def blocks(
    B: int,
    L: int,
    Q: int,  # noqa: E741
    C: int,
    dtype: torch.dtype,
) -> tuple[bool, int, int, int, int]:
    """``(gen_dot, BLOCK_B, BLOCK_L, BLOCK_Q, BLOCK_K)`` for B samples, L rows, Q output
    columns (N_out; N_in for dx) and C condition features (see module doc)."""
    gen_dot = dtype != torch.float64 and B >= 8 and C >= 8
    if gen_dot:  # every tl.dot dimension >= 16 (its minimum)
        bb, bq, bk = 16, 16, 16
    else:
        bb, bq, bk = min(_np2(B), 16), min(_np2(Q), 32), min(_np2(C), 16)
    bl = min(_np2(L), 16)
    budget = _BUDGET.get(dtype, _BUDGET_DEFAULT)
    # Caps: the (BLOCK_B, BLOCK_L, BLOCK_Q) forward accumulator and, without dot, the
    # (BLOCK_B, BLOCK_O, BLOCK_K) dgen/dcond products. Shrink the C block, L block, Q.
    while not gen_dot and bb * bk * bq > budget and bk > 4:
        bk //= 2
    while bb * bl * bq > budget and bl > 1:
        bl //= 2
    while (bb * bl * bq > budget or (not gen_dot and bb * bk * bq > budget)) and bq > (
        16 if gen_dot else 1
    ):
        bq //= 2
    return gen_dot, bb, bl, bq, bk


def num_warps(kernel: str, gen_dot: bool, tile: int) -> int:
    """Warps for ``kernel`` ("fwd", "cond" or "gen") with a ``tile``-element accumulator
    (BLOCK_B * BLOCK_L * BLOCK_Q forward, BLOCK_B * BLOCK_O backward).

    The choices that compile without register spills on sm_80 and sm_90
    (tools/check_triton.py): ptxas spills a few bytes of loop-invariant values in some
    other combinations even far below the register limit.
    """
    if gen_dot:
        return 4 if kernel == "gen" else 8
    return 1 if tile <= 256 else 8


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
    s_p: int,
    s_q: int,
) -> None:
    """``out[b] = x3[b] @ V_b``, V_b[p, q] generated from gen_weight row ``p*s_p + q*s_q``
    (contiguous tensors, no empty dimension)."""
    B, L, P = x3.shape
    Q = out.shape[2]
    C = cond.shape[1]
    gen_dot, bb, bl, bq, bk = blocks(B, L, Q, C, x3.dtype)
    launch(
        _gl_fwd_kernel, (triton.cdiv(B, bb), triton.cdiv(Q, bq)),
        x3, cond, gen_weight, base, out, B, L, P, Q, C, s_p, s_q, _tau_arg(tau, x3),
        HAS_TAU=tau is not None, GEN_DOT=gen_dot, ACC=_acc_dtype(x3.dtype),
        BLOCK_B=bb, BLOCK_L=bl, BLOCK_Q=bq, BLOCK_K=bk,
        num_warps=num_warps("fwd", gen_dot, bb * bl * bq),
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
    dcond = torch.empty_like(cond) if need_dcond else cond.new_empty(0)
    dgen = torch.empty_like(gen_weight) if need_dgen else gen_weight.new_empty(0)
    dbase = torch.empty_like(base) if need_dbase else base.new_empty(0)
    if need_dx and dx.numel():
        if O == 0:
            dx.zero_()
        else:  # dx[b] = grad[b] @ W_b^T: W^T[o, i] is gen_weight row o + i*O
            _apply(grad, cond, gen_weight, base, tau, dx, 1, O)
    if B == 0 or L == 0 or I == 0 or O == 0:
        # No weight gradient: no samples, no rows, or no weights.
        return dx, dcond.zero_(), dgen.zero_(), dbase.zero_()
    gen_dot, bb, bl, bo, bk = blocks(B, L, O, C, x3.dtype)
    acc = _acc_dtype(x3.dtype)
    tau_t = _tau_arg(tau, x3)
    n_b, n_o = triton.cdiv(B, bb), triton.cdiv(O, bo)
    if need_dcond and C:
        launch(
            _gl_bwd_cond_kernel, (n_b, triton.cdiv(C, bk)),
            grad, x3, cond, gen_weight, base, dcond, B, L, I, O, C, tau_t,
            HAS_TAU=tau is not None, GEN_DOT=gen_dot, ACC=acc,
            BLOCK_B=bb, BLOCK_O=bo, BLOCK_K=bk, num_warps=num_warps("cond", gen_dot, bb * bo),
        )  # fmt: skip
    need_dgen = need_dgen and C > 0
    if need_dgen or need_dbase:
        n_k = triton.cdiv(C, bk) if need_dgen else 1
        split = min(n_b, _MAX_SPLIT, max(1, _TARGET_PROGRAMS // (I * n_o * n_k)))
        b_per = triton.cdiv(n_b, split) * bb
        split = triton.cdiv(B, b_per)
        part_t = torch.float64 if x3.dtype == torch.float64 else torch.float32
        dgen_p = gen_weight.new_empty((split, I * O, C), dtype=part_t) if need_dgen else dgen
        dbase_p = base.new_empty((split, I * O), dtype=part_t) if need_dbase else dbase
        launch(
            _gl_bwd_gen_kernel, (I * n_o, split, n_k),
            grad, x3, cond, gen_weight, base, dgen_p, dbase_p, B, L, I, O, C, b_per, tau_t,
            HAS_TAU=tau is not None, NEED_DGEN=need_dgen, NEED_DBASE=need_dbase,
            GEN_DOT=gen_dot, ACC=acc,
            BLOCK_B=bb, BLOCK_O=bo, BLOCK_K=bk, num_warps=num_warps("gen", gen_dot, bb * bo),
        )  # fmt: skip
        if need_dgen:
            dgen.copy_(dgen_p.sum(0).view(dgen.shape))
        if need_dbase:
            dbase.copy_(dbase_p.sum(0).view(dbase.shape))
    return dx, dcond, dgen, dbase
