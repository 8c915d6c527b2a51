"""Triton kernels for ``topk_scores`` (maximum inner-product top-k) and ``score_ranks``
(a target's exact rank among all items), with per-row exclusions.

``scores = queries @ table.T`` (B, N) is never written to memory: each program holds
one (BLOCK_B, BLOCK_N) tile of it in registers at a time, as in ``item_softmax_xent``.

Scores: ``tl.dot`` of a block of query rows with a tile of items, accumulated in
float32: float32 operands in IEEE precision (not TF32), float16/bfloat16 multiplied
natively (exact products summed in float32, like the reference's float32 matmul up to
summation order). D is contracted in chunks (BLOCK_K, at least 16 for the dot, padded
with zeros), or for float16/bfloat16 with a small D held as one resident query tile.
Under the interpreter, bfloat16 tiles are upcast to float32 before the dot (its
``tl.dot`` of bfloat16 operands is wrong in Triton 3.9; the products are the same).
float64 has no ``tl.dot`` and no room in the 64-bit key (below): float64 inputs are
computed by the reference (:func:`solid_ext.reference.topk_scores_ref` /
``score_ranks_ref``), as is any ``k`` above :data:`MAX_K`.

Item splits: a program sweeps one split of the items (whole BLOCK_N tiles). When B
gives fewer row blocks than about four programs per SM, the items are cut into up to
``N / (MIN_SPLIT_TILES * BLOCK_N)`` splits, program grid (row blocks, splits), and a
second step combines the splits' results (exactly: results never depend on the
split).

Exclusions: ``exclude`` (B, E) is sorted per row on the host (-1 padding mapped to a
sentinel past every item, one sentinel column appended) and ``torch.searchsorted``
gives each (row, split) the position of its first entry at or past the split's start;
no device sync. A program keeps one cursor per row: for each item tile, while some
row's next excluded item lies in the tile, that column is masked for that row and the
row's cursor advances, so a tile costs one masked compare per excluded item falling
in it (duplicates included), not E per tile.

``topk_scores``: each (value, index) pair travels as one int64 key: the float32 score
mapped to an order-preserving int32 in the high half (-0.0 made +0.0 first, so the
two tie), ``0x7fffffff - index`` in the low half. The larger key is the larger score
and, among equal scores, the lower index, so "best first, ties to the lower index" is
the descending order of the keys, all distinct, compared as exact integers. Excluded
items and columns past N score -inf. A program keeps its rows' best ``KP =
next_pow2(k)`` keys in registers, ascending, from a -inf sentinel. Per item tile
(BLOCK_N >= KP items): if no key of the tile beats its row's KP-th best the tile is
skipped (after the first tiles almost all are, so the sorting cost fades); otherwise
a bitonic top-k takes the tile's best KP (descending), the elementwise maximum with
the running list is a bitonic sequence holding exactly the best KP of both, and one
bitonic merge sorts it. With splits, each program writes its KP keys (B, S, KP) and a
merge kernel folds the S lists per row the same way. The first k keys are decoded:
the float32 value (rounded to the input dtype) and the index, -1 where the value is
-inf (an excluded or missing item: fewer than k left). The sorting networks are
Triton's own (``tl.topk``, ``tl.bitonic_merge``) with one change, see
:func:`_compare_and_swap`.

``score_ranks``: ``rank_b = 1 + #{n != t_b, n not excluded : s_bn >= s_bt}``, counted
per (row block, split) and summed on the host. The target's score ``s_bt`` comes from
a small kernel that, for each row of a block, recomputes the very (BLOCK_B, BLOCK_N)
tile holding its target (same query block, same BLOCK_N-aligned items, same code) and
picks its element: the threshold is the float32 number the counting sweep computes in
that column (which it never counts; excluded columns are masked in-kernel). Ties
between the target and other items are therefore decided consistently, on the
kernel's own scores. Those are float32 sums in the dot's order, not the reference
matmul's: on float inputs an item within rounding of the target's score may be
counted differently from :func:`solid_ext.reference.score_ranks_ref` (rank off by the
number of such items), so exact ties, and exact agreement, are only guaranteed on
inputs whose scores are exact in float32 (e.g. small integers). On a GPU the
consistency relies on the compiler lowering the two kernels' identical dots alike (a
recomputed target score in another summation order could differ in the last bit).

Inputs must be finite: both ops raise ``ValueError`` (the reference's check, one
device sync) otherwise. Scores that overflow float32 (finite inputs of huge
magnitude) are not supported; N must be below 2**31 - 2**16 (else the reference).

Block heuristics (no autotune: it fails in the interpreter; see :func:`topk_blocks`
and :func:`rank_blocks`): the few tried that compile without register spills for
sm_80 and sm_90 in float32, float16 and bfloat16 on the problems of
:mod:`solid_ext.triton_kernels.aot` (``tools/check_triton.py``). ptxas spills a few
bytes around the loops of many near variants (8 warps capped at 128 registers,
deeper software pipelining): warps and stages differ by dtype and k for that reason.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..reference import _check_finite, score_ranks_ref, topk_scores_ref
from ._launch import launch

#: The largest k the kernels take (a power of two); above it the reference runs (k =
#: 256 kept the running list, tile keys and sort in registers only with spills).
MAX_K = 128
#: Item tiles per split at least (tests lower it to reach the split path).
MIN_SPLIT_TILES = 16
#: Programs to aim for per SM when choosing the item splits.
_PROGRAMS_PER_SM = 4
#: SMs assumed where there is no CUDA device (interpreter, ahead-of-time recording).
_DEFAULT_SMS = 132
_MAX_N = 2**31 - 2**16
_BIG = 2**62  # exclusion sentinel: past every item (and every tile end)


# --- shared helpers -------------------------------------------------------------------


@triton.jit
def _dot_nt(a, b, acc, F32: tl.constexpr):
    """acc + a @ b^T, accumulated in float32; F32: operands (upcast to) float32,
    multiplied in IEEE precision, else float16/bfloat16 multiplied natively."""
    if F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, tl.trans(b), acc)
    return acc


@triton.jit
def _load_rows(base, offs_r, offs_c, stride, r_mask, c_mask):
    return tl.load(
        base + offs_r[:, None] * stride + offs_c[None, :],
        mask=r_mask[:, None] & c_mask[None, :],
        other=0.0,
    )


@triton.jit
def _load_queries(q_ptr, offs_b, b_mask, D, BLOCK_K: tl.constexpr):
    """The resident (BLOCK_B, BLOCK_K) query tile (D <= BLOCK_K)."""
    offs_k = tl.arange(0, BLOCK_K)
    return _load_rows(q_ptr, offs_b, offs_k, D, b_mask, offs_k < D)


@triton.jit
def _scores(
    q, q_ptr, t_ptr, offs_b, offs_n, b_mask, n_mask, D,
    RESIDENT: tl.constexpr, F32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """(BLOCK_B, BLOCK_N) float32 tile of queries @ table.T; ``q`` is the resident
    query tile (RESIDENT) or ignored (D contracted in BLOCK_K chunks)."""
    acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    if RESIDENT:
        offs_k = tl.arange(0, BLOCK_K)
        t = _load_rows(t_ptr, offs_n, offs_k, D, n_mask, offs_k < D)
        acc = _dot_nt(q, t, acc, F32)
    else:
        for k0 in range(0, D, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < D
            qc = _load_rows(q_ptr, offs_b, offs_k, D, b_mask, k_mask)
            t = _load_rows(t_ptr, offs_n, offs_k, D, n_mask, k_mask)
            acc = _dot_nt(qc, t, acc, F32)
    return acc


@triton.jit
def _drop_excluded(keep, offs_n, n_end, ex_ptr, row_base, b_mask, cur, nxt):
    """Clear ``keep`` (BLOCK_B, BLOCK_N) at each row's excluded items below ``n_end``;
    ``cur`` (BLOCK_B,) is each row's position in its sorted exclusions, ``nxt`` the
    entry there (the sentinel column stops every row at its end)."""
    hit = (nxt < n_end) & b_mask
    while tl.max(hit.to(tl.int32), axis=0) > 0:
        keep = keep & ~(hit[:, None] & (offs_n[None, :] == nxt[:, None]))
        cur = cur + hit.to(tl.int64)
        nxt = tl.load(ex_ptr + row_base + cur, mask=b_mask, other=0)
        hit = (nxt < n_end) & b_mask
    return keep, cur, nxt


# --- topk_scores ----------------------------------------------------------------------


@triton.jit
def _pack(s, offs_n):
    """int64 keys whose order is (score, then lower index) for float32 ``s``."""
    s = tl.where(s == 0.0, 0.0, s)  # -0.0 ties with +0.0
    u = s.to(tl.int32, bitcast=True)
    u = tl.where(u < 0, u ^ 0x7FFFFFFF, u)
    return (u.to(tl.int64) << 32) | (0x7FFFFFFF - offs_n.to(tl.int32)).to(tl.int64)


@triton.jit
def _unpack(key):
    """(float32 value, int64 index) of keys; index -1 where the value is -inf."""
    hi = (key >> 32).to(tl.int32)
    u = tl.where(hi < 0, hi ^ 0x7FFFFFFF, hi)
    v = u.to(tl.float32, bitcast=True)
    idx = (0x7FFFFFFF - key.to(tl.int32)).to(tl.int64)
    return v, tl.where(v == float("-inf"), -1, idx)


# Bitonic networks on int64 keys along the last axis, as Triton's own tl.sort /
# tl.topk / tl.bitonic_merge (the tensor viewed as a (2, 2, ..., 2) hypercube), except
# that a compare-and-swap finds each element's partner as (pair sum) - self with
# ``tl.sum`` (exact in wrapping int64 arithmetic) where Triton XOR-reduces with a
# custom combine function: the same one reduction over a size-2 axis when compiled,
# but the interpreter runs a custom combine function element by element in Python
# (seconds per sort of a (32, 64) tile) and tl.sum as one numpy call.


@triton.constexpr_function
def _log2(n):
    return int(n).bit_length() - 1


@triton.jit
def _indicator(n_dims: tl.constexpr, j: tl.constexpr):
    """0 / 1 along the j-th innermost axis of an n_dims hypercube."""
    return tl.reshape(tl.arange(0, 2), [1] * (n_dims - j - 1) + [2] + [1] * j)


@triton.jit
def _compare_and_swap(h, flip, i: tl.constexpr):
    """Order each pair along the i-th innermost axis of the hypercube ``h``: ascending
    where ``flip`` is 0, descending where it is 1."""
    n_dims: tl.constexpr = _log2(h.numel)
    partner = tl.sum(h, axis=n_dims - 1 - i, keep_dims=True) - h
    right = _indicator(n_dims, i)
    return tl.where((h > partner) != (flip ^ right).to(tl.int1), partner, h)


@triton.jit
def _bitonic_stage(h, stage: tl.constexpr, order: tl.constexpr):
    """Merge bitonic runs of 2**stage (order 0 ascending, 1 descending, 2 alternating
    with a period of 2**stage)."""
    flip = _indicator(_log2(h.numel), stage) if order == 2 else order
    for i in tl.static_range(stage):
        h = _compare_and_swap(h, flip, stage - 1 - i)
    return h


@triton.jit
def _topk_desc(x, KOUT: tl.constexpr):
    """The KOUT largest keys of each row of x (R, C), descending (C and KOUT powers of
    two, KOUT <= C): bitonic top-k (https://www.doc.ic.ac.uk/~hlgr/pdfs/MassivelyParallelTopK.pdf),
    as tl.topk."""
    log_n: tl.constexpr = _log2(x.shape[1])
    log_k: tl.constexpr = _log2(KOUT)
    if log_k == 0:
        out = tl.max(x, axis=1, keep_dims=True)
    else:
        h = tl.reshape(x, [2] * _log2(x.numel))
        for i in tl.static_range(1, log_k + 1):
            h = _bitonic_stage(h, i, 2 if i < log_n else 1)
        for i in tl.static_range(log_k + 1, log_n + 1):
            h = tl.max(h, axis=_log2(h.numel) - 1 - log_k)
            h = _bitonic_stage(h, log_k, 2 if i < log_n else 1)
        out = tl.reshape(h, [x.shape[0], KOUT])
    return out


@triton.jit
def _merge(run_asc, cand_desc):
    """The best KP of both (R, KP) lists, ascending: the elementwise max of an
    ascending and a descending list is a bitonic sequence holding exactly the KP
    largest, which one bitonic merge sorts."""
    x = tl.maximum(run_asc, cand_desc)
    log_k: tl.constexpr = _log2(x.shape[1])
    if log_k > 0:
        h = tl.reshape(x, [2] * _log2(x.numel))
        h = _bitonic_stage(h, log_k, 0)
        x = tl.reshape(h, [x.shape[0], x.shape[1]])
    return x


@triton.jit
def _store_topk(run_asc, v_ptr, i_ptr, offs_b, b_mask, K, KP: tl.constexpr):
    """The first K of the ascending (BLOCK_B, KP) keys, best first, as values/indices."""
    col = KP - 1 - tl.arange(0, KP)
    mask = b_mask[:, None] & (col < K)[None, :]
    v, idx = _unpack(run_asc)
    ptrs = offs_b[:, None] * K + col[None, :]
    tl.store(v_ptr + ptrs, v.to(v_ptr.dtype.element_ty), mask=mask)
    tl.store(i_ptr + ptrs, idx, mask=mask)


@triton.jit
def _topk_kernel(
    q_ptr, t_ptr, ex_ptr, cur_ptr, v_ptr, i_ptr, keys_ptr,
    B, N, D, E1, K, S, split_len,
    HAS_EX: tl.constexpr, FINAL: tl.constexpr, RESIDENT: tl.constexpr, F32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, KP: tl.constexpr,
):  # fmt: skip
    """Program (row block, item split): the best KP keys of its rows over its split;
    FINAL (one split): decoded into values/indices, else keys into (B, S, KP)."""
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_b = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    b_mask = offs_b < B
    lo = pid_s.to(tl.int64) * split_len
    hi = tl.minimum(lo + split_len, N)
    if RESIDENT:
        q = _load_queries(q_ptr, offs_b, b_mask, D, BLOCK_K)
    else:
        q = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
    if HAS_EX:
        row_base = offs_b * E1
        cur = tl.load(cur_ptr + offs_b * S + pid_s, mask=b_mask, other=0)
        nxt = tl.load(ex_ptr + row_base + cur, mask=b_mask, other=0)
    neg = tl.full([BLOCK_B, KP], float("-inf"), dtype=tl.float32)
    run = _pack(neg, tl.zeros([KP], dtype=tl.int64)[None, :])
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
        s = _scores(
            q, q_ptr, t_ptr, offs_b, offs_n, b_mask, n_mask, D,
            RESIDENT, F32, BLOCK_B, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        keep = n_mask[None, :] & b_mask[:, None]  # rows past B too: no spurious merges
        if HAS_EX:
            keep, cur, nxt = _drop_excluded(
                keep, offs_n, n0 + BLOCK_N, ex_ptr, row_base, b_mask, cur, nxt
            )
        keys = _pack(tl.where(keep, s, float("-inf")), offs_n[None, :])
        kth = tl.min(run, axis=1)
        if tl.max(tl.max((keys > kth[:, None]).to(tl.int32), axis=1), axis=0) > 0:
            run = _merge(run, _topk_desc(keys, KP))
    if FINAL:
        _store_topk(run, v_ptr, i_ptr, offs_b, b_mask, K, KP)
    else:
        j = tl.arange(0, KP)
        ptrs = keys_ptr + (offs_b[:, None] * S + pid_s) * KP + j[None, :]
        tl.store(ptrs, run, mask=b_mask[:, None])


@triton.jit
def _topk_merge_kernel(
    keys_ptr, v_ptr, i_ptr, B, K, S, BLOCK_B: tl.constexpr, KP: tl.constexpr
):  # fmt: skip
    """Fold each row's S ascending key lists (B, S, KP) into its best k."""
    pid = tl.program_id(0)
    offs_b = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    b_mask = offs_b < B
    j = tl.arange(0, KP)
    base = keys_ptr + offs_b[:, None] * S * KP
    run = tl.load(base + j[None, :], mask=b_mask[:, None], other=0)
    for s in range(1, S):
        # Read reversed: descending.
        cand = tl.load(base + s * KP + (KP - 1 - j)[None, :], mask=b_mask[:, None], other=0)
        run = _merge(run, cand)
    _store_topk(run, v_ptr, i_ptr, offs_b, b_mask, K, KP)


# --- score_ranks ----------------------------------------------------------------------


@triton.jit
def _target_score_kernel(
    q_ptr, t_ptr, tgt_ptr, st_ptr, B, N, D,
    RESIDENT: tl.constexpr, F32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Each row's target score, picked from the same tile the counting sweep computes
    (same row block, BLOCK_N-aligned items), one tile per row."""
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_B)
    offs_b = (pid * BLOCK_B + rows).to(tl.int64)
    b_mask = offs_b < B
    if RESIDENT:
        q = _load_queries(q_ptr, offs_b, b_mask, D, BLOCK_K)
    else:
        q = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
    st = tl.zeros([BLOCK_B], dtype=tl.float32)
    for r in range(0, tl.minimum(BLOCK_B, B - pid * BLOCK_B)):
        tgt = tl.load(tgt_ptr + pid.to(tl.int64) * BLOCK_B + r)
        offs_n = (tgt // BLOCK_N) * BLOCK_N + tl.arange(0, BLOCK_N)
        s = _scores(
            q, q_ptr, t_ptr, offs_b, offs_n, b_mask, offs_n < N, D,
            RESIDENT, F32, BLOCK_B, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        pick = (rows == r)[:, None] & (offs_n == tgt)[None, :]
        st += tl.sum(tl.where(pick, s, 0.0), axis=1)
    tl.store(st_ptr + offs_b, st, mask=b_mask)


@triton.jit
def _rank_kernel(
    q_ptr, t_ptr, tgt_ptr, st_ptr, ex_ptr, cur_ptr, cnt_ptr,
    B, N, D, E1, S, split_len,
    HAS_EX: tl.constexpr, RESIDENT: tl.constexpr, F32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program (row block, item split): per row, the items of the split other than the
    target and not excluded whose score is >= the target's, into cnt (B, S)."""
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_b = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    b_mask = offs_b < B
    lo = pid_s.to(tl.int64) * split_len
    hi = tl.minimum(lo + split_len, N)
    tgt = tl.load(tgt_ptr + offs_b, mask=b_mask, other=-1)
    st = tl.load(st_ptr + offs_b, mask=b_mask, other=0.0)
    if RESIDENT:
        q = _load_queries(q_ptr, offs_b, b_mask, D, BLOCK_K)
    else:
        q = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
    if HAS_EX:
        row_base = offs_b * E1
        cur = tl.load(cur_ptr + offs_b * S + pid_s, mask=b_mask, other=0)
        nxt = tl.load(ex_ptr + row_base + cur, mask=b_mask, other=0)
    cnt = tl.zeros([BLOCK_B], dtype=tl.int32)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
        s = _scores(
            q, q_ptr, t_ptr, offs_b, offs_n, b_mask, n_mask, D,
            RESIDENT, F32, BLOCK_B, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        keep = n_mask[None, :] & (offs_n[None, :] != tgt[:, None])
        if HAS_EX:
            keep, cur, nxt = _drop_excluded(
                keep, offs_n, n0 + BLOCK_N, ex_ptr, row_base, b_mask, cur, nxt
            )
        cnt += tl.sum((keep & (s >= st[:, None])).to(tl.int32), axis=1)
    tl.store(cnt_ptr + offs_b * S + pid_s, cnt.to(tl.int64), mask=b_mask)


# --- host side ------------------------------------------------------------------------


def _np2(n: int) -> int:
    return 1 if n <= 1 else triton.next_power_of_2(n)


def _chunk(dim: int, max_resident: int, chunk: int) -> tuple[int, bool]:
    """``(BLOCK_K, resident)``: D up to ``max_resident`` in one zero-padded chunk of at
    least 16 (the dot minimum), else chunks of ``chunk``."""
    if dim <= max_resident:
        return max(16, _np2(dim)), True
    return chunk, False


def topk_blocks(D: int, k: int, dtype: torch.dtype) -> dict[str, int | bool]:
    """Launch constexprs of the top-k kernels: ``b``/``n`` (rows x items tile), ``kp``,
    ``k`` (BLOCK_K), ``resident``, ``warps``, ``stages``, and the merge kernel's
    ``merge_b`` rows (see the module doc)."""
    kp = _np2(k)
    if dtype == torch.float32:
        # D in 16-chunks (a resident float32 tile spills); one stage for the 32-row tile.
        # KP = 128 spills 12-36 bytes with 8 warps on sm_90 under Triton's own ptxas
        # flags (--regAllocOptLevel 2), at one or two stages; 16 warps, one stage do not
        # (86-128 registers; tools/check_triton.py).
        bk, resident = _chunk(D, 0, 16)
        if kp > 64:
            warps, stages = 16, 1
        else:
            warps, stages = 8, 1 if kp <= 32 else 2
    else:
        bk, resident = _chunk(D, 32, 32)
        warps, stages = (16, 2) if kp <= 64 or resident else (8, 1)
    return {
        "b": 32 if kp <= 32 else 16, "n": max(64, kp), "kp": kp, "k": bk,
        "resident": resident, "warps": warps, "stages": stages,
        "merge_b": max(1, min(64, 2048 // kp)),
    }  # fmt: skip


def rank_blocks(D: int, dtype: torch.dtype) -> dict[str, int | bool]:
    """Launch constexprs of the rank kernels (the target kernel uses the same tile):
    64 x 64 tiles, float32 in 16-chunks of D with 16 warps and no pipelining,
    float16/bfloat16 with D up to 64 resident (64 x 32 tiles at 64)."""
    if dtype == torch.float32:
        return {"b": 64, "n": 64, "k": 16, "resident": False, "warps": 16, "stages": 1}
    bk, resident = _chunk(D, 64, 32)
    bn = 32 if resident and bk == 64 else 64
    return {"b": 64, "n": bn, "k": bk, "resident": resident, "warps": 8, "stages": 2}


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def splits(B: int, N: int, bb: int, bn: int, device: torch.device) -> tuple[int, int]:
    """``(S, split_len)``: item splits (of whole BLOCK_N tiles) so that the grid has
    about ``_PROGRAMS_PER_SM`` programs per SM, each split at least ``MIN_SPLIT_TILES``
    tiles."""
    tiles = triton.cdiv(N, bn)
    sms = _sm_count(device.index or 0) if device.type == "cuda" else _DEFAULT_SMS
    want = triton.cdiv(_PROGRAMS_PER_SM * sms, triton.cdiv(B, bb))
    s = max(1, min(want, tiles // max(1, MIN_SPLIT_TILES)))
    per = triton.cdiv(tiles, s)
    return triton.cdiv(tiles, per), per * bn


def sorted_exclusions(
    exclude: torch.Tensor | None, S: int, split_len: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(ex (B, E + 1), cur (B, S))``: each row's exclusions sorted, -1 padding and one
    appended column as a sentinel past every item, and each split's first position;
    None when nothing is excluded."""
    if exclude is None or exclude.shape[1] == 0:
        return None
    big = torch.full_like(exclude[:, :1], _BIG)
    ex = torch.where(exclude < 0, big, exclude)
    ex = torch.cat([torch.sort(ex, dim=1).values, big], 1).contiguous()
    starts = torch.arange(S, device=ex.device, dtype=torch.int64) * split_len
    cur = torch.searchsorted(ex, starts.expand(ex.shape[0], S).contiguous())
    return ex, cur


def _f32(t: torch.Tensor) -> bool:
    """The F32 constexpr: float32 tiles, or bfloat16 ones upcast under the interpreter,
    whose ``tl.dot`` of bfloat16 operands is wrong (Triton 3.9; exactly the same
    products either way)."""
    if t.dtype == torch.bfloat16:
        from . import interpreter_usable

        return t.device.type == "cpu" and interpreter_usable()
    return t.dtype == torch.float32


def topk_scores(
    queries: torch.Tensor, table: torch.Tensor, k: int, exclude: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """queries (B, D), table (N, D), 1 <= k <= N, exclude (B, E) int64 or None ->
    (values (B, k) in queries' dtype, indices (B, k) int64) (arguments already checked).
    float64, k > MAX_K or N >= 2**31 - 2**16: the reference."""
    N = table.shape[0]
    if queries.dtype == torch.float64 or k > MAX_K or N >= _MAX_N:
        return topk_scores_ref(queries, table, k, exclude)
    _check_finite("topk_scores", queries=queries, table=table)
    queries, table = queries.contiguous(), table.contiguous()
    B, D = queries.shape
    values = queries.new_empty((B, k))
    indices = torch.empty((B, k), dtype=torch.int64, device=queries.device)
    if B == 0:
        return values, indices
    bl = topk_blocks(D, k, queries.dtype)
    bb, kp = bl["b"], bl["kp"]
    S, split_len = splits(B, N, bb, bl["n"], queries.device)
    exs = sorted_exclusions(exclude, S, split_len)
    ex, cur = exs if exs is not None else (indices, indices)  # unread without HAS_EX
    final = S == 1
    keys = indices if final else torch.empty((B, S, kp), dtype=torch.int64, device=indices.device)
    launch(
        _topk_kernel, (triton.cdiv(B, bb), S),
        queries, table, ex, cur, values, indices, keys,
        B, N, D, ex.shape[1] if exs is not None else 0, k, S, split_len,
        HAS_EX=exs is not None, FINAL=final, RESIDENT=bl["resident"], F32=_f32(queries),
        BLOCK_B=bb, BLOCK_N=bl["n"], BLOCK_K=bl["k"], KP=kp, num_warps=bl["warps"],
        num_stages=bl["stages"],
    )  # fmt: skip
    if not final:
        mb = bl["merge_b"]
        launch(
            _topk_merge_kernel, (triton.cdiv(B, mb),),
            keys, values, indices, B, k, S,
            BLOCK_B=mb, KP=kp, num_warps=4,
        )  # fmt: skip
    return values, indices


def score_ranks(
    queries: torch.Tensor,
    table: torch.Tensor,
    target: torch.Tensor,
    exclude: torch.Tensor | None,
) -> torch.Tensor:
    """queries (B, D), table (N, D), target (B,) int64 in [0, N), exclude (B, E) int64
    or None -> ranks (B,) int64 (arguments already checked). float64: the reference."""
    if queries.dtype == torch.float64:
        return score_ranks_ref(queries, table, target, exclude)
    _check_finite("score_ranks", queries=queries, table=table)
    queries, table, target = queries.contiguous(), table.contiguous(), target.contiguous()
    B, D = queries.shape
    N = table.shape[0]
    if B == 0:
        return torch.empty((0,), dtype=torch.int64, device=queries.device)
    bl = rank_blocks(D, queries.dtype)
    bb, bn = bl["b"], bl["n"]
    common = dict(
        RESIDENT=bl["resident"], F32=_f32(queries),
        BLOCK_B=bb, BLOCK_N=bn, BLOCK_K=bl["k"], num_warps=bl["warps"],
        num_stages=bl["stages"],
    )  # fmt: skip
    st = torch.empty((B,), dtype=torch.float32, device=queries.device)
    launch(
        _target_score_kernel, (triton.cdiv(B, bb),),
        queries, table, target, st, B, N, D, **common,
    )  # fmt: skip
    S, split_len = splits(B, N, bb, bn, queries.device)
    exs = sorted_exclusions(exclude, S, split_len)
    ex, cur = exs if exs is not None else (target, target)  # unread without HAS_EX
    cnt = torch.empty((B, S), dtype=torch.int64, device=queries.device)
    launch(
        _rank_kernel, (triton.cdiv(B, bb), S),
        queries, table, target, st, ex, cur, cnt,
        B, N, D, ex.shape[1] if exs is not None else 0, S, split_len,
        HAS_EX=exs is not None, **common,
    )  # fmt: skip
    return cnt.sum(1) + 1
