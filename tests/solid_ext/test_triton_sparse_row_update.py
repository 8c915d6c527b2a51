"""The Triton ``sparse_row_update`` kernel vs the reference, on CPU tensors in the
Triton interpreter.

As in test_triton.py: TRITON_INTERPRET=1 must be set before ``triton`` is imported,
so an ordinary run deselects every case here and test_triton.py's
``test_interpreter_suite`` runs this file with it in one TRITON_INTERPRET=1
subprocess. Inputs are fresh random values (never zeros: a zero moment or gradient would
hide a missed term); tables are small and D deliberately not a block multiple. Each
case runs several optimizer steps in a row and checks, after every step, all of weight,
state1 and state2 against the reference, and that the rows no index named are
bit-identical (state included).
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

import solid_ext  # noqa: E402
from solid_ext import triton_kernels as tk  # noqa: E402
from solid_ext.reference import sparse_row_update_ref  # noqa: E402

from .conftest import poisoned_empty  # noqa: E402

IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
# Cases marked ``interp`` need the interpreter: an ordinary run deselects them (see
# ``pytest_collection_modifyitems`` in conftest.py) and test_triton.py's
# test_interpreter_suite runs them, with this file's, in one interpreter process.
interp = pytest.mark.triton_interpreter

KINDS = ("lazy_adam", "rowwise_adagrad")
LR, BETA1, BETA2, EPS = 0.05, 0.9, 0.999, 1e-8
WD = 0.1


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {
        torch.float64: {"atol": 1e-12, "rtol": 1e-12},
        torch.float32: {"atol": 2e-5, "rtol": 1e-5},
        torch.float16: {"atol": 2e-2, "rtol": 1e-2},
        torch.bfloat16: {"atol": 1e-1, "rtol": 2e-2},
    }[dtype]


def _state(kind: str, N: int, D: int, dtype: torch.dtype, g: torch.Generator):
    """(weight, state1, state2), random and nonzero; the second moment / accumulator
    positive, as after a few steps."""
    w = torch.randn(N, D, generator=g, dtype=torch.float64)
    if kind == "lazy_adam":
        s1 = 0.1 * torch.randn(N, D, generator=g, dtype=torch.float64)
        s2 = 0.01 * torch.rand(N, D, generator=g, dtype=torch.float64) + 1e-3
    else:
        s1 = torch.rand(N, generator=g, dtype=torch.float64) + 0.1
        s2 = torch.empty(0, dtype=torch.float64)
    return [t.to(dtype) for t in (w, s1, s2)]


def _batch(N: int, nnz: int, D: int, touch: int, dtype: torch.dtype, g: torch.Generator):
    """indices in [0, touch) (rows touch..N-1 never named; nnz > touch forces
    duplicates) and their gradient rows."""
    idx = torch.randint(0, touch, (nnz,), generator=g)
    grad = torch.randn(nnz, D, generator=g, dtype=torch.float64).to(dtype)
    return idx, grad


def _named(idx: torch.Tensor | None, N: int) -> torch.Tensor:
    named = torch.zeros(N, dtype=torch.bool)
    if idx is None:
        named[:] = True
    else:
        named[idx] = True
    return named


def _step_and_compare(ours, ref, idx, grad, kind, wd, step, dtype, ref_dtype=None):
    """One step of the kernel on ``ours`` and of the reference on ``ref`` (in
    ``ref_dtype``), then every tensor compared, and the unnamed rows of ours checked
    bit-identical to before the step."""
    N = ours[0].shape[0]
    before = [t.clone() for t in ours]
    with poisoned_empty():
        tk.sparse_row_update(*ours, idx, grad, kind, LR, BETA1, BETA2, EPS, wd, step)
    g_ref = grad if ref_dtype is None else grad.to(ref_dtype)
    sparse_row_update_ref(*ref, idx, g_ref, kind, LR, BETA1, BETA2, EPS, wd, step)
    for name, o, r in zip(("weight", "state1", "state2"), ours, ref, strict=True):
        assert o.dtype == dtype, name
        assert not torch.isnan(o).any(), f"NaN in {name}"
        want = r if ref_dtype is None else r.to(dtype)
        torch.testing.assert_close(o, want, **_tol(dtype), msg=lambda m, n=name: f"{n}: {m}")
    named = _named(idx, N)
    for name, o, b in zip(("weight", "state1", "state2"), ours, before, strict=True):
        if o.numel():
            assert torch.equal(o[~named], b[~named]), f"{name}: an unnamed row changed"
            assert not torch.equal(o[named], b[named]), f"{name}: the named rows did not change"


def _run(kind, dtype, D, wd, *, N=24, nnz=40, touch=18, steps=3, dense=False, seed=0):
    g = torch.Generator().manual_seed(seed * 1000 + D * 10 + KINDS.index(kind))
    ours = _state(kind, N, D, dtype, g)
    ref = [t.clone() for t in ours]
    for step in range(1, steps + 1):
        if dense:
            idx, grad = None, torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)
        else:
            idx, grad = _batch(N, nnz, D, touch, dtype, g)
            assert len(idx.unique()) < nnz, "the batch must hold duplicate indices"
        _step_and_compare(ours, ref, idx, grad, kind, wd, step, dtype)


# --- numerics against the reference ------------------------------------------------------


@pytest.mark.parametrize("wd", [0.0, WD])
@pytest.mark.parametrize("D", [1, 5, 33, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_sparse_matches_reference(kind, dtype, D, wd):
    # 40 indices over rows [0, 18) of 24: duplicates and untouched rows; three steps.
    _run(kind, dtype, D, wd)


@pytest.mark.parametrize("wd", [0.0, WD])
@pytest.mark.parametrize("D", [5, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_dense_matches_reference(kind, dtype, D, wd):
    # indices=None: grad (N, D), every row updated; with every row touched each step,
    # lazy Adam is torch.optim.Adam.
    _run(kind, dtype, D, wd, N=70, dense=True)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_d_tiled(kind, dtype, dense, monkeypatch):
    # The widest D tile lowered to 16 so D = 130 takes 9 tiles: Adam's D loop and
    # Adagrad's two sweeps (the row's mean first, then the update).
    from solid_ext.triton_kernels import _sparse_row_update as sru

    monkeypatch.setattr(sru, "MAX_BLOCK_D", {torch.float32: 16, torch.float64: 16})
    assert sru.blocks(130, dtype)[1] == 16
    _run(kind, dtype, 130, WD, dense=dense)


@pytest.mark.parametrize("kind", KINDS)
@interp
def test_many_rows_and_uneven_segments(kind):
    # 300 indices over 150 rows: several programs of 64 distinct rows (5 for D = 5);
    # row 7 named 60 times, so one lane's segment is far longer than its neighbours'.
    N, D = 200, 5
    g = torch.Generator().manual_seed(11)
    ours = _state(kind, N, D, torch.float64, g)
    ref = [t.clone() for t in ours]
    for step in (1, 2):
        idx, grad = _batch(N, 300, D, 150, torch.float64, g)
        idx[torch.randperm(300, generator=g)[:60]] = 7
        _step_and_compare(ours, ref, idx, grad, kind, WD, step, torch.float64)


@pytest.mark.parametrize("kind", KINDS)
@interp
def test_one_row_many_times(kind):
    # Every index names the same row: one segment of 50 rows, every other row untouched.
    N, D = 9, 33
    g = torch.Generator().manual_seed(3)
    ours = _state(kind, N, D, torch.float64, g)
    ref = [t.clone() for t in ours]
    grad = torch.randn(50, D, generator=g, dtype=torch.float64)
    idx = torch.full((50,), 4)
    _step_and_compare(ours, ref, idx, grad, kind, WD, 1, torch.float64)


@pytest.mark.parametrize("kind", KINDS)
@interp
def test_unsorted_indices_and_large_step(kind):
    # Distinct unsorted indices (no duplicates), a late step (bias correction near 1),
    # beta values away from the defaults.
    N, D = 30, 7
    g = torch.Generator().manual_seed(5)
    ours = _state(kind, N, D, torch.float32, g)
    ref = [t.clone() for t in ours]
    idx = torch.randperm(N, generator=g)[:17]
    grad = torch.randn(17, D, generator=g)
    before = [t.clone() for t in ours]
    tk.sparse_row_update(*ours, idx, grad, kind, 0.01, 0.5, 0.9, 1e-6, 0.0, 1000)
    sparse_row_update_ref(*ref, idx, grad, kind, 0.01, 0.5, 0.9, 1e-6, 0.0, 1000)
    for o, r, b in zip(ours, ref, before, strict=True):
        torch.testing.assert_close(o, r, **_tol(torch.float32))
        if o.numel():
            named = _named(idx, N)
            assert torch.equal(o[~named], b[~named])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_half_precision(kind, dtype):
    # float16/bfloat16 tables are computed in float32 and rounded back: compare with the
    # reference in float32 on the same (upcast) values, rounded to the dtype.
    N, D = 24, 20
    g = torch.Generator().manual_seed(9)
    ours = _state(kind, N, D, dtype, g)
    ref = [t.float() for t in ours]
    idx, grad = _batch(N, 40, D, 18, dtype, g)
    _step_and_compare(ours, ref, idx, grad, kind, WD, 1, dtype, ref_dtype=torch.float32)


# --- edge cases ------------------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_nothing_to_update(kind, dense):
    # nnz = 0 (or, dense, a 0-row table): nothing changes, nothing is read.
    g = torch.Generator().manual_seed(1)
    N = 0 if dense else 6
    state = _state(kind, N, 5, torch.float32, g)
    before = [t.clone() for t in state]
    idx = None if dense else torch.empty(0, dtype=torch.long)
    grad = torch.randn(0, 5, generator=g)
    tk.sparse_row_update(*state, idx, grad, kind, LR, BETA1, BETA2, EPS, WD, 1)
    for t, b in zip(state, before, strict=True):
        assert torch.equal(t, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_deterministic(kind, dtype):
    # Two runs from the same state are bit-identical: duplicates summed in a fixed order.
    N, D = 8, 33
    g = torch.Generator().manual_seed(2)
    state = _state(kind, N, D, dtype, g)
    idx, grad = _batch(N, 200, D, N, dtype, g)
    grad = grad * 1e3  # large terms: any change of summation order shows in the bits
    runs = []
    for _ in range(2):
        s = [t.clone() for t in state]
        tk.sparse_row_update(*s, idx, grad, kind, LR, BETA1, BETA2, EPS, WD, 2)
        runs.append(s)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
@interp
def test_duplicates_summed_in_order(kind):
    # Duplicates are summed in the order they come, from zero, as index_add_: a batch of
    # duplicates equals the same batch with the rows presummed that way, bit for bit.
    N, D = 10, 6
    g = torch.Generator().manual_seed(4)
    state = _state(kind, N, D, torch.float32, g)
    idx, grad = _batch(N, 30, D, 5, torch.float32, g)
    grad = grad * torch.logspace(-3, 3, 30)[:, None]  # order-sensitive sums in float32
    rows = idx.unique()
    summed = torch.zeros(len(rows), D).index_add_(0, torch.searchsorted(rows, idx), grad)
    a = [t.clone() for t in state]
    b = [t.clone() for t in state]
    tk.sparse_row_update(*a, idx, grad, kind, LR, BETA1, BETA2, EPS, WD, 1)
    tk.sparse_row_update(*b, rows, summed, kind, LR, BETA1, BETA2, EPS, WD, 1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@interp
def test_noncontiguous_grad():
    N, D = 12, 5
    g = torch.Generator().manual_seed(6)
    ours = _state("lazy_adam", N, D, torch.float32, g)
    ref = [t.clone() for t in ours]
    idx = torch.randint(0, N, (9,), generator=g)
    grad = torch.randn(D, 9, generator=g).t()  # (9, D), not contiguous
    assert not grad.is_contiguous()
    _step_and_compare(ours, ref, idx, grad, "lazy_adam", WD, 1, torch.float32)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_through_public_op(kind, dense):
    # solid_ext.ops.sparse_row_update with the triton backend (it makes grad contiguous).
    N, D = 15, 9
    g = torch.Generator().manual_seed(8)
    ours = _state(kind, N, D, torch.float32, g)
    ref = [t.clone() for t in ours]
    idx = None if dense else torch.randint(0, N, (20,), generator=g)
    grad = torch.randn(D, N if dense else 20, generator=g).t()
    with solid_ext.use_backend("triton"):
        solid_ext.ops.sparse_row_update(*ours, idx, grad, kind, LR, weight_decay=WD, step=2)
    sparse_row_update_ref(*ref, idx, grad, kind, LR, weight_decay=WD, step=2)
    for o, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(o, r, **_tol(torch.float32))


# --- argument checks and registration --------------------------------------------------


def _good_args(kind="lazy_adam"):
    g = torch.Generator().manual_seed(10)
    w, s1, s2 = _state(kind, 6, 4, torch.float32, g)
    idx = torch.tensor([0, 5, 2, 5])
    grad = torch.randn(4, 4, generator=g)
    return [w, s1, s2, idx, grad, kind, LR, BETA1, BETA2, EPS, WD, 1]


_BAD = [
    # (argument position, bad value (a callable of the good args), name in the message)
    (0, lambda a: a[0].t(), "weight"),
    (0, lambda a: a[0][:, 0], "weight"),
    (1, lambda a: a[1][:5], "state1"),
    (2, lambda a: a[2].double(), "state2"),
    (2, lambda a: a[2][:, :3], "state2"),
    (3, lambda a: a[3].int(), "indices"),
    (3, lambda a: a[3].reshape(2, 2), "indices"),
    (3, lambda a: torch.tensor([0, 6, 1, 2]), "indices"),
    (3, lambda a: torch.tensor([0, -1, 1, 2]), "indices"),
    (3, lambda a: None, "grad"),  # dense needs grad (N, D)
    (4, lambda a: a[4][:3], "grad"),
    (4, lambda a: a[4].double(), "grad"),
    (5, lambda a: "adam", "kind"),
    (6, lambda a: -1.0, "lr"),
    (6, lambda a: float("nan"), "lr"),
    (7, lambda a: 1.0, "beta1"),
    (8, lambda a: -0.5, "beta2"),
    (9, lambda a: 0.0, "eps"),
    (10, lambda a: float("inf"), "weight_decay"),
    (11, lambda a: 0, "step"),
]


@pytest.mark.parametrize(("pos", "bad", "name"), _BAD)
@interp
def test_rejects_bad_arguments(pos, bad, name):
    args = _good_args()
    before = [t.clone() for t in args[:3]]
    args[pos] = bad(args)
    with pytest.raises((ValueError, TypeError, IndexError), match=rf"\b{name}\b"):
        tk.sparse_row_update(*args)
    if pos > 2:  # rejected before anything was written
        for t, b in zip(args[:3], before, strict=True):
            assert torch.equal(t, b)


@interp
def test_rejects_adagrad_state_shapes():
    args = _good_args("rowwise_adagrad")
    args[1] = torch.rand(6, 4)  # lazy_adam's shape
    with pytest.raises(ValueError, match=r"\bstate1\b"):
        tk.sparse_row_update(*args)
    args = _good_args("rowwise_adagrad")
    args[2] = torch.rand(6)
    with pytest.raises(ValueError, match=r"\bstate2\b"):
        tk.sparse_row_update(*args)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@interp
def test_opcheck(kind, dense):
    args = _good_args(kind)
    if dense:
        args[3] = None
        args[4] = torch.randn(6, 4, generator=torch.Generator().manual_seed(12))
    torch.library.opcheck(torch.ops.solid_ext_triton.sparse_row_update, tuple(args))


@interp
def test_exported():
    # Exported, and registered as mutating exactly weight, state1 and state2, returning
    # nothing (what functionalization and torch.compile rely on).
    assert "sparse_row_update" in tk.__all__
    schema = torch.ops.solid_ext_triton.sparse_row_update.default._schema
    mutated = {a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write}
    assert mutated == {"weight", "state1", "state2"}
    assert len(schema.returns) == 0
