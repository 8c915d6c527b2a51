"""Prepared data from the real Scientific and MovieLens files: counts and sample properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from solidrec.data import PrepareConfig, dataset_stats, load_prepared, prepare
from solidrec.data.readers import read_dataset


def _interacted(ds) -> dict[int, set[int]]:
    """Every item each user interacted with, rebuilt from the prepared arrays alone."""
    seen: dict[int, set[int]] = {}
    tr = ds.train
    for u, it in zip(tr.user.tolist(), tr.item[:, 0].tolist(), strict=True):  # positives
        seen.setdefault(u, set()).add(it)
    for split in (ds.train, ds.valid, ds.test):
        for u, h in zip(split.user.tolist(), split.hist.tolist(), strict=True):
            seen.setdefault(u, set()).update(x for x in h if x)
    for split in (ds.valid, ds.test):
        for u, c in zip(split.user.tolist(), split.candidates[:, 0].tolist(), strict=True):
            seen.setdefault(u, set()).add(c)
    return seen


def _full_sequences(ds) -> dict[int, set[int]]:
    raw = read_dataset(ds.manifest["source"]["format"], ds.manifest["source"]["input"])
    code_to_item = {code: i + 1 for i, code in enumerate(np.unique(raw.item).tolist())}
    out: dict[int, set[int]] = {}
    for u, it in zip(raw.user.tolist(), raw.item.tolist(), strict=True):
        out.setdefault(u, set()).add(code_to_item[it])
    return out


def test_scientific_counts_match_table6(scientific_prepared: Path) -> None:
    s = dataset_stats(scientific_prepared)
    assert (s["users"], s["items"], s["interactions"]) == (8442, 4385, 59427)
    assert round(s["density"], 7) == 0.0016053
    assert s["valid_rows"] == s["test_rows"] == 8442
    assert s["train_positives"] == 59427 - 3 * 8442
    assert s["train_rows"] == 5 * s["train_positives"]


def test_scientific_leave_one_out_matches_atomic_files(
    scientific_prepared: Path, scientific_dir: Path
) -> None:
    ds = load_prepared(scientific_prepared)
    # atomic item token t is prepared item t + 1; user token u is prepared user u
    for split, fname in ((ds.valid, "Scientific.valid.inter"), (ds.test, "Scientific.test.inter")):
        lines = (scientific_dir / fname).read_text().splitlines()[1:]
        assert len(lines) == len(split.user)
        order = np.argsort(split.user)
        for row, line in zip(order.tolist(), lines, strict=True):
            u, hist, target = line.split("\t")
            assert split.user[row] == int(u)
            assert split.candidates[row, 0] == int(target) + 1
            want = [int(x) + 1 for x in hist.split()][-ds.history_len :]
            assert split.hist_len[row] == len(want)
            assert split.hist[row, ds.history_len - len(want) :].tolist() == want
            assert not split.hist[row, : ds.history_len - len(want)].any()
    # the test history ends with the valid target
    v = dict(zip(ds.valid.user.tolist(), ds.valid.candidates[:, 0].tolist(), strict=True))
    assert all(
        v[u] == h[-1] for u, h in zip(ds.test.user.tolist(), ds.test.hist.tolist(), strict=True)
    )


def test_scientific_train_rows_structure(scientific_prepared: Path) -> None:
    ds = load_prepared(scientific_prepared)
    tr = ds.train
    assert tr.hist.dtype == np.int64 and tr.label.dtype == np.float32 and tr.item.dtype == np.int64
    # One row per training position: its history once, the positive then 4 negatives.
    assert tr.hist.shape == (len(tr.user), 10) and tr.item.shape == tr.label.shape
    assert tr.label.shape == (len(tr.user), 5) and tr.rows == 5 * len(tr.user)
    assert (tr.label[:, 0] == 1).all() and (tr.label[:, 1:] == 0).all()
    # left padding: zeros only before the first real item, hist_len counts the rest
    nz = tr.hist != 0
    assert (nz.sum(axis=1) == tr.hist_len).all()
    assert (np.sort(nz, axis=1) == nz).all()
    assert tr.hist_len.min() >= 1
    negs = tr.item[:, 1:]
    assert all(len(set(r)) == 4 for r in negs[:2000].tolist())


@pytest.mark.parametrize("which", ["scientific_prepared", "movielens_prepared"])
def test_negatives_never_interacted(which: str, request: pytest.FixtureRequest) -> None:
    ds = load_prepared(request.getfixturevalue(which))
    full = _full_sequences(ds)
    assert _interacted(ds).keys() <= full.keys()
    tr = ds.train
    neg = tr.label == 0
    users = np.broadcast_to(tr.user[:, None], tr.item.shape)
    bad = [
        (u, i)
        for u, i in zip(users[neg].tolist(), tr.item[neg].tolist(), strict=True)
        if i in full[u]
    ]
    assert not bad
    for split in (ds.valid, ds.test):
        assert split.candidates.shape[1] == 100
        for u, row in zip(split.user.tolist(), split.candidates.tolist(), strict=True):
            assert len(set(row)) == 100
            assert not (set(row[1:]) & full[u])
            assert min(row) >= 1 and max(row) <= ds.num_items


def test_semantic_ids_cover_items(scientific_prepared: Path, movielens_prepared: Path) -> None:
    sci = load_prepared(scientific_prepared)
    assert sci.semantic_id[0] == 0 and sci.semantic_id[1:].min() >= 1
    assert set(np.unique(sci.semantic_id[1:]).tolist()) == set(range(1, sci.num_semantic + 1))
    # leaf of the category path, e.g. item 1 (asin B00TNNWMXI) is 3D printing filament
    assert sci.semantic_name[sci.semantic_id[1]].endswith("> 3D Printing Filament")
    # Regression pin: 762 primary leaf categories (docs/RESULTS.md, docs/DATA.md).
    assert sci.num_semantic == 762
    ml = load_prepared(movielens_prepared)
    # Each of MovieLens' 19 genres is the primary one of at least one movie.
    assert ml.num_semantic == 19 and ml.semantic_name[0] == "<pad>"
    toy = int(np.flatnonzero(ml.item_title == "Toy Story (1995)")[0])
    assert ml.semantic_name[ml.semantic_id[toy]] in {
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    }


def test_movielens_counts(movielens_prepared: Path) -> None:
    s = dataset_stats(movielens_prepared)
    assert (s["users"], s["interactions"]) == (610, 100836)
    assert s["items"] == 9724  # movies with at least one rating
    ds = load_prepared(movielens_prepared)
    assert ds.item_original_id[1] == "1" and ds.item_title[1] == "Toy Story (1995)"


def test_movielens_test_target_is_latest(movielens_dir: Path, movielens_prepared: Path) -> None:
    ds = load_prepared(movielens_prepared)
    rows = np.loadtxt(
        movielens_dir / "ratings.csv", delimiter=",", skiprows=1, usecols=(0, 1, 3), dtype=np.int64
    )
    item_of = {int(x): i for i, x in enumerate(ds.item_original_id.tolist()) if x}
    user_of = {int(x): i for i, x in enumerate(ds.user_original_id.tolist())}
    order = np.lexsort((np.arange(len(rows)), rows[:, 2], rows[:, 0]))
    last: dict[int, int] = {}
    for u, m, _ in rows[order].tolist():
        last[user_of[u]] = item_of[m]
    got = dict(zip(ds.test.user.tolist(), ds.test.candidates[:, 0].tolist(), strict=True))
    assert got == last


def test_reproducible_byte_for_byte_and_idempotent(
    scientific_dir: Path, scientific_prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    res = prepare(PrepareConfig(format="atomic", input=scientific_dir, out=out))
    assert not res.skipped
    for name in ("items.npz", "users.npz", "semantic.npz", "train.npz", "valid.npz", "test.npz"):
        assert (out / name).read_bytes() == (scientific_prepared / name).read_bytes(), name
    mtime = (out / "manifest.json").stat().st_mtime_ns
    again = prepare(PrepareConfig(format="atomic", input=scientific_dir, out=out))
    assert again.skipped and (out / "manifest.json").stat().st_mtime_ns == mtime
    other = prepare(
        PrepareConfig(format="atomic", input=scientific_dir, out=out, seed=7), force=True
    )
    assert not other.skipped
    assert (out / "train.npz").read_bytes() != (scientific_prepared / "train.npz").read_bytes()
    m = json.loads((out / "manifest.json").read_text())
    assert m["params"]["seed"] == 7 and m["counts"]["interactions"] == 59427
