"""Triton kernel for ``sparse_row_update`` (a fused row-wise optimizer step).

Host side, with no device sync (nothing read back to the host): the indices are
sorted stably (``torch.sort(stable=True)``: the permutation keeps duplicates in their
original order), the start of each run of equal keys is a segment start, and a
cumulative sum numbers the segments. ``bounds[u]`` is then the first sorted position
of distinct row u (``scatter_reduce`` with ``amin``, a commutative reduction), and
``bounds[u] = nnz`` for every u >= U, the number of distinct rows, so that
``bounds[u + 1]`` ends segment u. U is never needed on the host: the grid covers nnz
(an upper bound on U) and the lanes past U see empty segments.

Kernel: one program owns BLOCK_R distinct rows (lanes) and walks D in BLOCK_D tiles.
For each tile it sums the gradient rows of every lane's segment in sorted-position
order (``for j < longest segment of the block``, masked per lane), i.e. the order the
duplicates came in, from zero, as the reference's ``index_add_``; no atomics, and each
row of weight/state is read and written by exactly one lane, so the result is
deterministic. It then adds ``weight_decay * w`` and applies the update:

- ``lazy_adam``: per element, ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
  ``w -= step_size m / (sqrt(v) / sqrt(1 - b2^step) + eps)``, step_size =
  ``lr / (1 - b1^step)``; tiles of D are independent.
- ``rowwise_adagrad``: ``s += mean_D(g^2)``, ``w -= lr g / (sqrt(s) + eps)``; the mean
  needs the whole row first. When one tile covers D (``BLOCK_D >= D``) the row stays in
  registers; otherwise a first sweep sums ``g^2`` and a second recomputes g and updates.

Dense gradient (``indices=None``): the same kernel with identity segments (lane u is
row u, its gradient row u).

Hyperparameters: a Python float kernel argument is specialised as fp32 (wrong for
float64), so the eight scalars (the bias corrections computed in double on the host, as
``torch.optim.Adam`` computes them in Python floats) travel in one small tensor of the
compute dtype (one small host-to-device copy per call on a GPU). float16/bfloat16
tables are computed in float32 and rounded back on store. Square roots are IEEE
round-to-nearest (:func:`_sqrt`).

Block heuristics: BLOCK_D = next_pow2(D) up to 2048 (1024 for float64), BLOCK_R =
rows per program so that a tile holds ~1024 values (512 for float64), at most 64, with
4 warps. Four tiles (g, w, m, v) are live, with a 64-bit address per element for the
gather and the row: (BLOCK_R, BLOCK_D) tiles of 2048 values spill in float32 lazy Adam,
these do not, on sm_80 or sm_90 (``tools/check_triton.py``); a single row (BLOCK_R = 1)
of up to 2048 values does not either.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._launch import launch

# Hyperparameter slots of the ``hp`` tensor.
_HP_LR = 0  # lazy_adam: step_size = lr / (1 - beta1^step); rowwise_adagrad: lr
_HP_B1 = 1
_HP_C1 = 2  # 1 - beta1
_HP_B2 = 3
_HP_C2 = 4  # 1 - beta2
_HP_EPS = 5
_HP_WD = 6
_HP_BC2 = 7  # sqrt(1 - beta2^step)
_N_HP = 8

KINDS = {"lazy_adam": 0, "rowwise_adagrad": 1}

#: The widest D tile (one row per program beyond it), per compute dtype; tests lower it
#: to reach the multi-tile paths with a small D.
MAX_BLOCK_D = {torch.float32: 2048, torch.float64: 1024}
#: Values per (BLOCK_R, BLOCK_D) tile, per compute dtype.
_TILE_BUDGET = {torch.float32: 1024, torch.float64: 512}
_MAX_BLOCK_R = 64
_NUM_WARPS = 4


@triton.jit
def _sqrt(x):
    """IEEE round-to-nearest square root (``tl.sqrt`` of fp32 may be approximate;
    ``tl.sqrt_rn`` takes fp32 only, and ``tl.sqrt`` of fp64 is exact)."""
    return tl.sqrt(x) if x.dtype == tl.float64 else tl.sqrt_rn(x)


@triton.jit
def _segment_grad(
    g_ptr, perm_ptr, start, cnt, max_cnt, row, offs_d, d_mask, D,
    DENSE: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The (BLOCK_R, BLOCK_D) tile of each lane's summed gradient, columns offs_d."""
    if DENSE:
        mask = (cnt > 0)[:, None] & d_mask[None, :]
        g = tl.load(g_ptr + row[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(ACC)
    else:
        g = tl.zeros([BLOCK_R, BLOCK_D], dtype=ACC)
        for j in range(0, max_cnt):
            take = j < cnt
            src = tl.load(perm_ptr + start + j, mask=take, other=0)
            mask = take[:, None] & d_mask[None, :]
            g += tl.load(g_ptr + src[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(ACC)
    return g


@triton.jit
def _sru_kernel(
    w_ptr, s1_ptr, s2_ptr, g_ptr, keys_ptr, perm_ptr, bounds_ptr, hp_ptr,
    U, D,
    KIND: tl.constexpr, DENSE: tl.constexpr, HAS_WD: tl.constexpr, ONE_TILE: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    u = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    u_mask = u < U
    if DENSE:
        start = u
        cnt = tl.where(u_mask, 1, 0).to(tl.int64)
        row = u
        max_cnt = 1
    else:
        # bounds has nnz + 1 entries; u < U = nnz, so u + 1 is in range.
        start = tl.load(bounds_ptr + u, mask=u_mask, other=0)
        end = tl.load(bounds_ptr + u + 1, mask=u_mask, other=0)
        cnt = end - start
        row = tl.load(keys_ptr + start, mask=cnt > 0, other=0)
        max_cnt = tl.max(cnt, axis=0)
    active = cnt > 0
    base = row[:, None] * D

    # The slots of hp (``_HP_*``): a jit function reads no module-level ints.
    lr = tl.load(hp_ptr + 0).to(ACC)
    eps = tl.load(hp_ptr + 5).to(ACC)
    wd = tl.load(hp_ptr + 6).to(ACC)
    offs = tl.arange(0, BLOCK_D)
    if KIND == 0:  # lazy_adam: the D tiles are independent
        b1 = tl.load(hp_ptr + 1).to(ACC)
        c1 = tl.load(hp_ptr + 2).to(ACC)
        b2 = tl.load(hp_ptr + 3).to(ACC)
        c2 = tl.load(hp_ptr + 4).to(ACC)
        bc2 = tl.load(hp_ptr + 7).to(ACC)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + offs
            d_mask = offs_d < D
            mask = active[:, None] & d_mask[None, :]
            ptrs = base + offs_d[None, :]
            g = _segment_grad(
                g_ptr, perm_ptr, start, cnt, max_cnt, row, offs_d, d_mask, D,
                DENSE, ACC, BLOCK_R, BLOCK_D,
            )  # fmt: skip
            w = tl.load(w_ptr + ptrs, mask=mask, other=0.0).to(ACC)
            if HAS_WD:
                g += wd * w
            m = tl.load(s1_ptr + ptrs, mask=mask, other=0.0).to(ACC)
            v = tl.load(s2_ptr + ptrs, mask=mask, other=0.0).to(ACC)
            m = b1 * m + c1 * g
            v = b2 * v + c2 * (g * g)
            w = w - (lr * m) / (_sqrt(v) / bc2 + eps)
            tl.store(s1_ptr + ptrs, m.to(s1_ptr.dtype.element_ty), mask=mask)
            tl.store(s2_ptr + ptrs, v.to(s2_ptr.dtype.element_ty), mask=mask)
            tl.store(w_ptr + ptrs, w.to(w_ptr.dtype.element_ty), mask=mask)
    else:  # rowwise_adagrad: the mean over D comes first
        s = tl.load(s1_ptr + row, mask=active, other=0.0).to(ACC)
        if ONE_TILE:
            d_mask = offs < D
            mask = active[:, None] & d_mask[None, :]
            ptrs = base + offs[None, :]
            g = _segment_grad(
                g_ptr, perm_ptr, start, cnt, max_cnt, row, offs, d_mask, D,
                DENSE, ACC, BLOCK_R, BLOCK_D,
            )  # fmt: skip
            w = tl.load(w_ptr + ptrs, mask=mask, other=0.0).to(ACC)
            if HAS_WD:
                g += wd * w
            s += tl.sum(g * g, axis=1) / D
            w = w - (lr * g) / (_sqrt(s) + eps)[:, None]
            tl.store(w_ptr + ptrs, w.to(w_ptr.dtype.element_ty), mask=mask)
        else:
            ss = tl.zeros([BLOCK_R], dtype=ACC)
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + offs
                d_mask = offs_d < D
                g = _segment_grad(
                    g_ptr, perm_ptr, start, cnt, max_cnt, row, offs_d, d_mask, D,
                    DENSE, ACC, BLOCK_R, BLOCK_D,
                )  # fmt: skip
                if HAS_WD:
                    mask = active[:, None] & d_mask[None, :]
                    w = tl.load(w_ptr + base + offs_d[None, :], mask=mask, other=0.0)
                    g += wd * w.to(ACC)
                ss += tl.sum(g * g, axis=1)
            s += ss / D
            scale = _sqrt(s) + eps
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + offs
                d_mask = offs_d < D
                mask = active[:, None] & d_mask[None, :]
                ptrs = base + offs_d[None, :]
                g = _segment_grad(
                    g_ptr, perm_ptr, start, cnt, max_cnt, row, offs_d, d_mask, D,
                    DENSE, ACC, BLOCK_R, BLOCK_D,
                )  # fmt: skip
                w = tl.load(w_ptr + ptrs, mask=mask, other=0.0).to(ACC)
                if HAS_WD:
                    g += wd * w
                w = w - (lr * g) / scale[:, None]
                tl.store(w_ptr + ptrs, w.to(w_ptr.dtype.element_ty), mask=mask)
        tl.store(s1_ptr + row, s.to(s1_ptr.dtype.element_ty), mask=active)


def _np2(n: int) -> int:
    return 1 if n <= 1 else triton.next_power_of_2(n)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def blocks(D: int, dtype: torch.dtype) -> tuple[int, int]:
    """``(BLOCK_R, BLOCK_D)`` for rows of D values of this dtype (see module doc)."""
    acc = _acc(dtype)
    bd = min(_np2(D), MAX_BLOCK_D[acc])
    br = max(1, min(_MAX_BLOCK_R, _TILE_BUDGET[acc] // bd))
    return br, bd


def hyperparameters(
    kind: str,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The kernel's scalars as a tensor of the compute dtype (slots ``_HP_*``); the
    bias corrections in double, as ``torch.optim.Adam`` (and the reference)."""
    hp = [0.0] * _N_HP
    if kind == "lazy_adam":
        hp[_HP_LR] = lr / (1.0 - beta1**step)
        hp[_HP_BC2] = math.sqrt(1.0 - beta2**step)
    else:
        hp[_HP_LR] = lr
        hp[_HP_BC2] = 1.0
    hp[_HP_B1], hp[_HP_C1] = beta1, 1.0 - beta1
    hp[_HP_B2], hp[_HP_C2] = beta2, 1.0 - beta2
    hp[_HP_EPS], hp[_HP_WD] = eps, weight_decay
    return torch.tensor(hp, dtype=_acc(dtype), device=device)


def segments(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(keys, perm, bounds)`` for nnz >= 1 indices, without a device sync.

    keys: the indices sorted (stably); perm: their positions in ``indices``;
    bounds (nnz + 1,): bounds[u] the first sorted position of the u-th distinct row,
    nnz for u >= U (the number of distinct rows), so segment u is
    ``[bounds[u], bounds[u + 1])`` and is empty for u >= U.
    """
    nnz = indices.numel()
    keys, perm = torch.sort(indices, stable=True)
    new = torch.ones(nnz, dtype=torch.bool, device=indices.device)
    torch.ne(keys[1:], keys[:-1], out=new[1:])
    seg = torch.cumsum(new, 0) - 1  # the segment of each sorted position
    pos = torch.arange(nnz, device=indices.device)
    bounds = torch.full((nnz + 1,), nnz, dtype=torch.int64, device=indices.device)
    bounds.scatter_reduce_(0, seg, pos, reduce="amin", include_self=True)
    return keys, perm, bounds


def forward(
    weight: torch.Tensor,
    state1: torch.Tensor,
    state2: torch.Tensor,
    indices: torch.Tensor | None,
    grad: torch.Tensor,
    kind: str,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
) -> None:
    """The update, in place on weight, state1 and state2 (arguments already checked:
    weight and the states contiguous, indices in [0, N))."""
    N, D = weight.shape
    grad = grad.contiguous()
    dense = indices is None
    U = N if dense else indices.numel()
    if U == 0 or D == 0:
        return
    if dense:
        # The pointers of keys, perm and bounds are never read: any int64 tensor.
        keys = perm = bounds = torch.zeros(1, dtype=torch.int64, device=weight.device)
    else:
        keys, perm, bounds = segments(indices)
    hp = hyperparameters(
        kind, lr, beta1, beta2, eps, weight_decay, step, weight.dtype, weight.device
    )
    br, bd = blocks(D, weight.dtype)
    launch(
        _sru_kernel, (triton.cdiv(U, br),),
        weight, state1, state2 if state2.numel() else state1, grad, keys, perm, bounds, hp,
        U, D,
        KIND=KINDS[kind], DENSE=dense, HAS_WD=weight_decay != 0, ONE_TILE=bd >= D,
        ACC=tl.float64 if weight.dtype == torch.float64 else tl.float32,
        BLOCK_R=br, BLOCK_D=bd, num_warps=_NUM_WARPS,
    )  # fmt: skip
