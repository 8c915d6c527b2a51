"""``topk_scores`` (maximum inner-product top-k with exclusions) and ``score_ranks`` (exact
rank of a target among all items) on every CPU backend
and kernel variant: against the reference, the reference against a brute-force sort,
ties, exclusions, threads, bad inputs, opcheck and memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solid_ext
from solid_ext import ops
from solid_ext.reference import score_ranks_ref, topk_scores_ref

HAS_CPU = "cpu" in solid_ext.available_backends()


def brute(q, t, k, exclude=None):
    """Python's sort of (-score, index) over every non-excluded item (float64 scores)."""
    s = (q.double() @ t.double().T).tolist()
    vals, idxs = [], []
    for b, row in enumerate(s):
        skip = set(exclude[b].tolist()) if exclude is not None else set()
        ranked = sorted((-v, n) for n, v in enumerate(row) if n not in skip)[:k]
        ranked += [(float("inf"), -1)] * (k - len(ranked))
        vals.append([-v for v, _ in ranked])
        idxs.append([n for _, n in ranked])
    return torch.tensor(vals, dtype=torch.float64), torch.tensor(idxs)


def int_case(b, n, d, dtype, seed=0, span=3):
    """Small integers: every score exact in any order of summation, with many ties."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-span, span + 1, (b, d), generator=g).to(dtype)
    t = torch.randint(-span, span + 1, (n, d), generator=g).to(dtype)
    return q, t


def rand_case(b, n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    return q, t


def history(b, n, e, seed=1, pad=True):
    g = torch.Generator().manual_seed(seed)
    ex = torch.randint(0, n, (b, e), generator=g)
    if pad and e > 1:
        ex[::2, -1] = -1  # padded rows
    return ex


SHAPES = [(1, 1, 1, 1), (3, 7, 5, 7), (7, 300, 33, 10), (13, 2000, 64, 100), (64, 1500, 8, 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("b,n,d,k", SHAPES)
@pytest.mark.parametrize("excluded", [0, 4])
def test_exact_on_integer_scores(backend, dtype, b, n, d, k, excluded):
    """Integer inputs: scores are exact, so values and indices (ties to the lowest
    index) must equal the brute-force sort's exactly."""
    q, t = int_case(b, n, d, dtype)
    ex = history(b, n, excluded) if excluded else None
    v, i = ops.topk_scores(q, t, k, ex)
    bv, bi = brute(q, t, k, ex)
    assert v.dtype == dtype and i.dtype == torch.int64 and v.shape == i.shape == (b, k)
    assert torch.equal(i, bi)
    assert torch.equal(v.double(), bv)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("b,n,d,k", [(5, 1000, 32, 10), (40, 3000, 64, 100), (2, 9000, 17, 1000)])
def test_random_scores_match_reference(backend, dtype, b, n, d, k):
    q, t = rand_case(b, n, d, dtype)
    ex = history(b, n, 20)
    v, i = ops.topk_scores(q, t, k, ex)
    rv, ri = topk_scores_ref(q.double(), t.double(), k, ex)
    if dtype == torch.float64:
        assert torch.equal(i, ri)
        torch.testing.assert_close(v.double(), rv, rtol=1e-12, atol=1e-12)
    else:
        # float32 sums in another order may swap near-equal neighbours: each returned
        # score is the true score of its item, and the k-th best matches.
        true = (q.double() @ t.double().T).gather(1, i)
        torch.testing.assert_close(v.double(), true, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v.double(), rv, rtol=1e-5, atol=1e-5)
    assert not (i.unsqueeze(2) == ex.unsqueeze(1)).any()  # no row returns its exclusions
    assert (v[:, 1:] <= v[:, :-1]).all()


@pytest.mark.parametrize("k", [1, 7, 64, 300])
def test_many_compactions_with_ties_and_exclusions(backend, k):
    """Thousands of items with scores in {-3..3}: a row's candidate buffer fills and is
    cut back to its best k many times, with ties straddling its threshold at every cut
    and excluded items among them; the result is still the brute-force sort's."""
    q, t = int_case(6, 5000, 3, torch.float32, seed=7, span=1)
    ex = history(6, 5000, 9, seed=3)
    v, i = ops.topk_scores(q, t, k, ex)
    bv, bi = brute(q, t, k, ex)
    assert torch.equal(i, bi)
    assert torch.equal(v.double(), bv)


@pytest.mark.parametrize("k", [1, 7, 64, 300])
def test_compactions_when_scores_rise_fall_or_shuffle(backend, k):
    """Distinct scores in ascending item order (every item beats the threshold, so the
    buffer is cut back as often as it can be), descending (never after the first cut)
    and shuffled, plus one value repeated around the k-th place of a shuffled row."""
    n = 3000
    g = torch.Generator().manual_seed(11)
    score = torch.linspace(-2.0, 2.0, n, dtype=torch.float64)
    t = torch.zeros(n, 3, dtype=torch.float64)
    t[:, 0] = score
    t[:, 1] = score[torch.randperm(n, generator=g)]
    t[:, 2] = t[:, 1]
    t[torch.randperm(n, generator=g)[: 2 * k], 2] = t[:, 1].sort(descending=True).values[k - 1]
    q = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        v, i = ops.topk_scores(q.to(dtype), t.to(dtype), k)
        bv, bi = brute(q.to(dtype), t.to(dtype), k)
        assert torch.equal(i, bi), dtype
        assert torch.equal(v.double(), bv), dtype


def test_reference_chunks_agree_with_brute_force():
    """The oracle's chunked merge (ties across chunk borders) equals a plain sort."""
    q, t = int_case(9, 333, 6, torch.float64, span=2)
    ex = history(9, 333, 7)
    for chunk in (1, 5, 64, 1000):
        v, i = topk_scores_ref(q, t, 25, ex, chunk=chunk)
        bv, bi = brute(q, t, 25, ex)
        assert torch.equal(i, bi) and torch.equal(v, bv), chunk


def test_fewer_items_than_k_after_exclusion(backend):
    q, t = rand_case(2, 6, 4, torch.float64)
    ex = torch.tensor([[0, 1, 2, 3], [5, 5, -1, -1]])
    v, i = ops.topk_scores(q, t, 4, ex)
    assert torch.equal(i[0, 2:], torch.tensor([-1, -1])) and torch.isinf(v[0, 2:]).all()
    assert set(i[0, :2].tolist()) == {4, 5}
    assert 5 not in i[1].tolist() and (i[1] >= 0).all()


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
@pytest.mark.parametrize("b", [1, 3, 700, 1100])
def test_threads_and_splits_do_not_change_the_answer(b):
    """One row splits the items over threads, many rows split the rows: the buffers are
    merged by the same total order, so the answer is the same bit for bit."""
    q, t = int_case(b, 7000, 16, torch.float32, span=2)
    ex = history(b, 7000, 3)
    prev = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(ops.topk_scores(q, t, 50, ex))
    finally:
        torch.set_num_threads(prev)
    for v, i in outs[1:]:
        assert torch.equal(v, outs[0][0]) and torch.equal(i, outs[0][1])
    assert torch.equal(outs[0][1], topk_scores_ref(q, t, 50, ex)[1])


def test_non_contiguous_and_empty(backend):
    q, t = int_case(5, 80, 6, torch.float64)
    qn = q.t().contiguous().t()  # same values, column-major
    tn = torch.stack([t, -t], 2)[..., 0]  # t, strided
    assert not qn.is_contiguous() and not tn.is_contiguous()
    v, i = ops.topk_scores(qn, tn, 9)
    assert torch.equal(i, brute(q, t, 9)[1])
    v, i = ops.topk_scores(q[:0], t, 3)
    assert v.shape == i.shape == (0, 3)
    ex = torch.empty(5, 0, dtype=torch.int64)
    assert torch.equal(ops.topk_scores(q, t, 9, ex)[1], brute(q, t, 9)[1])


@pytest.mark.parametrize("what", ["queries", "table"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_raise(backend, what, bad):
    q, t = rand_case(3, 50, 4, torch.float32)
    (q if what == "queries" else t)[1, 2] = bad
    with pytest.raises(ValueError, match=f"{what} holds NaN or infinity"):
        ops.topk_scores(q, t, 5)


def test_inputs_requiring_grad_are_detached(backend):
    q, t = rand_case(3, 50, 4, torch.float64)
    v, _ = ops.topk_scores(q.requires_grad_(True), t.requires_grad_(True), 5)
    assert not v.requires_grad


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 9),
    n=st.integers(1, 400),
    d=st.integers(1, 40),
    kf=st.floats(0.0, 1.0),
    e=st.integers(0, 6),
    span=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(["reference", *[f"cpu:{x}" for x in solid_ext.cpu_isas()]]),
)
def test_fuzz_against_brute_force(b, n, d, kf, e, span, seed, name):
    from .conftest import cpu_backend

    k = max(1, round(kf * n))
    q, t = int_case(b, n, d, torch.float32, seed, span)
    ex = history(b, n, e, seed) if e else None
    with cpu_backend(name):
        v, i = ops.topk_scores(q, t, k, ex)
    bv, bi = brute(q, t, k, ex)
    assert torch.equal(i, bi)
    assert torch.equal(v.double(), bv)


BAD = [
    (dict(queries=torch.randn(3)), ValueError, "queries"),
    (dict(queries=torch.randint(0, 3, (3, 4))), TypeError, "queries"),
    (dict(table=torch.randn(9, 5)), ValueError, "table"),
    (dict(table=torch.randn(9, 4, dtype=torch.float64)), TypeError, "table"),
    (dict(table=torch.randn(0, 4)), ValueError, "table"),
    (dict(k=0), ValueError, "k"),
    (dict(k=10), ValueError, "k"),
    (dict(k=True), TypeError, "k"),
    (dict(k=2.0), TypeError, "k"),
    (dict(exclude=torch.tensor([[0], [1]])), ValueError, "exclude"),
    (dict(exclude=torch.tensor([[0], [1], [9]])), IndexError, "exclude"),
    (dict(exclude=torch.tensor([[0], [1], [-2]])), IndexError, "exclude"),
    (dict(exclude=torch.tensor([0, 1, 2])), ValueError, "exclude"),
    (dict(exclude=torch.tensor([[0.0], [1], [2]])), ValueError, "exclude"),
]


@pytest.mark.parametrize("change,exc,name", BAD)
def test_bad_input_names_argument(change, exc, name):
    a = dict(queries=torch.randn(3, 4), table=torch.randn(9, 4), k=3, exclude=None)
    a.update(change)
    with pytest.raises(exc, match=name):
        ops.topk_scores(**a)


def test_numpy_integer_k_is_an_integer(backend):
    import numpy as np

    q, t = int_case(2, 20, 3, torch.float64)
    assert ops.topk_scores(q, t, np.int64(4))[1].shape == (2, 4)


RAW_BAD = [
    (dict(queries=torch.randn(3, 4, 1)), "queries"),
    (dict(table=torch.randn(9, 5)), "table"),
    (dict(k=10), "k must be"),
    (dict(k=0), "k must be"),
    (dict(exclude=torch.tensor([[0], [1], [9]])), "exclude must lie"),
    (dict(exclude=torch.tensor([[0], [1]])), "exclude"),
]


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
@pytest.mark.parametrize("change,name", RAW_BAD)
def test_raw_op_checks_its_arguments(change, name):
    a = dict(queries=torch.randn(3, 4), table=torch.randn(9, 4), k=3, exclude=None)
    a.update(change)
    with pytest.raises(RuntimeError, match=name):
        torch.ops.solid_ext.topk_scores(a["queries"], a["table"], a["k"], a["exclude"])


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
def test_opcheck():
    q, t = rand_case(5, 40, 6, torch.float32)
    for ex in (None, history(5, 40, 3)):
        torch.library.opcheck(torch.ops.solid_ext.topk_scores.default, (q, t, 7, ex))


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
def test_compiles_fullgraph():
    q, t = rand_case(4, 300, 8, torch.float32)
    fn = torch.compile(lambda a, b: ops.topk_scores(a, b, 5), fullgraph=True, backend="eager")
    v, i = fn(q, t)
    assert torch.equal(i, ops.topk_scores(q, t, 5)[1])


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
def test_never_holds_the_score_matrix():
    """B x N scores would be 1 GB here; the op's peak stays near its inputs'."""
    code = textwrap.dedent(
        """
        import resource, torch
        from solid_ext import ops
        torch.set_num_threads(1)
        b, n, d = 1024, 250_000, 8
        q, t = torch.randn(b, d), torch.randn(n, d)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        v, i = ops.topk_scores(q, t, 100)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mb = float(out.stdout.split()[-1])
    # Candidate buffers (1024 x (2 x 100 + 32) x 16 B ~ 3.8 MB), outputs and one packed chunk.
    assert grown_mb < 40, f"peak memory grew by {grown_mb:.0f} MB"


# --- score_ranks ------------------------------------------------------------------


def brute_ranks(q, t, target, exclude=None):
    """1 + items (not the target, not excluded) scoring >= the target, in float64."""
    s = (q.double() @ t.double().T).tolist()
    out = []
    for b, row in enumerate(s):
        skip = set(exclude[b].tolist()) if exclude is not None else set()
        tg = int(target[b])
        out.append(
            1 + sum(1 for n, v in enumerate(row) if n != tg and n not in skip and v >= row[tg])
        )
    return torch.tensor(out)


def targets(b, n, seed=2):
    return torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "b,n,d", [(1, 1, 1), (3, 7, 5), (7, 300, 33), (13, 2000, 64), (64, 1500, 8)]
)
@pytest.mark.parametrize("excluded", [0, 5])
def test_ranks_exact_on_integer_scores(backend, dtype, b, n, d, excluded):
    q, t = int_case(b, n, d, dtype)
    y = targets(b, n)
    ex = history(b, n, excluded) if excluded else None
    if ex is not None:
        ex[0, 0] = y[0]  # excluding the target changes nothing
    r = ops.score_ranks(q, t, y, ex)
    assert r.dtype == torch.int64 and r.shape == (b,)
    assert torch.equal(r, brute_ranks(q, t, y, ex))


def test_ranks_ties_count_against_the_target(backend):
    """A constant scorer ranks each target last among the items it ranks."""
    q = torch.ones(4, 3, dtype=torch.float64)
    t = torch.ones(50, 3, dtype=torch.float64)
    ex = torch.tensor([[1, 2, -1], [1, 1, 1], [-1, -1, -1], [0, 49, 3]])
    r = ops.score_ranks(q, t, torch.tensor([0, 10, 20, 30]), ex)
    assert r.tolist() == [48, 49, 50, 47]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ranks_random_scores_match_reference(backend, dtype):
    q, t = rand_case(40, 3000, 32, dtype)
    y = targets(40, 3000)
    ex = history(40, 3000, 10)
    r = ops.score_ranks(q, t, y, ex)
    ref = score_ranks_ref(q.double(), t.double(), y, ex)
    if dtype == torch.float64:
        assert torch.equal(r, ref)
    else:  # float32 rounding may move a near-tie by one place
        assert (r - ref).abs().max() <= 1


def test_ranks_agree_with_topk(backend):
    """A target ranked r <= k sits at position r - 1 of topk_scores' list (no ties)."""
    q, t = rand_case(30, 800, 16, torch.float64)
    v, i = ops.topk_scores(q, t, 20)
    y = i[:, 7]
    assert (ops.score_ranks(q, t, y) == 8).all()


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
@pytest.mark.parametrize("b", [1, 700])
def test_ranks_threads_do_not_change_the_answer(b):
    q, t = int_case(b, 7000, 16, torch.float32, span=2)
    y, ex = targets(b, 7000), history(b, 7000, 3)
    prev = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(ops.score_ranks(q, t, y, ex))
    finally:
        torch.set_num_threads(prev)
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert torch.equal(outs[0], score_ranks_ref(q, t, y, ex))


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 9),
    n=st.integers(1, 400),
    d=st.integers(1, 40),
    e=st.integers(0, 6),
    span=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(["reference", *[f"cpu:{x}" for x in solid_ext.cpu_isas()]]),
)
def test_ranks_fuzz_against_brute_force(b, n, d, e, span, seed, name):
    from .conftest import cpu_backend

    q, t = int_case(b, n, d, torch.float32, seed, span)
    y = targets(b, n, seed)
    ex = history(b, n, e, seed) if e else None
    with cpu_backend(name):
        r = ops.score_ranks(q, t, y, ex)
    assert torch.equal(r, brute_ranks(q, t, y, ex))


@pytest.mark.parametrize("what", ["queries", "table"])
def test_ranks_non_finite_inputs_raise(backend, what):
    q, t = rand_case(3, 50, 4, torch.float32)
    (q if what == "queries" else t)[1, 2] = float("nan")
    with pytest.raises(ValueError, match=f"{what} holds NaN or infinity"):
        ops.score_ranks(q, t, targets(3, 50))


BAD_RANKS = [
    (dict(queries=torch.randn(3)), ValueError, "queries"),
    (dict(table=torch.randn(9, 5)), ValueError, "table"),
    (dict(target=torch.tensor([0, 1, 9])), IndexError, "target"),
    (dict(target=torch.tensor([0, 1])), ValueError, "target"),
    (dict(target=torch.tensor([0.0, 1, 2])), ValueError, "target"),
    (dict(exclude=torch.tensor([[0], [1], [9]])), IndexError, "exclude"),
]


@pytest.mark.parametrize("change,exc,name", BAD_RANKS)
def test_ranks_bad_input_names_argument(change, exc, name):
    a = dict(queries=torch.randn(3, 4), table=torch.randn(9, 4), target=torch.tensor([0, 1, 8]))
    a.update(change)
    with pytest.raises(exc, match=name):
        ops.score_ranks(**a)


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
@pytest.mark.parametrize(
    "change,name",
    [
        (dict(target=torch.tensor([0, 1, 9])), "target must lie"),
        (dict(target=torch.tensor([0])), "target"),
    ],
)
def test_raw_ranks_check_their_arguments(change, name):
    a = dict(queries=torch.randn(3, 4), table=torch.randn(9, 4), target=torch.tensor([0, 1, 8]))
    a.update(change)
    with pytest.raises(RuntimeError, match=name):
        torch.ops.solid_ext.score_ranks(a["queries"], a["table"], a["target"], None)


@pytest.mark.skipif(not HAS_CPU, reason="no compiled kernels")
def test_ranks_opcheck():
    q, t = rand_case(5, 40, 6, torch.float32)
    for ex in (None, history(5, 40, 3)):
        torch.library.opcheck(torch.ops.solid_ext.score_ranks.default, (q, t, targets(5, 40), ex))
