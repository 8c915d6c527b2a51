"""Triton ``topk_scores`` and ``score_ranks`` vs the reference, on CPU tensors in the
interpreter.

Same conventions as test_triton.py: TRITON_INTERPRET=1 must be set before ``triton``
is imported, so an ordinary run deselects every case here and test_triton.py's
``test_interpreter_suite`` runs this file with it in one TRITON_INTERPRET=1
subprocess. Shapes are tiny (the interpreter is slow) and deliberately not block
multiples (N not a multiple of the item tile, D below, at and past the dot minimum and
the 64 chunk); integer-valued inputs make every score exact in any summation order, so
values, indices (ties to the lower index) and ranks (ties against the target) must
equal the reference's exactly. Every output is allocated under ``poisoned_empty``
(NaN-filled), so an element a kernel fails to write shows up as NaN.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

import solid_ext  # noqa: E402
from solid_ext import triton_kernels as tk  # noqa: E402
from solid_ext.reference import score_ranks_ref, topk_scores_ref  # noqa: E402
from solid_ext.testing import non_contiguous  # noqa: E402

from .conftest import poisoned_empty  # noqa: E402

IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
interp = pytest.mark.triton_interpreter


def _inputs(B, N, D, dtype, seed, integer=True, span=2):
    """(queries, table, target): small integers (many exact ties) or normal floats;
    target hits the first and the last item."""
    g = torch.Generator().manual_seed(seed)
    if integer:
        q = torch.randint(-span, span + 1, (B, D), generator=g).to(dtype)
        t = torch.randint(-span, span + 1, (N, D), generator=g).to(dtype)
    else:
        q = torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype)
        t = torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)
    target = torch.randint(0, N, (B,), generator=g)
    target[0] = 0
    target[-1] = N - 1
    return q, t, target


def _exclude(B, N, E, seed, target=None):
    """(B, E) items to skip: -1 padding on every other row, a duplicate, and (for the
    ranks) the row's own target; None for E = 0."""
    if E == 0:
        return None
    g = torch.Generator().manual_seed(seed + 1)
    ex = torch.randint(0, N, (B, E), generator=g)
    if E > 1:
        ex[::2, -1] = -1
        ex[1::2, -1] = ex[1::2, 0]
    if target is not None:
        ex[0, 0] = target[0]
    return ex


def _check_topk(q, t, k, ex, *, exact=True):
    with poisoned_empty():
        v, i = tk.topk_scores(q, t, k, ex)
    rv, ri = topk_scores_ref(q, t, k, ex)
    B = q.shape[0]
    assert v.shape == i.shape == (B, k) and v.dtype == q.dtype and i.dtype == torch.int64
    assert not torch.isnan(v).any(), "NaN in output: an element was not written"
    assert torch.equal(i, ri), (i, ri)
    if exact:
        assert torch.equal(v, rv), (v, rv)
    else:
        torch.testing.assert_close(v, rv)  # float32 scores rounded to the dtype


def _check_ranks(q, t, target, ex):
    with poisoned_empty():
        r = tk.score_ranks(q, t, target, ex)
    assert r.shape == target.shape and r.dtype == torch.int64
    assert torch.equal(r, score_ranks_ref(q, t, target, ex)), r


# (B, N, D, k, E): one item; k = N with ties everywhere; one 32-row tile over several
# item tiles with D past the 16 and 32 chunks; k = 1 with D past the 64 chunk; k = 64
# (the 16-row tile); k = 128 (the largest: 128-item tiles) with every row short of k
# items after 150 exclusions; D = 0 (every score 0: the lowest indices).
TOPK_SHAPES = [
    (1, 1, 1, 1, 0),
    (3, 7, 5, 7, 0),
    (5, 300, 33, 10, 4),
    (9, 200, 70, 1, 3),
    (2, 130, 16, 64, 0),
    (4, 210, 8, 128, 150),
    (3, 5, 0, 3, 2),
]


@pytest.mark.parametrize("shape", TOPK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@interp
def test_topk_exact_on_integers(shape):
    B, N, D, k, E = shape
    q, t, _ = _inputs(B, N, D, torch.float32, seed=B * 7919 + N * 31 + D + k)
    _check_topk(q, t, k, _exclude(B, N, E, seed=N))


@interp
def test_topk_fewer_items_than_k():
    # Rows 0 and 2 keep a single item: the other slots are (-inf, -1).
    q, t, _ = _inputs(3, 9, 4, torch.float32, seed=1)
    ex = torch.tensor([list(range(1, 9)), [0, 2, 4, -1, -1, -1, -1, -1], list(range(8))])
    _check_topk(q, t, 4, ex)
    v, i = tk.topk_scores(q, t, 4, ex)
    assert torch.equal(i[0], torch.tensor([0, -1, -1, -1])) and (v[0, 1:] == -torch.inf).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@interp
def test_topk_half_exact_on_integers(dtype):
    q, t, _ = _inputs(5, 100, 20, dtype, seed=3)
    _check_topk(q, t, 16, _exclude(5, 100, 6, seed=3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@interp
def test_topk_random(dtype):
    q, t, _ = _inputs(9, 300, 20, dtype, seed=4, integer=False)
    _check_topk(q, t, 10, _exclude(9, 300, 5, seed=4), exact=False)


@interp
def test_topk_noncontiguous():
    q, t, _ = _inputs(5, 70, 9, torch.float32, seed=5)
    qn, tn = non_contiguous(q), non_contiguous(t)
    assert not qn.is_contiguous() and not tn.is_contiguous()
    _check_topk(qn, tn, 8, _exclude(5, 70, 3, seed=5))


# (B, N, D, E): one item; ties everywhere over one tile; several item tiles with D
# past the 16 and 32 chunks; D past the 64 chunk; D = 0 (every score ties).
RANK_SHAPES = [(1, 1, 1, 0), (3, 7, 5, 4), (9, 300, 33, 6), (2, 150, 70, 0), (3, 5, 0, 2)]


@pytest.mark.parametrize("shape", RANK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@interp
def test_ranks_exact_on_integers(shape):
    B, N, D, E = shape
    q, t, target = _inputs(B, N, D, torch.float32, seed=B * 7919 + N * 31 + D)
    _check_ranks(q, t, target, _exclude(B, N, E, seed=N, target=target))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@interp
def test_ranks_random(dtype):
    q, t, target = _inputs(9, 300, 20, dtype, seed=6, integer=False)
    _check_ranks(q, t, target, _exclude(9, 300, 5, seed=6, target=target))


@interp
def test_ranks_noncontiguous_and_constant_scores():
    q, t, target = _inputs(5, 70, 9, torch.float32, seed=7)
    _check_ranks(non_contiguous(q), non_contiguous(t), target, None)
    # A constant scorer ranks every target last among the items left.
    ex = _exclude(5, 70, 3, seed=7)
    r = tk.score_ranks(torch.zeros(5, 4), torch.ones(70, 4), target, ex)
    assert torch.equal(r, score_ranks_ref(torch.zeros(5, 4), torch.ones(70, 4), target, ex))
    assert r[0] == 70 - len(set(ex[0].tolist()) - {-1, int(target[0])})


@interp
def test_item_splits(monkeypatch):
    # One item tile per split: several programs per row block and the merge kernel.
    from solid_ext.triton_kernels import _item_scores

    monkeypatch.setattr(_item_scores, "MIN_SPLIT_TILES", 1)
    assert _item_scores.splits(3, 300, 32, 64, torch.device("cpu"))[0] == 5
    q, t, target = _inputs(3, 300, 33, torch.float32, seed=8)
    _check_topk(q, t, 20, _exclude(3, 300, 40, seed=8))
    _check_topk(q, t, 100, None)
    _check_ranks(q, t, target, _exclude(3, 300, 40, seed=8, target=target))


@interp
def test_fallbacks_to_reference():
    # float64 and k past MAX_K run the reference: its results exactly.
    from solid_ext.triton_kernels import _item_scores

    q, t, target = _inputs(3, 300, 6, torch.float64, seed=9, integer=False)
    ex = _exclude(3, 300, 4, seed=9)
    _check_topk(q, t, 5, ex)
    _check_ranks(q, t, target, ex)
    q = q.float()
    _check_topk(q, t.float(), _item_scores.MAX_K + 1, ex)


@interp
def test_empty_batch():
    t = torch.randn(7, 4)
    v, i = tk.topk_scores(torch.randn(0, 4), t, 3, None)
    assert v.shape == i.shape == (0, 3)
    r = tk.score_ranks(torch.randn(0, 4), t, torch.zeros(0, dtype=torch.long), None)
    assert r.shape == (0,)


@interp
def test_rejects_nonfinite_and_bad_arguments():
    q, t, target = _inputs(3, 7, 5, torch.float32, seed=10)
    bad_q = q.clone().index_fill_(1, torch.tensor([2]), torch.nan)
    bad_t = t.clone().index_fill_(0, torch.tensor([6]), -torch.inf)
    for name, args in [("queries", (bad_q, t)), ("table", (q, bad_t))]:
        with pytest.raises(ValueError, match=rf"topk_scores: {name} holds NaN or infinity"):
            tk.topk_scores(*args, 2, None)
        with pytest.raises(ValueError, match=rf"score_ranks: {name} holds NaN or infinity"):
            tk.score_ranks(*args, target, None)
    for name, args in [
        ("k", (q, t, 8, None)),
        ("table", (q, t[:, :4], 2, None)),
        ("exclude", (q, t, 2, torch.tensor([[7], [0], [0]]))),
    ]:
        with pytest.raises((ValueError, TypeError, IndexError), match=rf"\b{name}\b"):
            tk.topk_scores(*args)
    with pytest.raises((ValueError, IndexError), match=r"\btarget\b"):
        tk.score_ranks(q, t, torch.tensor([0, 7, 1]), None)


@interp
def test_through_public_op_and_opcheck(monkeypatch):
    calls = []
    real_topk, real_ranks = tk.topk_scores, tk.score_ranks

    def spy(real):
        def f(*args):
            calls.append(real)
            return real(*args)

        return f

    monkeypatch.setattr(tk, "topk_scores", spy(real_topk))
    monkeypatch.setattr(tk, "score_ranks", spy(real_ranks))
    q, t, target = _inputs(3, 7, 5, torch.float32, seed=11)
    ex = _exclude(3, 7, 2, seed=11, target=target)
    with solid_ext.use_backend("triton"):
        v, i = solid_ext.ops.topk_scores(q.requires_grad_(True), t, 3, ex)
        r = solid_ext.ops.score_ranks(q, t, target, ex)
    assert calls == [real_topk, real_ranks]
    rv, ri = topk_scores_ref(q.detach(), t, 3, ex)
    assert torch.equal(v, rv) and torch.equal(i, ri) and not v.requires_grad
    assert torch.equal(r, score_ranks_ref(q.detach(), t, target, ex))
    ops = torch.ops.solid_ext_triton
    torch.library.opcheck(ops.topk_scores, (q.detach(), t, 3, ex))
    torch.library.opcheck(ops.score_ranks, (q.detach(), t, target, None))
