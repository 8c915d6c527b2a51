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
from solidrec.data.parsing import parse_categories
from solidrec.data.protocol import build_sequences
from solidrec.data.readers import read_dataset


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
    assert ds.train.label.tolist() == [[1, 0, 0]] * 4  # long: positions 1..3, other: 1
    assert np.bincount(ds.train.user).tolist() == [3, 0, 0, 1]  # one row per positive
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


# ------------------------------------------------------------------------- timestamps
#
# Every reader with timestamps, on decimal, negative, huge and mixed integer/decimal
# values. 2**53 + 1 and 2**53 + 0.5 round to the same float64, so only an exact
# comparison orders them; "0.50" equals "0.5" and keeps its file order after it.

_TS_ROWS = [
    ("u", "a", "0.9"),
    ("u", "b", "0.5"),
    ("u", "c", "0.1"),
    ("u", "d", "-3"),
    ("u", "e", "9007199254740993"),
    ("u", "f", "9007199254740992.5"),
    ("u", "g", "-0.25"),
    ("u", "h", "0.50"),
    ("v", "x", "9223372036854775807"),
    ("v", "y", "-9223372036854775808"),
    ("v", "z", "0"),
]
_TS_ORDER = {"u": ["d", "g", "c", "b", "h", "a", "f", "e"], "v": ["y", "z", "x"]}
TS_FORMATS = [
    "generic-csv",
    "generic-tsv",
    "generic-parquet",
    "movielens",
    "amazon2018",
    "amazon2014",
    "atomic",
]


def write_timestamped(fmt: str, d: Path, rows: list[tuple[str, str, str]]) -> tuple[str, Path]:
    """(reader format, input path) of ``rows`` (user, item, timestamp text) written in
    ``fmt``; the first row is line 2 of files with a header, else line (or row) 1."""
    if fmt == "generic-parquet":  # a text column: the same parser as CSV
        cols = list(zip(*rows, strict=True))
        table = pa.table({"user_id": cols[0], "item_id": cols[1], "timestamp": cols[2]})
        pq.write_table(table, d / "i.parquet")
        return "generic", d / "i.parquet"
    if fmt == "generic-csv":
        body = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
        return "generic", _write(d / "i.csv", body)
    if fmt == "generic-tsv":
        body = "user_id\titem_id\ttimestamp\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
        return "generic", _write(d / "i.tsv", body)
    if fmt == "movielens":
        body = "userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},4.0,{t}\n" for u, i, t in rows
        )
        return "movielens", _write(d / "ratings.csv", body)
    if fmt == "amazon2018":
        return "amazon2018", _write(
            d / "Cat.csv", "".join(f"{i},{u},5.0,{t}\n" for u, i, t in rows)
        )
    if fmt == "amazon2014":
        # The timestamp text goes in as a raw JSON value (a number, NaN, a string...).
        body = "".join(
            f'{{"reviewerID": "{u}", "asin": "{i}", "unixReviewTime": {t}}}\n' for u, i, t in rows
        )
        return "amazon2014", _write(d / "reviews_Cat_5.json", body)
    if fmt == "atomic":
        body = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
            f"{u}\t{i}\t1\t{t}\n" for u, i, t in rows
        )
        return "atomic", _write(d / "D.inter", body)
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", TS_FORMATS)
def test_timestamps_exact_order(tmp_path: Path, fmt: str) -> None:
    reader, path = write_timestamped(fmt, tmp_path, _TS_ROWS)
    raw = read_dataset(reader, path)
    assert raw.time is not None and raw.time.dtype == np.int64
    assert _sequences(raw) == _TS_ORDER
    seq = build_sequences(raw)  # the protocol's own (stable) sort agrees
    ids = raw.item_ids[seq.item_index[seq.item - 1]].tolist()
    assert ids == _TS_ORDER["u"] + _TS_ORDER["v"]


@pytest.mark.parametrize("fmt", [f for f in TS_FORMATS if f != "amazon2014"])
def test_timestamps_iso_8601(tmp_path: Path, fmt: str) -> None:
    rows = [
        ("u", "a", "2018-01-02"),
        ("u", "b", "2018-01-01T23:59:59.5"),
        ("u", "c", "2018-01-01 23:59:59.25"),
        ("u", "d", "1969-12-31T00:00"),
        ("u", "e", "1500-06-01T12:00:00"),  # outside int64 nanoseconds: still ordered
        ("u", "f", "2018-01-01T23:59:59.500000000"),  # equal to b: file order
    ]
    reader, path = write_timestamped(fmt, tmp_path, rows)
    assert _sequences(read_dataset(reader, path)) == {"u": ["e", "d", "c", "b", "f", "a"]}
    zoned = [
        ("u", "a", "2018-01-01T10:00:00+01:00"),  # 09:00 UTC
        ("u", "b", "2018-01-01T09:30:00Z"),
        ("u", "c", "2018-01-01T08:45:00-00:30"),  # 09:15 UTC
    ]
    reader, path = write_timestamped(fmt, tmp_path, zoned)
    assert _sequences(read_dataset(reader, path)) == {"u": ["a", "c", "b"]}


_BAD_TS = [
    ("9223372036854775808", "out of range"),
    ("-9223372036854775809", "out of range"),
    ("1e400", "out of range"),
    ("NaN", "not a finite number"),
    ("Infinity", "not a finite number"),
    ("soon", "is not a number"),
]


@pytest.mark.parametrize("fmt", TS_FORMATS)
@pytest.mark.parametrize(("value", "problem"), _BAD_TS)
def test_timestamps_rejected_with_line(tmp_path: Path, fmt: str, value: str, problem: str) -> None:
    if fmt == "amazon2014" and value == "soon":
        value = '"soon"'
    rows = [("u", "a", "1.5"), ("u", "b", "2"), ("u", "c", value), ("u", "d", "3")]
    reader, path = write_timestamped(fmt, tmp_path, rows)
    with pytest.raises(DataFormatError) as e:
        read_dataset(reader, path)
    headerless = fmt in ("amazon2018", "amazon2014", "generic-parquet")
    assert e.value.path == str(path) and e.value.line == (3 if headerless else 4)
    assert problem in e.value.problem


def test_timestamps_iso_errors(tmp_path: Path) -> None:
    cases = [
        ("2018-02-30", 3, "not a valid date/time"),
        ("1514764800", 3, "is not an ISO-8601 date/time"),
        ("2018-01-01T10:00:00+02:00", 3, "has a UTC offset"),
        ("2018-01-01T10:00:00.1234567891", 3, "is not an ISO-8601 date/time"),
    ]
    for value, line, problem in cases:
        path = _write(
            tmp_path / "i.csv", f"user_id,item_id,timestamp\nu,a,2018-01-01\nu,b,{value}\n"
        )
        with pytest.raises(DataFormatError) as e:
            read_dataset("generic", path)
        assert (e.value.path, e.value.line) == (str(path), line)
        assert problem in e.value.problem, value


def test_decimal_timestamps_leave_one_out(tmp_path: Path) -> None:
    """The report's case: the latest interaction (0.9) is the test target, not the last
    line; flooring used to make all three equal and keep file order."""
    inter = _write(
        tmp_path / "i.csv", "user_id,item_id,timestamp\nu,a,0.9\nu,b,0.5\nu,c,0.1\nw,x,1\n"
    )
    prepare(PrepareConfig(format="generic", input=inter, out=tmp_path / "p", neg_eval=1))
    ds = load_prepared(tmp_path / "p")
    u = ds.user_original_id.tolist().index("u")
    test_row = ds.test.user.tolist().index(u)
    assert ds.item_original_id[int(ds.test.candidates[test_row, 0])] == "a"
    assert ds.item_original_id[int(ds.valid.candidates[0, 0])] == "b"


def test_parquet_typed_timestamps(tmp_path: Path) -> None:
    from decimal import Decimal

    users, items = ["u"] * 4, ["a", "b", "c", "d"]
    expect = {"u": ["d", "c", "b", "a"]}
    p = tmp_path / "i.parquet"
    columns: list[pa.Array] = [
        pa.array([0.9, 0.5, 0.1, -3.0]),
        pa.array([0.9, 0.5, 0.1, -3.0], pa.float32()),
        pa.array([9, 5, 1, -(2**63)], pa.int64()),
        pa.array([9, 5, 1, 0], pa.uint64()),
        pa.array(
            [
                Decimal("9007199254740993.0"),
                Decimal("9007199254740992.5"),
                Decimal("0.1"),
                Decimal("-3.0"),
            ],
            pa.decimal128(20, 1),
        ),
        pa.array([3_000_000, 2_000_000, 1_000_000, -1], pa.timestamp("ns")),
        pa.array([3000, 2000, 1000, -1], pa.timestamp("ms", "UTC")),
        pa.array([3, 2, 1, -400_000], pa.date32()),
        pa.array(["0.9", "0.5", "0.1", "-3"]),
    ]
    for ts in columns:
        pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": ts}), p)
        assert _sequences(read_dataset("generic", p)) == expect, ts.type
    bad = [
        (pa.array([1.0, float("nan"), 2.0, 3.0]), "not a finite number"),
        (pa.array([1.0, 1e19, 2.0, 3.0]), "out of range"),
        (pa.array([1, 2**63, 2, 3], pa.uint64()), "out of range"),
        (pa.array(["1", "soon", "2", "3"]), "is not a number"),
    ]
    for ts, problem in bad:
        pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": ts}), p)
        with pytest.raises(DataFormatError) as e:
            read_dataset("generic", p)
        assert (e.value.path, e.value.line) == (str(p), 2) and problem in e.value.problem
        assert f"{p}, row 2:" in str(e.value)
    pq.write_table(
        pa.table({"user_id": users, "item_id": items, "timestamp": pa.array([True] * 4)}), p
    )
    with pytest.raises(DataFormatError, match="has type bool"):
        read_dataset("generic", p)


# ------------------------------------------------------------------------- edge cases


def test_control_character_in_id_rejected(tmp_path: Path) -> None:
    """numpy str arrays drop trailing NULs: "u\\0" and "u" became two users stored as "u"."""
    path = _write(tmp_path / "i.csv", "user_id,item_id\nu,a\nu\x00,b\n")
    with pytest.raises(DataFormatError) as e:
        read_dataset("generic", path)
    assert (e.value.path, e.value.line) == (str(path), 3)
    assert "'u\\x00' contains control character U+0000" in e.value.problem
    reviews = _write(
        tmp_path / "r.json",
        '{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n'
        '{"reviewerID": "u\\u0007", "asin": "b", "unixReviewTime": 2}\n',
    )
    with pytest.raises(DataFormatError, match=r"r\.json, line 2: reviewerID: .* U\+0007"):
        read_dataset("amazon2014", reviews)


@pytest.mark.parametrize("fmt", ["generic-csv", "movielens", "amazon2018", "atomic"])
def test_cr_only_line_endings(tmp_path: Path, fmt: str) -> None:
    """Classic-Mac CR-only files read like LF files (pyarrow splits on a lone CR too);
    they used to fail with a raw ``_csv.Error`` on the header."""
    rows = [("u", "a", "3"), ("u", "b", "1"), ("v", "cc", "2")]
    reader, path = write_timestamped(fmt, tmp_path, rows)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    assert _sequences(read_dataset(reader, path)) == {"u": ["b", "a"], "v": ["cc"]}
    # Errors name the same line as in the LF file.
    path.write_bytes(path.read_bytes().replace(b"cc", b"c\x00c"))
    with pytest.raises(DataFormatError) as e:
        read_dataset(reader, path)
    assert (e.value.path, e.value.line) == (str(path), 3 if fmt == "amazon2018" else 4)


def test_cr_only_atomic_sequences_and_index(tmp_path: Path) -> None:
    d = _atomic(tmp_path, "0\t0\t1\n", "0\t0 1\t2\n", "0\t0 1 2\t3\n")
    for f in d.iterdir():
        f.write_bytes(f.read_bytes().replace(b"\n", b"\r"))
    assert _sequences(read_dataset("atomic", d)) == {"0": ["A", "B", "C", "D"]}


def test_bad_utf8_reported_on_its_line(tmp_path: Path) -> None:
    """A text decoder reads ahead in blocks; the error used to name line 1."""
    good = [json.dumps({"item_id": f"i{k}", "title": "x" * 50}) for k in range(8)]
    data = ("\n".join(good) + "\n").encode() + b'{"item_id": "i8", "title": "\xff"}\n'
    items = tmp_path / "items.jsonl"
    items.write_bytes(data + b'{"item_id": "i9"}\n')
    inter = _write(tmp_path / "i.csv", "user_id,item_id\nu,i0\n")
    with pytest.raises(DataFormatError) as e:
        read_dataset("generic", inter, items)
    assert (e.value.path, e.value.line) == (str(items), 9) and "invalid UTF-8" in e.value.problem
    # The same for the atomic NAME.items.jsonl and amazon meta files.
    d = _atomic(tmp_path, "0\t0\t1\n", "0\t0 1\t2\n", "0\t0 1 2\t3\n")
    (d / "D.items.jsonl").write_bytes(data.replace(b'"item_id"', b'"asin"'))
    with pytest.raises(DataFormatError, match=r"D\.items\.jsonl, line 9: invalid UTF-8"):
        read_dataset("atomic", d)


def test_atomic_header_only_files(tmp_path: Path) -> None:
    d = _atomic(tmp_path, "", "", "")
    with pytest.raises(DataFormatError) as e:
        read_dataset("atomic", d)
    assert e.value.path == str(d / "D.train.inter") and "no interactions" in e.value.problem
    _atomic(tmp_path, "0\t0\t1\n", "", "0\t0 1 2\t3\n")
    with pytest.raises(DataFormatError, match=r"D\.valid\.inter: no interactions"):
        read_dataset("atomic", d)
    # prepare used to fail deep in negative sampling with "high <= 0" naming no file.
    _atomic(tmp_path, "", "", "")
    with pytest.raises(DataFormatError, match=r"D\.train\.inter: no interactions"):
        prepare(PrepareConfig(format="atomic", input=d, out=tmp_path / "p"))


def test_atomic_index_duplicates_blame_index_file(tmp_path: Path) -> None:
    d = _atomic(tmp_path, "0\t0\t1\n", "0\t0 1\t2\n", "0\t0 1 2\t3\n")
    _write(d / "D.item2index", "A\t0\nB\t0\nC\t2\nD\t3\n")
    with pytest.raises(DataFormatError) as e:
        read_dataset("atomic", d)
    assert (e.value.path, e.value.line) == (str(d / "D.item2index"), 2)
    assert "duplicate index 0 (first on line 1)" in e.value.problem
    _write(d / "D.item2index", "A\t0\nB\t1\nC\t2\nB\t3\n")
    with pytest.raises(DataFormatError, match=r"D\.item2index, line 4: duplicate id 'B'"):
        read_dataset("atomic", d)
    _write(d / "D.item2index", "A\t0\nB\t1_0\nC\t2\nD\t3\n")
    with pytest.raises(DataFormatError, match=r"D\.item2index, line 2: index '1_0' is not"):
        read_dataset("atomic", d)


def test_atomic_single_inter_file(tmp_path: Path) -> None:
    """RecBole's per-interaction NAME.inter (no split files), with titles from NAME.text."""
    _write(
        tmp_path / "ml.inter",
        'user_id:token\titem_id:token\ttimestamp:float\n1\t"m1\t5.5\n1\tm2\t2.25\n2\tm2\t1\n',
    )
    _write(tmp_path / "ml.text", 'item_id:token\ttext:token_seq\n"m1\tThe "Best" film\n')
    for target in (tmp_path, tmp_path / "ml.inter", tmp_path / "ml"):
        raw = read_dataset("atomic", target)
        assert _sequences(raw) == {"1": ["m2", '"m1'], "2": ["m2"]}
        assert raw.titles == ['The "Best" film', ""]
