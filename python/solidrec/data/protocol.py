"""The paper's protocol (§4.1), vectorised with numpy.

Chronological sequences per user, optional k-core filtering, leave-one-out split
(last -> test, second-last -> valid, rest -> train), fixed-length left-padded
histories, and sampled negatives that the user never interacted with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from solidrec.data.prepared import EvalSplit, TrainSplit
from solidrec.data.raw import RawDataset

#: Rows sampled per vectorised chunk; a constant so results never depend on the machine.
CHUNK_ROWS = 1 << 16


@dataclass
class Sequences:
    """All interactions grouped by user (users 0..U-1), chronological within a user.

    Items are prepared indices 1..num_items. ``user_index`` / ``item_index`` map the
    kept users / items back to positions in the raw vocabularies.
    """

    user: np.ndarray  # int64 (n,), non-decreasing
    item: np.ndarray  # int64 (n,), 1..num_items
    offsets: np.ndarray  # int64 (U+1,), user u's interactions are [offsets[u], offsets[u+1])
    user_index: np.ndarray  # int64 (U,) raw user code of each prepared user
    item_index: np.ndarray  # int64 (num_items,) raw item code of prepared item i+1

    @property
    def num_users(self) -> int:
        return len(self.user_index)

    @property
    def num_items(self) -> int:
        return len(self.item_index)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def kcore_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by iterative k-core filtering (every kept user and item has >= k rows)."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep
    nu, ni = int(user.max()) + 1, int(item.max()) + 1
    while True:
        uc = np.bincount(user[keep], minlength=nu)
        ic = np.bincount(item[keep], minlength=ni)
        new = keep & (uc[user] >= k) & (ic[item] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def build_sequences(raw: RawDataset, kcore: int = 0) -> Sequences:
    """Order interactions chronologically per user, filter, and re-index.

    Users and items keep the relative order of the reader's vocabularies (first
    appearance in the file, or the atomic index files' order).
    """
    n = len(raw.user)
    if raw.time is None:
        order = np.argsort(raw.user, kind="stable")
    else:
        order = np.lexsort((np.arange(n), raw.time, raw.user))
    user, item = raw.user[order], raw.item[order]
    if kcore > 1:
        keep = kcore_mask(user, item, kcore)
        user, item = user[keep], item[keep]
        if len(user) == 0:
            raise ValueError(f"{kcore}-core filtering removed every interaction")
    user_index, user_new = np.unique(user, return_inverse=True)
    item_index, item_new = np.unique(item, return_inverse=True)
    counts = np.bincount(user_new, minlength=len(user_index))
    offsets = np.zeros(len(user_index) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Sequences(
        user=user_new.astype(np.int64),
        item=item_new.astype(np.int64) + 1,
        offsets=offsets,
        user_index=user_index.astype(np.int64),
        item_index=item_index.astype(np.int64),
    )


def histories(seq: Sequences, targets: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded histories (most recent last) of the interactions at global positions
    ``targets``: the up-to-``length`` items before each, from the same user."""
    start = seq.offsets[seq.user[targets]]
    idx = targets[:, None] - length + np.arange(length)[None, :]
    valid = idx >= start[:, None]
    hist = np.where(valid, seq.item[np.maximum(idx, 0)], 0).astype(np.int64)
    return hist, valid.sum(axis=1).astype(np.int64)


def interaction_keys(seq: Sequences) -> np.ndarray:
    """Sorted unique ``user * (num_items + 1) + item`` for membership tests."""
    return np.unique(seq.user * np.int64(seq.num_items + 1) + seq.item)


def _row_duplicates(cand: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry in the same row."""
    order = np.argsort(cand, axis=1, kind="stable")
    s = np.take_along_axis(cand, order, axis=1)
    dup_sorted = np.zeros_like(cand, dtype=bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    k: int,
    seq: Sequences,
    keys: np.ndarray,
    progress: Callable[[int], None] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(len(users), k) distinct items per row (into ``out`` if given), uniform over
    items the row's user never interacted with. Rejection sampling in fixed-size
    chunks; rows that keep failing (users who interacted with most items) are drawn
    exactly from their complement."""
    n_items = seq.num_items
    stride = np.int64(n_items + 1)
    lengths = np.diff(np.searchsorted(keys, np.arange(seq.num_users + 1, dtype=np.int64) * stride))
    short = n_items - lengths[users] < k
    if short.any():
        u = int(users[np.flatnonzero(short)[0]])
        raise ValueError(
            f"user {u} interacted with {int(lengths[u])} of {n_items} items: "
            f"cannot sample {k} distinct negatives"
        )
    if out is None:
        out = np.empty((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, len(users))
        u = users[lo:hi]
        ukey = u[:, None] * stride
        cand = rng.integers(1, n_items + 1, size=(hi - lo, k), dtype=np.int64)
        rows = np.arange(hi - lo)
        for _ in range(64):
            sub = cand[rows]
            q = ukey[rows] + sub
            pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            bad = (keys[pos] == q) | _row_duplicates(sub)
            bad_rows = bad.any(axis=1)
            if not bad_rows.any():
                rows = rows[:0]
                break
            nb = int(bad.sum())
            sub[bad] = rng.integers(1, n_items + 1, size=nb, dtype=np.int64)
            cand[rows] = sub
            rows = rows[bad_rows]
        for r in rows.tolist():  # rare: exact draw from the complement
            uu = int(u[r])
            seen = (
                keys[np.searchsorted(keys, uu * stride) : np.searchsorted(keys, (uu + 1) * stride)]
                - uu * stride
            )
            allowed = np.setdiff1d(
                np.arange(1, n_items + 1, dtype=np.int64), seen, assume_unique=True
            )
            cand[r] = rng.choice(allowed, size=k, replace=False)
        out[lo:hi] = cand
        if progress is not None:
            progress(hi - lo)
    return out


def split_positions(seq: Sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global positions of train positives, valid targets and test targets.

    Leave-one-out: a user's last interaction is its test target, the second-last its
    valid target, the rest are training. Only targets with at least one history item
    become samples: train positions 1..n-3, valid if n >= 3, test if n >= 2.
    """
    lengths = seq.lengths
    pos_in_user = np.arange(len(seq.user), dtype=np.int64) - seq.offsets[seq.user]
    n_of = lengths[seq.user]
    train = np.flatnonzero((pos_in_user >= 1) & (pos_in_user <= n_of - 3))
    valid = seq.offsets[1:][lengths >= 3] - 2
    test = seq.offsets[1:][lengths >= 2] - 1
    return train, valid, test


def make_eval(
    seq: Sequences,
    positions: np.ndarray,
    length: int,
    neg: int,
    rng: np.random.Generator,
    keys: np.ndarray,
    progress: Callable[[int], None] | None = None,
) -> EvalSplit:
    """One row per target at global ``positions``: its user, its history of up to
    ``length`` items, and ``candidates`` whose column 0 is the positive, then ``neg``
    negatives drawn with ``rng`` (``keys``: :func:`interaction_keys` of ``seq``)."""
    users = seq.user[positions]
    hist, hist_len = histories(seq, positions, length)
    cands = np.empty((len(positions), neg + 1), dtype=np.int64)
    cands[:, 0] = seq.item[positions]
    sample_negatives(rng, users, neg, seq, keys, progress, out=cands[:, 1:])
    return EvalSplit(user=users, hist=hist, hist_len=hist_len, candidates=cands)


def as_train(rows: EvalSplit) -> TrainSplit:
    """Training samples from :func:`make_eval`'s rows: each history once, its positive
    then its negatives as candidates (labels 1 then 0)."""
    label = np.zeros(rows.candidates.shape, dtype=np.float32)
    label[:, 0] = 1.0
    return TrainSplit(
        user=rows.user, hist=rows.hist, hist_len=rows.hist_len, item=rows.candidates, label=label
    )


def make_train(*args: Any, **kwargs: Any) -> TrainSplit:
    """``as_train(make_eval(...))``: :func:`make_eval`'s arguments, ``neg`` negatives
    after each positive, all sharing the positive's history."""
    return as_train(make_eval(*args, **kwargs))
