"""Own data through ``solidrec prepare``: column mapping, a rating threshold, item
embeddings keyed by original item id, a local text model, and file permissions.

Every input is generated here (``solidrec.data.synth``); ``--neg-eval 9`` keeps the
datasets small.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from solidrec.cli import main
from solidrec.data import load_prepared
from solidrec.data.prepared import ARRAY_FILES
from solidrec.data.synth import SynthConfig, generate

ML_HEADER = ["userId", "movieId", "rating", "timestamp"]
MAPPED = ["--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp"]


def _ratings(seed: int = 1) -> pa.Table:
    """A MovieLens-style log: integer user / movie ids, half-star ratings, timestamps."""
    d = generate(SynthConfig(users=40, items=300, mean_len=8, seed=seed))
    rating = np.random.default_rng(seed).choice(np.arange(1, 11) / 2, size=len(d.user))
    return pa.table(
        {
            "userId": pa.array(d.user + 1),
            "movieId": pa.array(d.item + 1),
            "rating": pa.array(rating),
            "timestamp": pa.array(d.timestamp),
        }
    )


def _write(table: pa.Table, path: Path, header: list[str] | None = None) -> Path:
    """``table`` as CSV / TSV / Parquet (by suffix), its columns renamed to ``header``."""
    if header is not None:
        table = table.rename_columns(header)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
        return path
    sep = "\t" if path.suffix == ".tsv" else ","
    rows = [sep.join(table.column_names)]
    rows += [
        sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in r.values())
        for r in table.to_pylist()
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _prepare(inp: Path, out: Path, *extra: str, fmt: str = "generic") -> int:
    args = ["prepare", "--format", fmt, "--input", str(inp), "--out", str(out)]
    return main([*args, "--neg-eval", "9", "--no-progress", *extra])


def _arrays(d: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ARRAY_FILES:
        with np.load(d / name, allow_pickle=False) as z:
            out.update({f"{name}/{k}": z[k] for k in z.files})
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("solidrec prepare: error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


# ------------------------------------------------------------------------ column mapping


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_mapped_columns_equal_default_headers(tmp_path: Path, suffix: str) -> None:
    t = _ratings()
    ml = _write(t, tmp_path / f"ml{suffix}")
    default = _write(
        t, tmp_path / f"default{suffix}", ["user_id", "item_id", "rating", "timestamp"]
    )
    assert _prepare(ml, tmp_path / "mapped", *MAPPED) == 0
    assert _prepare(default, tmp_path / "default") == 0
    a, b = _arrays(tmp_path / "mapped"), _arrays(tmp_path / "default")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    manifest = json.loads((tmp_path / "mapped" / "manifest.json").read_text())
    assert manifest["params"]["columns"] == {
        "user": "userId",
        "item": "movieId",
        "time": "timestamp",
        "rating": None,
    }
    # another mapping of the same file is another dataset, not "up to date"
    swapped = ["--user-col", "movieId", "--item-col", "userId", "--time-col", "timestamp"]
    assert _prepare(ml, tmp_path / "mapped", *swapped, "--force") == 0
    assert not np.array_equal(
        load_prepared(tmp_path / "mapped").user_original_id,
        load_prepared(tmp_path / "default").user_original_id,
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize(
    ("flags", "flag", "column"),
    [
        (["--user-col", "userId", "--item-col", "movie_id"], "--item-col", "movie_id"),
        (["--item-col", "movieId"], "--user-col", "user_id"),
        ([*MAPPED[:4], "--time-col", "ts"], "--time-col", "ts"),
        ([*MAPPED, "--min-rating", "3", "--rating-col", "stars"], "--rating-col", "stars"),
    ],
)
def test_missing_column_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
    flags: list[str],
    flag: str,
    column: str,
) -> None:
    inp = _write(_ratings(), tmp_path / f"ml{suffix}")
    assert _prepare(inp, tmp_path / "p", *flags) == 2
    err = _one_line_error(capsys)
    assert str(inp) in err and f"{column!r} ({flag})" in err, err
    assert str(ML_HEADER) in err, err
    assert not (tmp_path / "p").exists()


def test_missing_rating_column_names_rating_col(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = _write(_ratings().drop_columns(["rating"]), tmp_path / "r.csv")
    assert _prepare(inp, tmp_path / "p", *MAPPED, "--min-rating", "4") == 2
    err = _one_line_error(capsys)
    assert "'rating' (--rating-col)" in err and "['userId', 'movieId', 'timestamp']" in err


# ------------------------------------------------------------------------- --min-rating


def test_min_rating_filters_and_is_part_of_the_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = _ratings()
    inp = _write(t, tmp_path / "ratings.csv")
    out = tmp_path / "p"
    assert _prepare(inp, out, *MAPPED, "--min-rating", "3.5") == 0
    ds = load_prepared(out)
    rating = t.column("rating").to_numpy()
    kept = rating >= 3.5
    assert ds.manifest["counts"]["interactions"] == int(kept.sum()) < len(rating)
    assert ds.manifest["params"]["min_rating"] == 3.5
    # an item rated only below the threshold is no item at all
    liked = set(np.unique(t.column("movieId").to_numpy()[kept]).astype(str).tolist())
    assert set(ds.item_original_id[1:].tolist()) == liked
    capsys.readouterr()
    assert _prepare(inp, out, *MAPPED, "--min-rating", "3.5") == 0
    assert "up to date" in capsys.readouterr().out
    assert _prepare(inp, out, *MAPPED, "--min-rating", "4", "--force") == 0
    assert "written" in capsys.readouterr().out
    assert load_prepared(out).manifest["counts"]["interactions"] == int((rating >= 4).sum())
    assert _prepare(inp, out, *MAPPED, "--force") == 0
    assert "written" in capsys.readouterr().out
    assert load_prepared(out).manifest["counts"]["interactions"] == len(rating)
    assert "min_rating" not in load_prepared(out).manifest["params"]


def test_min_rating_with_movielens_format_and_renamed_rating(tmp_path: Path) -> None:
    t = _ratings()
    d = tmp_path / "ml"
    d.mkdir()
    _write(t, d / "ratings.csv")
    assert _prepare(d, tmp_path / "a", "--min-rating", "3", fmt="movielens") == 0
    stars = _write(t, tmp_path / "stars.parquet", ["u", "i", "stars", "t"])
    cols = ["--user-col", "u", "--item-col", "i", "--time-col", "t", "--rating-col", "stars"]
    assert _prepare(stars, tmp_path / "b", *cols, "--min-rating", "3") == 0
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_numeric_rating_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    t = _ratings()
    rating = [f"{x:g}" for x in t.column("rating").to_pylist()]
    rating[6] = "five"
    t = t.set_column(2, "rating", pa.array(rating))
    inp = _write(t, tmp_path / f"r{suffix}")
    assert _prepare(inp, tmp_path / "p", *MAPPED, "--min-rating", "3") == 2
    where = f"{inp}, line 8" if suffix == ".csv" else f"{inp}, row 7"
    assert f"{where}: column 'rating': 'five' is not a number" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("fmt", "flags", "problem"),
    [
        ("generic", [*MAPPED, "--rating-col", "rating"], "--rating-col is only read with"),
        ("generic", [*MAPPED, "--min-rating", "nan"], "--min-rating must be a finite"),
        ("generic", [*MAPPED, "--min-rating", "9"], "no rating in column 'rating' is >= 9"),
        ("generic", ["--user-col", "x", "--item-col", "x"], "--user-col and --item-col"),
        ("amazon2014", ["--min-rating", "3"], "format amazon2014 has no ratings"),
        ("movielens", ["--user-col", "userId"], "apply to --format generic only"),
    ],
)
def test_rating_and_column_option_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    flags: list[str],
    problem: str,
) -> None:
    inp = _write(_ratings(), tmp_path / "ratings.csv")
    assert _prepare(inp, tmp_path / "p", *flags, fmt=fmt) == 2
    assert problem in _one_line_error(capsys)


# ------------------------------------------------------------ embeddings keyed by item id


def _vectors(ids: np.ndarray) -> np.ndarray:
    """Three well-separated clusters by id (so k-means recovers them); the small offsets
    depend on the id only, so an item's vector is the same in every layout."""
    ids = ids.astype(np.int64)
    centers = np.asarray([[0, 0, 0, 10], [10, 0, 0, 0], [0, 10, 0, 0]], dtype=np.float32)
    offsets = ((ids % 7)[:, None] * np.asarray([1, 2, 3, 4]) % 5) / 50
    return (centers[ids % 3] + offsets).astype(np.float32)


EMB = ["--embedding", "id", "--semantic", "kmeans", "--clusters", "3"]


@pytest.fixture
def keyed(tmp_path: Path) -> dict[str, object]:
    """A MovieLens-style file, its prepared items (indices do not depend on the semantic
    options), and the semantic ids an index-ordered embedding file gives: the reference
    the keyed layouts must reproduce. Items 1-2 have no row in the keyed files; ids
    9001.. are no items of the data; keyed rows are shuffled."""
    inp = _write(_ratings(), tmp_path / "ratings.csv")
    assert _prepare(inp, tmp_path / "base", *MAPPED) == 0
    items = load_prepared(tmp_path / "base").item_original_id[1:].astype(np.int64)
    index_ordered = _vectors(items)
    index_ordered[:2] = 0  # what a missing item gets
    np.save(tmp_path / "by_index.npy", index_ordered)
    assert (
        _prepare(
            inp,
            tmp_path / "ref",
            *MAPPED,
            *EMB,
            "--item-embeddings",
            str(tmp_path / "by_index.npy"),
        )
        == 0
    )
    ref = load_prepared(tmp_path / "ref").semantic_id
    assert len(np.unique(ref[1:])) == 3
    ids = np.concatenate([items[2:], np.arange(9001, 9006)])
    ids = ids[np.random.default_rng(1).permutation(len(ids))]
    return {"input": inp, "ids": ids, "vectors": _vectors(ids), "ref": ref, "items": items}


def _check_keyed(
    tmp_path: Path, keyed: dict, caplog: pytest.LogCaptureFixture, *flags: str
) -> None:
    with caplog.at_level("WARNING", logger="solidrec.data"):
        assert _prepare(keyed["input"], tmp_path / "p", *MAPPED, *EMB, *flags) == 0
    np.testing.assert_array_equal(load_prepared(tmp_path / "p").semantic_id, keyed["ref"])
    n = len(keyed["items"])
    assert f"2 of {n} items have no embedding" in caplog.text
    assert f"5 of its {len(keyed['ids'])} ids are no item of the data" in caplog.text


@pytest.mark.parametrize("ids_as", ["text", "npy-str", "npy-int"])
def test_npy_with_ids_file(
    tmp_path: Path, keyed: dict, caplog: pytest.LogCaptureFixture, ids_as: str
) -> None:
    np.save(tmp_path / "emb.npy", keyed["vectors"])
    ids = keyed["ids"]
    if ids_as == "text":
        path = tmp_path / "ids.txt"
        path.write_text("".join(f"{x}\n" for x in ids))
    else:
        path = tmp_path / "ids.npy"
        np.save(path, ids.astype(str) if ids_as == "npy-str" else ids)
    _check_keyed(
        tmp_path,
        keyed,
        caplog,
        "--item-embeddings",
        str(tmp_path / "emb.npy"),
        "--embedding-ids",
        str(path),
    )


@pytest.mark.parametrize("layout", ["parquet-list", "parquet-columns", "csv-columns"])
def test_embedding_table(
    tmp_path: Path, keyed: dict, caplog: pytest.LogCaptureFixture, layout: str
) -> None:
    ids, vec = keyed["ids"], keyed["vectors"]
    if layout == "parquet-list":
        table = pa.table({"item_id": ids, "title": ids.astype(str), "embedding": list(vec)})
    else:
        table = pa.table({"item_id": ids.astype(str), **{f"e{j}": vec[:, j] for j in range(4)}})
    path = tmp_path / ("emb.csv" if layout == "csv-columns" else "emb.parquet")
    if layout == "csv-columns":
        pacsv.write_csv(table, path)  # full float precision
    else:
        pq.write_table(table, path)
    _check_keyed(tmp_path, keyed, caplog, "--item-embeddings", str(path))


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("no-match", "none of its 5 item ids is an item of the data"),
        ("npy-1d", "item embeddings of shape (5,), expected (5, D)"),
        ("rows-vs-ids", "item embeddings of shape (4, 4), expected (5, D)"),
        ("table-no-item-id", "missing column 'item_id'; the columns are ['id', 'embedding']"),
        ("ragged-list", "row 2: column 'embedding': 3 values, but row 1 has 4"),
        ("csv-text-value", "line 3: column 'e1': 'abc' is not a number"),
        ("duplicate-id", "line 2: duplicate item id '9001' (first on line 1)"),
        ("ids-with-table", "--embedding-ids: "),
    ],
)
def test_bad_embedding_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, problem: str
) -> None:
    inp = _write(_ratings(), tmp_path / "ratings.csv")
    ids = np.arange(9001, 9006)
    vec = _vectors(ids)
    emb, extra = tmp_path / "emb.npy", []
    (tmp_path / "ids.txt").write_text("".join(f"{x}\n" for x in ids))
    ids_flag = ["--embedding-ids", str(tmp_path / "ids.txt")]
    if case == "no-match":
        np.save(emb, vec)
        extra = ids_flag
    elif case == "npy-1d":
        np.save(emb, vec[:, 0])
        extra = ids_flag
    elif case == "rows-vs-ids":
        np.save(emb, vec[:4])
        extra = ids_flag
    elif case == "duplicate-id":
        np.save(emb, vec)
        (tmp_path / "ids.txt").write_text("9001\n9001\n9002\n9003\n9004\n")
        extra = ids_flag
    elif case in ("table-no-item-id", "ragged-list", "ids-with-table"):
        emb = tmp_path / "emb.parquet"
        rows = [list(v) for v in vec]
        if case == "ragged-list":
            rows[1] = rows[1][:3]
        key = "id" if case == "table-no-item-id" else "item_id"
        pq.write_table(pa.table({key: ids, "embedding": rows}), emb)
        extra = ids_flag if case == "ids-with-table" else []
    elif case == "csv-text-value":
        emb = tmp_path / "emb.csv"
        emb.write_text("item_id,e0,e1\n1,0.5,1\n2,0.5,abc\n")
    assert _prepare(inp, tmp_path / "p", *MAPPED, *EMB, "--item-embeddings", str(emb), *extra) == 2
    err = _one_line_error(capsys)
    assert problem in err, err
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------- local text model


def _items(tmp_path: Path) -> tuple[Path, Path]:
    inp = _write(_ratings(), tmp_path / "ratings.csv")
    titles = ["gel pen blue", "pipette tips", "fountain pen", "lab pipette"]
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"item_id": str(i), "title": titles[i % 4]}) + "\n" for i in range(1, 301)
        )
    )
    return inp, items


def test_text_model_missing_package_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import raises
    inp, items = _items(tmp_path)
    flags = [*MAPPED, "--items", str(items), "--text-model", "all-MiniLM-L6-v2"]
    assert _prepare(inp, tmp_path / "p", *flags) == 2
    err = _one_line_error(capsys)
    assert "--text-model all-MiniLM-L6-v2" in err and "pip install sentence-transformers" in err


def test_text_model_is_loaded_locally_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple[str, dict]] = []

    class FakeSentenceTransformer:
        def __init__(self, name: str, **kw: object) -> None:
            loads.append((name, kw))
            if name == "absent":
                raise OSError("We couldn't connect to the Hub\nand more lines")

        def encode(self, texts: list[str], **kw: object) -> np.ndarray:
            # two clear directions: pens and pipettes
            return np.asarray([[1.0, 0.0] if "pen" in t.split() else [0.0, 1.0] for t in texts])

    fake = types.ModuleType("sentence_transformers")
    fake.SentenceTransformer = FakeSentenceTransformer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    inp, items = _items(tmp_path)
    flags = [*MAPPED, "--items", str(items), "--semantic", "kmeans", "--clusters", "2"]
    assert _prepare(inp, tmp_path / "p", *flags, "--text-model", "my-model") == 0
    assert loads == [("my-model", {"device": "cpu", "local_files_only": True})]
    ds = load_prepared(tmp_path / "p")
    pen = np.asarray(["pen" in t.split() for t in ds.item_title[1:]])
    assert len(set(ds.semantic_id[1:][pen])) == 1 and len(set(ds.semantic_id[1:][~pen])) == 1
    assert ds.manifest["params"]["semantic"]["text_model"] == "my-model"
    assert _prepare(inp, tmp_path / "q", *flags, "--text-model", "absent") == 2
    err = _one_line_error(capsys)
    assert "--text-model absent: not found on this machine" in err and "never downloads" in err
    assert (
        _prepare(inp, tmp_path / "q", *flags, "--text-model", "m", "--text-encoder", "minilm") == 2
    )
    assert "--text-model replaces --text-encoder" in _one_line_error(capsys)


# --------------------------------------------------------------------------- permissions


def test_prepared_directory_follows_the_umask(tmp_path: Path) -> None:
    """End to end through the CLI (tests/solidrec/test_faults.py checks atomic_directory
    alone): every file of a prepared directory, not only the manifest."""
    inp = _write(_ratings(), tmp_path / "ratings.csv")
    old = os.umask(0o022)
    try:
        assert _prepare(inp, tmp_path / "p", *MAPPED) == 0
    finally:
        os.umask(old)
    out = tmp_path / "p"
    assert out.stat().st_mode & 0o777 == 0o755
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted([*ARRAY_FILES, "manifest.json"])
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o644 for f in files}


def test_embeddings_as_a_model_feature(
    tmp_path: Path, keyed: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--embedding-feature`` stores the keyed embeddings aligned with the items;
    ``item_features=id+embedding`` trains on them, and the model directory serves them.
    A dataset without them is refused naming the flag."""
    np.save(tmp_path / "emb.npy", keyed["vectors"])
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{x}\n" for x in keyed["ids"]))
    flags = ["--item-embeddings", str(tmp_path / "emb.npy"), "--embedding-ids", str(ids)]
    data = tmp_path / "feat"
    assert _prepare(keyed["input"], data, *MAPPED, *EMB, *flags, "--embedding-feature") == 0
    ds = load_prepared(data)
    assert ds.item_embedding is not None and ds.item_embedding.shape == (ds.num_items + 1, 4)
    np.testing.assert_array_equal(ds.item_embedding[0], 0)
    np.testing.assert_array_equal(ds.item_embedding[1:3], 0)  # items 1-2: no embedding row
    np.testing.assert_allclose(ds.item_embedding[3:], _vectors(keyed["items"][2:]))
    # Not part of the dataset without the flag, and the fingerprint tells them apart.
    assert _prepare(keyed["input"], tmp_path / "plain", *MAPPED, *EMB, *flags) == 0
    plain = load_prepared(tmp_path / "plain")
    assert plain.item_embedding is None
    assert plain.manifest["fingerprint"] != ds.manifest["fingerprint"]

    train = ["train", "--backbone", "gru4rec", "--generator", "apg", "--epochs", "1"]
    train += ["--max-steps-per-epoch", "2", "--quiet", "--set", "item_features=id+embedding"]
    run = tmp_path / "run"
    assert main([*train, "--data", str(data), "--out", str(run)]) == 0
    from solidrec.recommend import Recommender

    rec = Recommender.from_run(run / "model", device="cpu")
    assert rec.model.pretrained_proj is not None
    history = [str(x) for x in keyed["items"][3:6]]
    assert len(rec.recommend(history, k=3)) == 3
    capsys.readouterr()
    assert main([*train, "--data", str(tmp_path / "plain"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("solidrec train: error: model.item_features=id+embedding needs")
    assert "--embedding-feature" in err and len(err.splitlines()) == 1
