"""The item-table ops: ``sparse_row_update`` (fused row-wise optimizer step) with the
optimizers on top of it, and ``item_softmax_xent`` (softmax over every item without
the logits), on every CPU backend and kernel variant against the references."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solid_ext
from solid_ext import ops
from solid_ext.optim import LazyAdam, RowwiseAdagrad
from solid_ext.reference import item_softmax_xent_ref, sparse_row_update_ref

from .conftest import CPU_BACKENDS, cpu_backend

KINDS = ("lazy_adam", "rowwise_adagrad")
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}


def table_state(n, d, kind, dtype, seed=0):
    """(weight, state1, state2): random, never zero; the second moment and the row
    accumulator positive."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    if kind == "lazy_adam":
        s1 = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype) * 0.1
        s2 = torch.rand(n, d, generator=g, dtype=torch.float64).to(dtype) * 0.01 + 1e-4
    else:
        s1 = torch.rand(n, generator=g, dtype=torch.float64).to(dtype) + 0.01
        s2 = torch.zeros(0, dtype=dtype)
    return w, s1, s2


def rows_grad(n, d, nnz, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (nnz,), generator=g)
    return idx, torch.randn(nnz, d, generator=g, dtype=torch.float64).to(dtype)


HYPER = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)


def both(n, d, nnz, kind, dtype, wd=0.0, step=3, dense=False, fn=None):
    w, s1, s2 = table_state(n, d, kind, dtype)
    idx, g = rows_grad(n, d, n if dense else nnz, dtype)
    if dense:
        idx = None
    out = [t.clone() for t in (w, s1, s2)]
    ref = [t.clone() for t in (w, s1, s2)]
    (fn or ops.sparse_row_update)(*out, idx, g, kind, weight_decay=wd, step=step, **HYPER)
    sparse_row_update_ref(*ref, idx, g, kind, weight_decay=wd, step=step, **HYPER)
    return (w, s1, s2), idx, out, ref


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "n,d,nnz", [(1, 1, 1), (7, 5, 30), (50, 33, 200), (300, 64, 64), (1000, 130, 17)]
)
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_sparse_row_update_matches_reference(backend, dtype, kind, n, d, nnz, wd):
    before, idx, out, ref = both(n, d, nnz, kind, dtype, wd)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])
    # Rows no index names are bit-identical, state included.
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[idx] = False
    for a, b in zip(out, before, strict=True):
        if a.numel():
            assert torch.equal(a[untouched], b[untouched])
    assert not torch.equal(out[0][idx], before[0][idx])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_row_update_dense_gradient(backend, dtype, kind):
    _, _, out, ref = both(40, 9, 0, kind, dtype, wd=0.01, dense=True)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_sparse_row_update_empty_changes_nothing(backend):
    w, s1, s2 = table_state(10, 4, "lazy_adam", torch.float32)
    copies = [t.clone() for t in (w, s1, s2)]
    ops.sparse_row_update(
        w, s1, s2, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), "lazy_adam", 0.1
    )
    for a, b in zip((w, s1, s2), copies, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicates_summed_before_the_update(backend, kind):
    """Two rows of gradient for one index are one update with their sum, not two."""
    w, s1, s2 = table_state(6, 3, kind, torch.float64)
    g = torch.randn(2, 3, dtype=torch.float64)
    a = [t.clone() for t in (w, s1, s2)]
    b = [t.clone() for t in (w, s1, s2)]
    ops.sparse_row_update(*a, torch.tensor([4, 4]), g, kind, 0.1)
    ops.sparse_row_update(*b, torch.tensor([4]), g.sum(0, keepdim=True), kind, 0.1)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-15)


def test_lazy_adam_with_every_row_is_torch_adam(backend):
    """Dense gradients every step: lazy Adam is Adam (weight decay included)."""
    torch.manual_seed(3)
    p = torch.nn.Parameter(torch.randn(20, 7, dtype=torch.float64))
    q = torch.nn.Parameter(p.detach().clone())
    ref = torch.optim.Adam([p], lr=0.02, weight_decay=0.01)
    opt = LazyAdam([q], lr=0.02, weight_decay=0.01)
    for _ in range(4):
        g = torch.randn(20, 7, dtype=torch.float64)
        p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        opt.step()
    torch.testing.assert_close(q, p, rtol=1e-13, atol=1e-13)


def test_thread_count_does_not_change_the_result(backend):
    """Duplicates are summed in a fixed order: 1 and 2 threads agree bitwise."""
    outs = []
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            _, _, out, _ = both(3000, 32, 20000, "lazy_adam", torch.float32)
            outs.append(out)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [LazyAdam, RowwiseAdagrad])
def test_optimizer_on_sparse_embedding_matches_reference(backend, cls):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(30, 6, padding_idx=0, sparse=True).double()
    w0 = emb.weight.detach().clone()
    opt = cls(emb.parameters(), lr=0.05, weight_decay=0.01)
    kind = cls.kind
    w, s1, s2 = w0.clone(), *table_state(30, 6, kind, torch.float64)[1:]
    s1.zero_()
    s2.zero_()
    for step in range(1, 4):
        x = torch.randint(0, 30, (5, 4))
        gout = torch.randn(5, 4, 6, dtype=torch.float64)
        opt.zero_grad()
        (emb(x) * gout).sum().backward()
        assert emb.weight.grad.is_sparse
        # The reference on the same rows: padding (0) gets no gradient.
        keep = x.flatten() != 0
        sparse_row_update_ref(
            w, s1, s2, x.flatten()[keep], gout.reshape(-1, 6)[keep], kind, 0.05,
            0.9, 0.999, 1e-8, 0.01, step,
        )  # fmt: skip
        opt.step()
    torch.testing.assert_close(emb.weight.detach(), w, rtol=1e-12, atol=1e-12)
    assert torch.equal(emb.weight[0], w0[0])  # padding never updated
    # state_dict round trip: a fresh optimizer continues identically.
    emb2 = torch.nn.Embedding(30, 6, padding_idx=0, sparse=True).double()
    emb2.load_state_dict(emb.state_dict())
    opt2 = cls(emb2.parameters(), lr=0.05, weight_decay=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint would
    x = torch.randint(1, 30, (3, 4))
    for e, o in ((emb, opt), (emb2, opt2)):
        o.zero_grad()
        e(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(emb.weight, emb2.weight)


def test_row_optimizer_rejects_non_tables():
    with pytest.raises(ValueError, match="2-d tables"):
        LazyAdam([torch.nn.Parameter(torch.randn(3))])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 40),
    nnz=st.integers(0, 200),
    kind=st.sampled_from(KINDS),
    step=st.integers(1, 50),
    wd=st.sampled_from([0.0, 0.1]),
    name=st.sampled_from(CPU_BACKENDS),
)
def test_sparse_row_update_fuzz(n, d, nnz, kind, step, wd, name):
    with cpu_backend(name):
        _, _, out, ref = both(n, d, nnz, kind, torch.float64, wd, step)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


BAD_UPDATE = [
    (dict(kind="adam"), ValueError, "kind"),
    (dict(indices=torch.tensor([0, 99])), IndexError, "indices"),
    (dict(indices=torch.tensor([-1, 0])), IndexError, "indices"),
    (dict(indices=torch.tensor([0.0, 1.0])), ValueError, "indices"),
    (dict(grad=torch.randn(2, 5)), ValueError, "grad"),
    (dict(grad=torch.randn(2, 4, dtype=torch.float64)), TypeError, "grad"),
    (dict(state1=torch.zeros(10, 3)), ValueError, "state1"),
    (dict(weight=torch.randn(4, 10).t()), ValueError, "weight"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(beta2=1.0), ValueError, "beta2"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(step=0), ValueError, "step"),
]


@pytest.mark.parametrize("change,exc,name", BAD_UPDATE)
def test_sparse_row_update_bad_input_names_argument(change, exc, name):
    w, s1, s2 = table_state(10, 4, "lazy_adam", torch.float32)
    args = dict(weight=w, state1=s1, state2=s2, indices=torch.tensor([1, 2]))
    args.update(grad=torch.randn(2, 4), kind="lazy_adam", lr=0.1, step=1)
    args.update(change)
    with pytest.raises(exc, match=name):
        ops.sparse_row_update(**args)


@pytest.mark.skipif("cpu" not in solid_ext.available_backends(), reason="no compiled kernels")
@pytest.mark.parametrize(
    "change,name",
    [
        (dict(indices=torch.tensor([0, 99])), "indices"),
        (dict(kind="adam"), "kind"),
        (dict(grad=torch.randn(2, 5)), "grad"),
        (dict(state2=torch.zeros(3)), "state2"),
        (dict(step=0), "step"),
    ],
)
def test_raw_sparse_row_update_checks_its_arguments(change, name):
    """torch.ops.solid_ext.sparse_row_update is public: it checks without the wrapper."""
    w, s1, s2 = table_state(10, 4, "lazy_adam", torch.float32)
    a = dict(weight=w, state1=s1, state2=s2, indices=torch.tensor([1, 2]), grad=torch.randn(2, 4))
    a.update(kind="lazy_adam", lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    a.update(step=1)
    a.update(change)
    with pytest.raises(RuntimeError, match=name):
        torch.ops.solid_ext.sparse_row_update(**a)


@pytest.mark.skipif("cpu" not in solid_ext.available_backends(), reason="no compiled kernels")
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_row_update_opcheck(kind):
    w, s1, s2 = table_state(12, 5, kind, torch.float32)
    idx, g = rows_grad(12, 5, 9, torch.float32)
    for indices, grad in ((idx, g), (None, torch.randn(12, 5))):
        args = (w, s1, s2, indices, grad, kind, 0.1, 0.9, 0.999, 1e-8, 0.01, 2)
        torch.library.opcheck(torch.ops.solid_ext.sparse_row_update.default, args)


# --- item_softmax_xent ------------------------------------------------------------


def softmax_case(b, n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    t = (torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    y = torch.randint(0, n, (b,), generator=g)
    return h, t, y


def loss_and_grads(fn, h, t, y, ls, **kw):
    h, t = h.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loss = fn(h, t, y, ls, **kw)
    w = torch.linspace(0.5, 1.5, len(loss), dtype=loss.dtype)
    gh, gt = torch.autograd.grad((loss * w).sum(), [h, t])
    return loss.detach(), gh, gt


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("b,n,d", [(1, 1, 5), (3, 7, 32), (17, 300, 33), (8, 1000, 64)])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 64, 5000])
def test_item_softmax_matches_reference(backend, dtype, b, n, d, ls, chunk):
    h, t, y = softmax_case(b, n, d, dtype)
    y[0] = n - 1
    out = loss_and_grads(ops.item_softmax_xent, h, t, y, ls, chunk=chunk)
    ref = loss_and_grads(item_softmax_xent_ref, h, t, y, ls)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for a, r in zip(out, ref, strict=True):
        torch.testing.assert_close(a, r, **tol)


def test_item_softmax_non_contiguous_and_empty(backend):
    h, t, y = softmax_case(6, 50, 8, torch.float64)
    hn = torch.randn(8, 6, dtype=torch.float64).t()  # non-contiguous (6, 8)
    torch.testing.assert_close(
        ops.item_softmax_xent(hn, t, y, 0.0, chunk=16), item_softmax_xent_ref(hn, t, y)
    )
    e = ops.item_softmax_xent(h[:0], t, y[:0])
    assert e.shape == (0,)


def test_item_softmax_gradcheck(backend):
    h, t, y = softmax_case(3, 11, 4, torch.float64)
    h.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: ops.item_softmax_xent(a, b, y, 0.2, chunk=4), (h, t)
    )


@pytest.mark.skipif("cpu" not in solid_ext.available_backends(), reason="no compiled kernels")
def test_item_softmax_opcheck():
    h, t, y = softmax_case(5, 40, 6, torch.float32)
    h.requires_grad_(True)
    t.requires_grad_(True)
    torch.library.opcheck(torch.ops.solid_ext.item_softmax_xent.default, (h, t, y, 0.1, 16))


BAD_SOFTMAX = [
    (dict(hidden=torch.randn(3)), ValueError, "hidden"),
    (dict(table=torch.randn(9, 5)), ValueError, "table"),
    (dict(table=torch.randn(0, 4)), ValueError, "table"),
    (dict(target=torch.tensor([0, 1, 9])), IndexError, "target"),
    (dict(target=torch.tensor([0, 1])), ValueError, "target"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    (dict(chunk=0), ValueError, "chunk"),
]


@pytest.mark.parametrize("change,exc,name", BAD_SOFTMAX)
def test_item_softmax_bad_input_names_argument(change, exc, name):
    a = dict(hidden=torch.randn(3, 4), table=torch.randn(9, 4), target=torch.tensor([0, 1, 8]))
    a.update(change)
    with pytest.raises(exc, match=name):
        ops.item_softmax_xent(**a)


@pytest.mark.skipif("cpu" not in solid_ext.available_backends(), reason="no compiled kernels")
def test_item_softmax_never_holds_the_logits():
    """B x N logits would be 512 MB here; the op's peak memory stays near the table's."""
    code = textwrap.dedent(
        """
        import resource, torch
        from solid_ext import ops
        torch.set_num_threads(1)
        b, n, d = 256, 500_000, 8
        h = torch.randn(b, d, requires_grad=True)
        t = torch.randn(n, d, requires_grad=True)
        y = torch.randint(0, n, (b,))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ops.item_softmax_xent(h, t, y, 0.1, chunk=4096).sum().backward()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mb = float(out.stdout.split()[-1])
    # The table's gradient (16 MB) and a few (256, 4096) blocks (4 MB each) at most.
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"
