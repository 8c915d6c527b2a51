"""Readers on small fixture files (formats without real files here) and malformed input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from solidrec.data import DataFormatError, PrepareConfig, load_prepared, prepare
from solidrec.data.protocol import build_sequences
from solidrec.data.readers import parse_categories, read_dataset


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _sequences(raw) -> dict[str, list[str]]:
    order = (
        np.lexsort((np.arange(len(raw.user)), raw.time, raw.user))
        if raw.time is not None
        else np.argsort(raw.user, kind="stable")
    )
    out: dict[str, list[str]] = {}
    for i in order.tolist():
        out.setdefault(str(raw.user_ids[raw.user[i]]), []).append(str(raw.item_ids[raw.item[i]]))
    return out


def test_generic_csv_with_timestamps_and_items(tmp_path: Path) -> None:
    inter = _write(tmp_path / "i.csv", "user_id,item_id,timestamp\na,x,30\na,y,10\nb,x,5\na,z,20\n")
    items = _write(
        tmp_path / "items.csv",
        "item_id,title,categories\nx,Red pen,Office|Pens\n"
        'y,"Blue, ink","[""Office"", ""Ink""]"\nq,unused,\n',
    )
    raw = read_dataset("generic", inter, items)
    assert _sequences(raw) == {"a": ["y", "z", "x"], "b": ["x"]}
    t = dict(zip(raw.item_ids.tolist(), raw.titles, strict=True))
    c = dict(zip(raw.item_ids.tolist(), raw.categories, strict=True))
    assert t == {"x": "Red pen", "y": "Blue, ink", "z": ""}
    assert c["x"] == (("Office", "Pens"),) and c["y"] == (("Office", "Ink"),) and c["z"] == ()


def test_generic_without_timestamp_uses_file_order_tsv_and_parquet(tmp_path: Path) -> None:
    tsv = _write(tmp_path / "i.tsv", "user_id\titem_id\nu1\tb\nu2\ta\nu1\ta\nu1\tc\n")
    assert _sequences(read_dataset("generic", tsv)) == {"u1": ["b", "a", "c"], "u2": ["a"]}
    pq.write_table(
        pa.table({"user_id": [1, 2, 1], "item_id": [9, 8, 7], "timestamp": [3, 1, 2]}),
        tmp_path / "i.parquet",
    )
    assert _sequences(read_dataset("generic", tmp_path / "i.parquet")) == {
        "1": ["7", "9"],
        "2": ["8"],
    }


def test_items_jsonl_multiple_paths(tmp_path: Path) -> None:
    inter = _write(tmp_path / "i.csv", "user_id,item_id\nu,a\n")
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"item_id": "a", "title": "A", "categories": [["R", "S"], ["R", "T"]]}) + "\n\n"
    )
    raw = read_dataset("generic", inter, items)
    assert raw.categories == [(("R", "S"), ("R", "T"))]


def test_amazon2018_gz_with_meta(tmp_path: Path) -> None:
    ratings = tmp_path / "Cat.csv.gz"
    with gzip.open(ratings, "wt") as f:
        f.write("I1,U1,5.0,1500\nI2,U1,4.0,1400\nI1,U2,3.0,1600\nI3,U1,1.0,1450\n")
    meta = tmp_path / "meta_Cat.json.gz"
    with gzip.open(meta, "wt") as f:
        f.write(json.dumps({"asin": "I1", "title": "One", "category": ["Cat", "Sub"]}) + "\n")
        f.write(json.dumps({"asin": "I9", "title": "Not rated", "category": ["Cat"]}) + "\n")
        f.write(json.dumps({"asin": "I2", "title": "Two", "category": []}) + "\n")
    raw = read_dataset("amazon2018", ratings, meta)
    assert _sequences(raw) == {"U1": ["I2", "I3", "I1"], "U2": ["I1"]}
    t = dict(zip(raw.item_ids.tolist(), raw.titles, strict=True))
    assert t == {"I1": "One", "I2": "Two", "I3": ""}


def test_amazon2014_reviews_and_literal_meta(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews_Cat_5.json"
    lines = [
        {"reviewerID": "R1", "asin": "A", "unixReviewTime": 20, "overall": 5.0},
        {"reviewerID": "R1", "asin": "B", "unixReviewTime": 10},
        {"reviewerID": "R2", "asin": "A", "unixReviewTime": 15},
    ]
    reviews.write_text("".join(json.dumps(x) + "\n" for x in lines))
    meta = _write(
        tmp_path / "meta.json",
        "{'asin': 'A', 'title': 'Alpha', 'categories': [['Cat', 'X'], ['Cat', 'Y']]}\n",
    )
    raw = read_dataset("amazon2014", reviews, meta)
    assert _sequences(raw) == {"R1": ["B", "A"], "R2": ["A"]}
    assert raw.categories[list(raw.item_ids).index("A")] == (("Cat", "X"), ("Cat", "Y"))


def test_generic_prepare_small_users(tmp_path: Path) -> None:
    """Users with 1 or 2 interactions: no empty-history rows; counts still include them."""
    rows = ["user_id,item_id"]
    rows += (
        [f"long,i{k}" for k in range(6)]
        + ["two,i0", "two,i1", "one,i2"]
        + [f"other,i{k}" for k in range(6, 10)]
    )
    inter = _write(tmp_path / "i.csv", "\n".join(rows) + "\n")
    prepare(
        PrepareConfig(format="generic", input=inter, out=tmp_path / "p", neg_eval=3, neg_train=2)
    )
    ds = load_prepared(tmp_path / "p")
    assert ds.manifest["counts"]["users"] == 4 and ds.manifest["counts"]["interactions"] == 13
    uid = {u: i for i, u in enumerate(ds.user_original_id.tolist())}
    assert sorted(ds.valid.user.tolist()) == sorted([uid["long"], uid["other"]])
    assert sorted(ds.test.user.tolist()) == sorted([uid["long"], uid["two"], uid["other"]])
    assert ds.train.label.tolist() == [1, 0, 0] * 4  # long: positions 1..3, other: position 1
    assert np.bincount(ds.train.user[ds.train.label == 1]).tolist() == [3, 0, 0, 1]
    two = ds.test.user.tolist().index(uid["two"])
    assert ds.test.hist[two].tolist() == [0] * 9 + [ds.item_original_id.tolist().index("i0")]


def test_kcore_filter(tmp_path: Path) -> None:
    rows = (
        ["user_id,item_id"]
        + [f"u{u},i{i}" for u in range(3) for i in range(3)]
        + ["u9,i0", "u0,i7"]
    )
    inter = _write(tmp_path / "i.csv", "\n".join(rows) + "\n")
    seq = build_sequences(read_dataset("generic", inter), kcore=3)
    assert (seq.num_users, seq.num_items, len(seq.item)) == (3, 3, 9)
    assert len(build_sequences(read_dataset("generic", inter)).item) == 11


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        ("missing.csv", "user_id,timestamp\nu,1\n", 1, "missing column"),
        ("dup.csv", "user_id,item_id,user_id\nu,i,v\n", 1, "duplicate column 'user_id'"),
        ("fields.csv", "user_id,item_id\nu,i\nu,i,extra\n", 3, "expected 2 fields, found 3"),
        ("blank.csv", "user_id,item_id\nu,i\n\nu,j\n", 3, "empty line"),
        ("empty_value.csv", "user_id,item_id\nu,i\n,j\n", 3, "empty value in column 'user_id'"),
        ("ts.csv", "user_id,item_id,timestamp\nu,i,1\nu,j,soon\n", 3, "'soon' is not a number"),
        ("headeronly.csv", "user_id,item_id\n", None, "no data rows"),
        ("empty.csv", "", None, "empty file"),
    ],
)
def test_generic_malformed(
    tmp_path: Path, name: str, text: str, line: int | None, problem: str
) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(DataFormatError) as e:
        read_dataset("generic", path)
    assert e.value.path == str(path) and e.value.line == line
    assert problem in e.value.problem and str(path) in str(e.value)


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"user_id,item_id\nu,i\nu,\xff\xfe\n")
    with pytest.raises(DataFormatError, match=r"line 3: invalid UTF-8"):
        read_dataset("generic", path)


def test_malformed_json_lines(tmp_path: Path) -> None:
    reviews = _write(
        tmp_path / "r.json",
        '{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}\n{"reviewerID": "a",\n',
    )
    with pytest.raises(DataFormatError, match=r"r\.json, line 2: invalid JSON"):
        read_dataset("amazon2014", reviews)
    reviews = _write(tmp_path / "r2.json", '{"reviewerID": "a", "asin": "b"}\n')
    with pytest.raises(DataFormatError, match=r"line 1: missing key 'unixReviewTime'"):
        read_dataset("amazon2014", reviews)
    inter = _write(tmp_path / "i.csv", "user_id,item_id\nu,a\n")
    items = _write(tmp_path / "items.jsonl", '{"item_id": "a"}\n{"item_id": "a"}\n')
    with pytest.raises(DataFormatError, match=r"line 2: duplicate item_id 'a'"):
        read_dataset("generic", inter, items)
    with pytest.raises(DataFormatError, match=r"line 4: categories: invalid JSON list"):
        parse_categories('["a", ', Path("x.csv"), 4)


def _atomic(tmp_path: Path, train: str, valid: str, test: str) -> Path:
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for split, body in (("train", train), ("valid", valid), ("test", test)):
        _write(tmp_path / f"D.{split}.inter", head + body)
    _write(tmp_path / "D.item2index", "A\t0\nB\t1\nC\t2\nD\t3\n")
    return tmp_path


def test_atomic_reconstruction_and_errors(tmp_path: Path) -> None:
    d = _atomic(
        tmp_path, "0\t0 1\t2\n0\t0\t1\n", "0\t0 1 2\t3\n1\t2\t1\n", "0\t0 1 2 3\t0\n1\t2 1\t3\n"
    )
    raw = read_dataset("atomic", d)
    assert _sequences(raw) == {"0": ["A", "B", "C", "D", "A"], "1": ["C", "B", "D"]}
    _write(
        tmp_path / "D.test.inter",
        "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2 3\t9\n1\t2 1\t3\n",
    )
    with pytest.raises(DataFormatError, match=r"D\.test\.inter, line 2: unknown item id '9'"):
        read_dataset("atomic", d)
    _write(
        tmp_path / "D.test.inter",
        "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 3 2 3\t0\n1\t2 1\t3\n",
    )
    with pytest.raises(DataFormatError, match=r"line 2: history of user '0' disagrees"):
        read_dataset("atomic", d)
    _write(tmp_path / "D.valid.inter", "user_id:token\titem_id:token\n")
    with pytest.raises(DataFormatError, match=r"D\.valid\.inter, line 1: expected header"):
        read_dataset("atomic", d)
