"""Triton kernels for ``codebook_quantize`` (fused search and backward scatter).

Forward: one program owns BLOCK_M rows of z (held in registers for the whole
search) and sweeps the codebook in BLOCK_K tiles. Each tile's scores
``||C_k||^2 - 2 z.C_k`` (``||z||^2`` cannot change the argmin) live only in
registers and are folded into a running (best, index) per row, so the (M, K)
distance matrix is never written. The chosen row is then gathered, and
``sq_dist`` recomputed exactly as ``sum((z - C_idx)^2)`` in float32 (float64 for
float64), free of the expanded form's cancellation.

Argmin semantics match ``torch.argmin`` on the reference's scores: strictly smaller
wins, so ties keep the lowest k (tiles run in increasing k); a NaN score wins over
every number and the first NaN is kept (a NaN z row -> index 0).

Backward: ``gz = grad_q + 2 grad_sq (z - C_idx)`` per row (the second term exactly
zero where grad_sq is, even for an infinite z); the codebook gradient
``(straight_through ? grad_q : 0) - 2 grad_sq (z - C_idx)`` is scattered to row
idx with float atomics into a float32 (float64) buffer: summation order across
rows is not deterministic.

Block heuristics: BLOCK_D = next_pow2(D) (>= 16 for tl.dot); BLOCK_M = 64 and
BLOCK_K = min(32, 4096 / BLOCK_D) so the z, codebook and score tiles stay near 8k
float32 values, with 8 warps. float64 uses a
broadcast-reduce instead of tl.dot with a 4096-element 3-D tile. These are the
largest tiles that compile without register spills for sm_80 and sm_90 in every
dtype (``tools/check_triton.py`` compiles each launch to cubin and checks).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import launch


@triton.jit
def _cq_fwd_kernel(
    z_ptr, c_ptr, q_ptr, sq_ptr, idx_ptr,
    M, K, D,
    USE_DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    m_mask = offs_m < M
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < D
    md_mask = m_mask[:, None] & d_mask[None, :]
    z = tl.load(z_ptr + offs_m[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
    z = z.to(ACC)
    best = tl.full([BLOCK_M], float("inf"), dtype=ACC)
    best_k = tl.zeros([BLOCK_M], dtype=tl.int32)
    best_nan = tl.zeros([BLOCK_M], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        c = tl.load(
            c_ptr + offs_k[:, None].to(tl.int64) * D + offs_d[None, :],
            mask=k_mask[:, None] & d_mask[None, :],
            other=0.0,
        ).to(ACC)
        c2 = tl.sum(c * c, axis=1)
        if USE_DOT:
            dots = tl.dot(z, tl.trans(c), input_precision="ieee")
        else:
            dots = tl.sum(z[:, None, :] * c[None, :, :], axis=2)
        s = c2[None, :] - 2.0 * dots
        kk = offs_k[None, :] + tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.int32)
        valid = k_mask[None, :]
        is_nan = s != s
        # First NaN of the tile (K is a sentinel: "none").
        nan_k = tl.min(tl.where(is_nan & valid, kk, K), axis=1)
        mn = tl.min(tl.where(is_nan | ~valid, float("inf"), s), axis=1)
        # Lowest k attaining the tile minimum (NaN never compares equal).
        min_k = tl.min(tl.where(valid & (s == mn[:, None]), kk, K), axis=1)
        has_nan = nan_k < K
        free = best_nan == 0
        take_nan = has_nan & free
        take_min = (nan_k >= K) & free & (mn < best)
        best_k = tl.where(take_nan, nan_k, tl.where(take_min, min_k, best_k))
        best = tl.where(take_min, mn, best)
        best_nan = tl.where(take_nan, 1, best_nan)
    q = tl.load(c_ptr + best_k[:, None].to(tl.int64) * D + offs_d[None, :], mask=md_mask, other=0.0)
    diff = z - q.to(ACC)
    sq = tl.sum(diff * diff, axis=1)
    tl.store(q_ptr + offs_m[:, None] * D + offs_d[None, :], q, mask=md_mask)
    tl.store(sq_ptr + offs_m, sq.to(sq_ptr.dtype.element_ty), mask=m_mask)
    tl.store(idx_ptr + offs_m, best_k.to(tl.int64), mask=m_mask)


@triton.jit
def _cq_bwd_kernel(
    gq_ptr, gsq_ptr, z_ptr, c_ptr, idx_ptr, gz_ptr, gc_ptr,
    M, K, D,
    HAS_GQ: tl.constexpr, HAS_GSQ: tl.constexpr, ST: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    m_mask = offs_m < M
    offs_d = tl.arange(0, BLOCK_D)
    mask = m_mask[:, None] & (offs_d < D)[None, :]
    rows = offs_m[:, None] * D + offs_d[None, :]
    k = tl.load(idx_ptr + offs_m, mask=m_mask, other=0)
    # An index outside [0, K) never touches memory (the wrappers reject it on CPU; on
    # a GPU a host-side check would cost a device sync per backward).
    cmask = mask & ((k >= 0) & (k < K))[:, None]
    crow = k[:, None] * D + offs_d[None, :]
    gz = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    gc = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    if HAS_GQ:
        gq = tl.load(gq_ptr + rows, mask=mask, other=0.0).to(ACC)
        gz += gq
        if ST:
            gc += gq
    if HAS_GSQ:
        gs = tl.load(gsq_ptr + offs_m, mask=m_mask, other=0.0).to(ACC)
        z = tl.load(z_ptr + rows, mask=mask, other=0.0).to(ACC)
        c = tl.load(c_ptr + crow, mask=cmask, other=0.0).to(ACC)
        # A zero grad_sq contributes exactly zero, also where z - c is infinite (0 * inf
        # would be NaN in quantized's straight-through gradient); NaN still propagates.
        t = tl.where((gs[:, None] != 0) & cmask, 2.0 * gs[:, None] * (z - c), 0.0)
        gz += t
        gc -= t
    tl.store(gz_ptr + rows, gz.to(gz_ptr.dtype.element_ty), mask=mask)
    if HAS_GSQ or (HAS_GQ and ST):
        tl.atomic_add(gc_ptr + crow, gc, mask=cmask, sem="relaxed")


def _np2(n: int) -> int:
    return 1 if n <= 1 else triton.next_power_of_2(n)


def blocks(D: int, dtype: torch.dtype) -> tuple[bool, int, int, int]:
    """``(use_dot, BLOCK_M, BLOCK_K, BLOCK_D)`` for the search (see module doc)."""
    if dtype == torch.float64:
        bd = _np2(D)
        bk = 8
        return False, max(1, min(64, 4096 // (bk * bd))), bk, bd
    bd = max(16, _np2(D))
    # z tile 64*bd + codebook tile bk*bd + scores 64*bk: at most ~8k values, which with
    # 8 warps for bd >= 32 compiles without spills on sm_80/sm_90 (tools/check_triton.py).
    bk = max(16, min(32, 4096 // bd))
    return True, 64, bk, bd


# Warps per search program: 8 halves the registers per thread (no spills).
_FWD_WARPS = 8


def bwd_block_m(D: int, dtype: torch.dtype) -> int:
    """Rows per backward program: ~2k values per (64-row) tile, 1k in float64."""
    budget = 1024 if dtype == torch.float64 else 2048
    return max(1, min(64, budget // _np2(D)))


def forward(
    z2: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z2 (M, D), codebook (K, D) -> quantized (M, D), sq_dist (M,), indices (M,) int64."""
    z2, codebook = z2.contiguous(), codebook.contiguous()
    M, D = z2.shape
    K = codebook.shape[0]
    q = torch.empty_like(z2)
    sq = z2.new_empty((M,))
    idx = torch.empty((M,), dtype=torch.long, device=z2.device)
    if M == 0:
        return q, sq, idx
    if D == 0:
        # Every distance is 0: the first code wins.
        return q, sq.zero_(), idx.zero_()
    use_dot, bm, bk, bd = blocks(D, z2.dtype)
    acc = tl.float64 if z2.dtype == torch.float64 else tl.float32
    launch(
        _cq_fwd_kernel, (triton.cdiv(M, bm),),
        z2, codebook, q, sq, idx, M, K, D,
        USE_DOT=use_dot, ACC=acc, BLOCK_M=bm, BLOCK_K=bk, BLOCK_D=bd, num_warps=_FWD_WARPS,
    )  # fmt: skip
    return q, sq, idx


def backward(
    grad_q: torch.Tensor | None,
    grad_sq: torch.Tensor | None,
    z2: torch.Tensor,
    codebook: torch.Tensor,
    indices: torch.Tensor,
    straight_through_codebook: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grads ``(dz (M, D), dcodebook (K, D))``; missing output grads count as zero."""
    z2, codebook, indices = z2.contiguous(), codebook.contiguous(), indices.contiguous()
    M, D = z2.shape
    gz = torch.empty_like(z2)
    acc_t = torch.float64 if z2.dtype == torch.float64 else torch.float32
    gc = torch.zeros(codebook.shape, dtype=acc_t, device=codebook.device)
    if M == 0 or D == 0:
        return gz.zero_(), gc.to(codebook.dtype)
    gq = None if grad_q is None else grad_q.contiguous()
    gs = None if grad_sq is None else grad_sq.contiguous()
    bd = _np2(D)
    bm = bwd_block_m(D, z2.dtype)
    launch(
        _cq_bwd_kernel, (triton.cdiv(M, bm),),
        gq if gq is not None else z2, gs if gs is not None else z2,
        z2, codebook, indices, gz, gc, M, codebook.shape[0], D,
        HAS_GQ=gq is not None, HAS_GSQ=gs is not None, ST=straight_through_codebook,
        ACC=tl.float64 if z2.dtype == torch.float64 else tl.float32,
        BLOCK_M=bm, BLOCK_D=bd, num_warps=4,
    )  # fmt: skip
    return gz, gc.to(codebook.dtype)
