"""Protocol pieces on random data: leave-one-out, histories, negative sampling."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from solidrec.data.protocol import (
    build_sequences,
    histories,
    interaction_keys,
    make_eval,
    make_train,
    sample_negatives,
    split_positions,
)
from solidrec.data.raw import RawDataset


def _raw(user: list[int], item: list[int], time: list[int] | None = None) -> RawDataset:
    u, i = np.asarray(user, dtype=np.int64), np.asarray(item, dtype=np.int64)
    return RawDataset(
        u,
        i,
        None if time is None else np.asarray(time, dtype=np.int64),
        np.asarray([f"u{k}" for k in range(u.max() + 1)]),
        np.asarray([f"i{k}" for k in range(i.max() + 1)]),
    )


def test_histories_left_padded_most_recent_last() -> None:
    seq = build_sequences(_raw([0] * 5 + [1] * 2, [0, 1, 2, 3, 4, 5, 6]))
    hist, n = histories(seq, np.array([0, 3, 6]), 3)
    assert hist.tolist() == [[0, 0, 0], [1, 2, 3], [0, 0, 6]] and n.tolist() == [0, 3, 1]


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    n_items=st.integers(30, 60),
    seed=st.integers(0, 2**16),
)
def test_leave_one_out_and_negatives(lengths: list[int], n_items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    half = n_items // 2  # two filler users cover every item, so all items exist
    lengths = [*lengths, half, n_items - half]
    user = np.repeat(np.arange(len(lengths)), lengths)
    item = np.concatenate([rng.integers(0, n_items, size=len(user) - n_items), np.arange(n_items)])
    time = rng.permutation(len(user))
    seq = build_sequences(_raw(user.tolist(), item.tolist(), time.tolist()))
    # chronological within each user
    t_sorted = [sorted(time[user == u].tolist()) for u in range(len(lengths))]
    items_by_time = [
        [int(item[(user == u) & (time == t)][0]) for t in ts] for u, ts in enumerate(t_sorted)
    ]
    code = {c: k + 1 for k, c in enumerate(np.unique(item).tolist())}
    for u in range(len(lengths)):
        got = seq.item[seq.offsets[u] : seq.offsets[u + 1]].tolist()
        assert got == [code[c] for c in items_by_time[u]]
    train, valid, test = split_positions(seq)
    keys = interaction_keys(seq)
    L = 4
    tr = make_train(seq, train, L, 2, np.random.default_rng(1), keys)
    va = make_eval(seq, valid, L, 5, np.random.default_rng(2), keys)
    te = make_eval(seq, test, L, 5, np.random.default_rng(3), keys)
    n = np.asarray(lengths)
    assert len(te.user) == (n >= 2).sum() and len(va.user) == (n >= 3).sum()
    assert tr.rows == 3 * np.maximum(n - 3, 0).sum() and tr.item.shape[1] == 3
    for e, back in ((te, 1), (va, 2)):
        for u, h, c in zip(e.user.tolist(), e.hist.tolist(), e.candidates.tolist(), strict=True):
            s = seq.item[seq.offsets[u] : seq.offsets[u + 1]].tolist()
            assert c[0] == s[-back]
            prev = s[: len(s) - back][-L:]
            assert h == [0] * (L - len(prev)) + prev
            assert not set(c[1:]) & set(s) and len(set(c)) == len(c)
    assert (tr.label[:, 0] == 1).all() and (tr.label[:, 1:] == 0).all()
    assert (tr.hist_len >= 1).all()
    for u, negs in zip(tr.user.tolist(), tr.item[:, 1:].tolist(), strict=True):
        assert not set(negs) & set(seq.item[seq.offsets[u] : seq.offsets[u + 1]].tolist())


def test_dense_user_exact_fallback() -> None:
    # user 0 interacted with 97 of 100 items: only 3 valid negatives remain
    user = [0] * 97 + [1] * 100
    item = list(range(97)) + list(range(100))
    seq = build_sequences(_raw(user, item))
    keys = interaction_keys(seq)
    neg = sample_negatives(np.random.default_rng(0), np.zeros(20, dtype=np.int64), 3, seq, keys)
    assert all(sorted(r) == [98, 99, 100] for r in neg.tolist())
    again = sample_negatives(np.random.default_rng(0), np.zeros(20, dtype=np.int64), 3, seq, keys)
    assert np.array_equal(neg, again)
