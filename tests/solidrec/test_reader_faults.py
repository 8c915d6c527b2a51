"""Malformed-input corpus for every reader format, and the pyarrow abort regression.

Each corpus case is a small, otherwise valid dataset with one defect (truncated line,
wrong column count, bad encoding, empty file, header only, missing column, NUL, CR-only
line endings, bad timestamp, ...). Reading it must raise ``DataFormatError`` naming the
file and, where there is one, the line: never a crash, a library traceback, or a
silently wrong result. Each format's undamaged baseline is checked to read cleanly, so a
case cannot pass because its baseline was already broken.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from solidrec.data import DataFormatError
from solidrec.data.readers import read_dataset

ANY = -1  # the line is not asserted (where a truncated gzip stream happens to end)
BAD = "\u2603BAD"  # stands for the undecodable byte 0xff until the file is encoded


def _bytes(text: str) -> bytes:
    return text.encode().replace(BAD.encode(), b"\xff")


@dataclass(frozen=True)
class Case:
    id: str
    fmt: str
    files: dict[str, bytes]
    bad: str  # the file the error must name
    line: int | None  # the line (Parquet: row) it must name, None for none, ANY
    input: str = "."
    items: str | None = None
    parquet: dict[str, pa.Table] = field(default_factory=dict)


def _rows(rows: list[list[str]], sep: str) -> list[bytes]:
    return [_bytes(sep.join(r)) + b"\n" for r in rows]


def _delimited_cases(
    name: str,
    fmt: str,
    target: str,
    header: list[str] | None,
    rows: list[list[str]],
    *,
    sep: str = ",",
    ts: int | None = None,
    others: dict[str, bytes] | None = None,
    input: str = ".",
    items: str | None = None,
    quoting: bool = True,
) -> tuple[list[Case], dict[str, bytes]]:
    """Defect variants of one delimited file ``target`` (row 1 is the damaged row)."""
    others = others or {}
    head = [sep.join(header).encode() + b"\n"] if header else []
    line = 3 if header else 2  # the line of row 1

    def case(defect: str, data: bytes, at: int | None = line) -> Case:
        return Case(f"{name}-{defect}", fmt, {**others, target: data}, target, at, input, items)

    good = _rows(rows, sep)
    first = rows[1][0]

    def with_row1(row: list[str]) -> bytes:
        return b"".join([*head, good[0], *_rows([row], sep), *good[2:]])

    out = [
        case("truncated-line", b"".join([*head, good[0], sep.join(rows[1][:-1]).encode()])),
        case("extra-field", with_row1([*rows[1], "x"])),
        case("bad-utf8", with_row1([first + BAD, *rows[1][1:]])),
        case("empty-file", b"", None),
        case("nul-in-id", with_row1([first + "\x00", *rows[1][1:]])),
        case("control-char-in-id", with_row1([first + "\x1b", *rows[1][1:]])),
        case("blank-line", b"".join([*head, good[0], b"\n", *good[1:]])),
        case(
            "cr-only-extra-field",
            with_row1([*rows[1], "x"]).replace(b"\n", b"\r"),
        ),
        case("crlf-extra-field", with_row1([*rows[1], "x"]).replace(b"\n", b"\r\n")),
    ]
    if header:
        out += [
            case("header-only", head[0], None),
            case("missing-column", b"".join([sep.join(header[1:]).encode() + b"\n", *good]), 1),
            case(
                "duplicate-column",
                b"".join([sep.join([*header, header[0]]).encode() + b"\n", *good]),
                1,
            ),
        ]
    else:
        out.append(case("only-a-blank-line", b"\n", 1))
    if quoting:
        out.append(case("unterminated-quote", with_row1(['"' + first, *rows[1][1:]])))
    if ts is not None:
        for defect, value in (
            ("ts-text", "soon"),
            ("ts-empty", ""),
            ("ts-beyond-int64", "9223372036854775808"),
            ("ts-huge-decimal", "1e400"),
            ("ts-nan", "nan"),
            ("ts-inf", "-inf"),
            ("ts-mixed-iso", "2018-01-01"),
        ):
            row = list(rows[1])
            row[ts] = value
            out.append(case(defect, with_row1(row)))
    return out, {**others, target: b"".join([*head, *good])}


def _json_cases(
    name: str,
    fmt: str,
    target: str,
    objs: list[str],
    *,
    others: dict[str, bytes] | None = None,
    input: str = ".",
    items: str | None = None,
    extra: tuple[tuple[str, str, int | None], ...] = (),
) -> tuple[list[Case], dict[str, bytes]]:
    """Defect variants of one JSON-lines file (line 2 is the damaged one)."""
    others = others or {}
    good = [o.encode() + b"\n" for o in objs]

    def case(defect: str, data: bytes, at: int | None = 2) -> Case:
        return Case(f"{name}-{defect}", fmt, {**others, target: data}, target, at, input, items)

    def line2(text: str) -> bytes:
        return b"".join([good[0], _bytes(text) + b"\n", *good[2:]])

    out = [
        case("truncated-line", good[0] + good[1][: len(good[1]) // 2]),
        case("bad-utf8", line2(objs[1].replace('"', '"' + BAD, 1))),
        case("empty-file", b"", None),
        case("blank-lines-only", b"\n \n\r\n", None),
        case("not-an-object", line2("[1, 2]")),
        case("raw-nul-in-string", line2(objs[1].replace('"', '"\x00', 2))),
        case(
            "cr-only-truncated-line",
            (good[0] + good[1][:-5] + b"\n" + good[2]).replace(b"\n", b"\r"),
        ),
    ]
    out += [case(defect, line2(text), at) for defect, text, at in extra]
    return out, {**others, target: b"".join(good)}


def _corpus() -> tuple[list[Case], list[Case]]:
    cases: list[Case] = []
    baselines: list[Case] = []

    def add(
        pair: tuple[list[Case], dict[str, bytes]], fmt: str, name: str, **kw: str | None
    ) -> None:
        cs, data = pair
        cases.extend(cs)
        baselines.append(Case(f"{name}-baseline", fmt, data, "", None, **kw))  # type: ignore[arg-type]

    inter = [["u", "a", "1"], ["u", "b", "2.5"], ["v", "a", "-3"]]
    gen_csv = b"user_id,item_id\nu,a\nu,b\n"
    add(
        _delimited_cases(
            "generic-csv",
            "generic",
            "i.csv",
            ["user_id", "item_id", "timestamp"],
            inter,
            ts=2,
            input="i.csv",
        ),
        "generic",
        "generic-csv",
        input="i.csv",
    )
    add(
        _delimited_cases(
            "generic-tsv",
            "generic",
            "i.tsv",
            ["user_id", "item_id", "timestamp"],
            inter,
            sep="\t",
            ts=2,
            input="i.tsv",
        ),
        "generic",
        "generic-tsv",
        input="i.tsv",
    )
    add(
        _delimited_cases(
            "generic-items-csv",
            "generic",
            "items.csv",
            ["item_id", "title", "categories"],
            [["a", "A", "X|Y"], ["b", "B", "X"], ["c", "C", ""]],
            others={"i.csv": gen_csv},
            input="i.csv",
            items="items.csv",
        ),
        "generic",
        "generic-items-csv",
        input="i.csv",
        items="items.csv",
    )
    ml_movies = b"movieId,title,genres\n1,One,Drama\n2,Two,Comedy|Drama\n"
    ml_ratings = [["1", "1", "4.0", "10"], ["1", "2", "3.5", "20.5"], ["2", "1", "5.0", "-5"]]
    add(
        _delimited_cases(
            "movielens-ratings",
            "movielens",
            "ratings.csv",
            ["userId", "movieId", "rating", "timestamp"],
            ml_ratings,
            ts=3,
            others={"movies.csv": ml_movies},
        ),
        "movielens",
        "movielens-ratings",
    )
    ml_good = b"userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.5,20\n"
    add(
        _delimited_cases(
            "movielens-movies",
            "movielens",
            "movies.csv",
            ["movieId", "title", "genres"],
            [["1", "One", "Drama"], ["2", "Two", "Comedy|Drama"], ["3", "Three", ""]],
            others={"ratings.csv": ml_good},
        ),
        "movielens",
        "movielens-movies",
    )
    az_rows = [
        ["I1", "U1", "5.0", "1500"],
        ["I2", "U1", "4.0", "1400.5"],
        ["I1", "U2", "3.0", "-1"],
    ]
    meta = '{"asin": "I1", "title": "One", "category": ["Cat", "Sub"]}'
    add(
        _delimited_cases(
            "amazon2018",
            "amazon2018",
            "Cat.csv",
            None,
            az_rows,
            ts=3,
            others={"meta.json": meta.encode() + b"\n"},
            input="Cat.csv",
            items="meta.json",
        ),
        "amazon2018",
        "amazon2018",
        input="Cat.csv",
        items="meta.json",
    )
    add(
        _json_cases(
            "amazon2018-meta",
            "amazon2018",
            "meta.json",
            [meta, '{"asin": "I2", "title": "Two", "category": []}', '{"asin": "I9"}'],
            others={"Cat.csv": b"I1,U1,5.0,1\nI2,U1,4.0,2\n"},
            input="Cat.csv",
            items="meta.json",
            extra=(
                ("missing-asin", '{"title": "x"}', 2),
                ("bad-category", '{"asin": "I2", "category": [1, 2]}', 2),
            ),
        ),
        "amazon2018",
        "amazon2018-meta",
        input="Cat.csv",
        items="meta.json",
    )
    r = '{{"reviewerID": "{}", "asin": "{}", "unixReviewTime": {}}}'
    reviews = [r.format("R1", "A", 20), r.format("R1", "B", 10.5), r.format("R2", "A", -15)]
    add(
        _json_cases(
            "amazon2014",
            "amazon2014",
            "reviews.json",
            reviews,
            input="reviews.json",
            extra=(
                ("missing-key", '{"reviewerID": "R1", "asin": "B"}', 2),
                ("nul-in-id", r.format("R1\\u0000", "B", 1), 2),
                ("empty-id", r.format("", "B", 1), 2),
                ("ts-text", r.format("R1", "B", '"10"'), 2),
                ("ts-bool", r.format("R1", "B", "true"), 2),
                ("ts-nan", r.format("R1", "B", "NaN"), 2),
                ("ts-infinity", r.format("R1", "B", "-Infinity"), 2),
                ("ts-beyond-int64", r.format("R1", "B", "9223372036854775808"), 2),
                ("ts-huge-decimal", r.format("R1", "B", "1e400"), 2),
                ("ts-too-many-digits", r.format("R1", "B", "9" * 5000), 2),
            ),
        ),
        "amazon2014",
        "amazon2014",
        input="reviews.json",
    )
    add(
        _json_cases(
            "amazon2014-meta",
            "amazon2014",
            "meta.json",
            [
                "{'asin': 'A', 'title': 'Alpha', 'categories': [['Cat', 'X']]}",
                '{"asin": "B"}',
                "{'asin': 'C'}",
            ],
            others={"reviews.json": (reviews[0] + "\n" + reviews[1] + "\n").encode()},
            input="reviews.json",
            items="meta.json",
            extra=(
                ("bad-literal", "{'asin': 'B', 'title': }", 2),
                ("deep-nesting", "[" * 100000, 2),
            ),
        ),
        "amazon2014",
        "amazon2014-meta",
        input="reviews.json",
        items="meta.json",
    )
    add(
        _json_cases(
            "generic-items-jsonl",
            "generic",
            "items.jsonl",
            [
                '{"item_id": "a", "title": "A", "categories": ["X", "Y"]}',
                '{"item_id": "b", "title": "B"}',
                '{"item_id": "c"}',
            ],
            others={"i.csv": gen_csv},
            input="i.csv",
            items="items.jsonl",
            extra=(
                ("missing-item-id", '{"title": "B"}', 2),
                ("duplicate-item-id", '{"item_id": "a"}', 2),
                ("nul-in-id", '{"item_id": "b\\u0000"}', 2),
                ("bad-categories", '{"item_id": "b", "categories": 5}', 2),
            ),
        ),
        "generic",
        "generic-items-jsonl",
        input="i.csv",
        items="items.jsonl",
    )

    # atomic: UniSRec sequence files, their index files and item text
    head = "user_id:token\titem_id_list:token_seq\titem_id:token"
    seq = {
        "D.train.inter": f"{head}\n0\t0 1\t2\n0\t0\t1\n".encode(),
        "D.valid.inter": f"{head}\n0\t0 1 2\t3\n".encode(),
        "D.test.inter": f"{head}\n0\t0 1 2 3\t0\n".encode(),
        "D.item2index": b"A\t0\nB\t1\nC\t2\nD\t3\n",
        "D.user2index": b"alice\t0\n",
    }
    add(
        _delimited_cases(
            "atomic-train",
            "atomic",
            "D.train.inter",
            head.split("\t"),
            [["0", "0 1", "2"], ["0", "0", "1"], ["1", "0", "1"]],
            sep="\t",
            others={k: v for k, v in seq.items() if k != "D.train.inter"},
            quoting=False,
        ),
        "atomic",
        "atomic-train",
    )
    baselines[-1] = Case("atomic-train-baseline", "atomic", seq, "", None)
    add(
        _delimited_cases(
            "atomic-item2index",
            "atomic",
            "D.item2index",
            None,
            [["A", "0"], ["B", "1"], ["C", "2"], ["D", "3"]],
            sep="\t",
            others={k: v for k, v in seq.items() if k != "D.item2index"},
            quoting=False,
        ),
        "atomic",
        "atomic-item2index",
    )
    for defect, data, at in (
        ("duplicate-index", b"A\t0\nB\t0\nC\t2\nD\t3\n", 2),
        ("duplicate-id", b"A\t0\nA\t1\nC\t2\nD\t3\n", 2),
        ("non-integer-index", b"A\t0\nB\tone\nC\t2\nD\t3\n", 2),
        ("negative-index", b"A\t0\nB\t-1\nC\t2\nD\t3\n", 2),
    ):
        cases.append(
            Case(
                f"atomic-item2index-{defect}",
                "atomic",
                {**seq, "D.item2index": data},
                "D.item2index",
                at,
            )
        )
    cases.append(
        Case(
            "atomic-user2index-duplicate-index",
            "atomic",
            {**seq, "D.user2index": b"alice\t0\nbob\t0\n"},
            "D.user2index",
            2,
        )
    )
    cases.append(
        Case(
            "atomic-valid-header-only",
            "atomic",
            {**seq, "D.valid.inter": f"{head}\n".encode()},
            "D.valid.inter",
            None,
        )
    )
    cases.append(
        Case("atomic-test-empty-file", "atomic", {**seq, "D.test.inter": b""}, "D.test.inter", None)
    )
    add(
        _json_cases(
            "atomic-items-jsonl",
            "atomic",
            "D.items.jsonl",
            ['{"asin": "A", "title": "A"}', '{"asin": "B", "title": "B"}', '{"asin": "C"}'],
            others=seq,
            extra=(("missing-asin", '{"title": "B"}', 2), ("duplicate-asin", '{"asin": "A"}', 2)),
        ),
        "atomic",
        "atomic-items-jsonl",
    )
    add(
        _delimited_cases(
            "atomic-text",
            "atomic",
            "D.text",
            ["item_id:token", "text:token_seq"],
            [["A", "Alpha"], ["B", "Beta"], ["C", "Gamma"]],
            sep="\t",
            others=seq,
            quoting=False,
        ),
        "atomic",
        "atomic-text",
    )
    # atomic: RecBole's single per-interaction file with timestamp:float
    add(
        _delimited_cases(
            "atomic-inter",
            "atomic",
            "ml.inter",
            ["user_id:token", "item_id:token", "timestamp:float"],
            [["1", "m1", "5.5"], ["1", "m2", "2.25"], ["2", "m2", "-1"]],
            sep="\t",
            ts=2,
            quoting=False,
        ),
        "atomic",
        "atomic-inter",
    )

    # gzip: truncated and bogus streams
    rnd = random.Random(0)
    big = "".join(
        f"I{rnd.randrange(10**6)},U{rnd.randrange(10**6)},5.0,{rnd.randrange(10**9)}\n"
        for _ in range(4000)
    ).encode()
    cut = gzip.compress(big)
    cut = cut[: len(cut) // 2]
    big_json = "".join(
        r.format(f"R{rnd.randrange(10**6)}", f"A{rnd.randrange(10**6)}", rnd.randrange(10**9))
        + "\n"
        for _ in range(4000)
    ).encode()
    cut_json = gzip.compress(big_json)
    cut_json = cut_json[: len(cut_json) // 2]
    cases += [
        Case(
            "amazon2018-gz-truncated",
            "amazon2018",
            {"Cat.csv.gz": cut},
            "Cat.csv.gz",
            ANY,
            "Cat.csv.gz",
        ),
        Case(
            "amazon2018-gz-not-gzip",
            "amazon2018",
            {"Cat.csv.gz": b"I1,U1,5.0,1\n"},
            "Cat.csv.gz",
            ANY,
            "Cat.csv.gz",
        ),
        Case(
            "amazon2018-gz-empty-stream",
            "amazon2018",
            {"Cat.csv.gz": gzip.compress(b"")},
            "Cat.csv.gz",
            None,
            "Cat.csv.gz",
        ),
        Case(
            "generic-gz-truncated",
            "generic",
            {"i.csv.gz": gzip.compress(b"user_id,item_id\n") + cut},
            "i.csv.gz",
            ANY,
            "i.csv.gz",
        ),
        Case(
            "amazon2014-gz-truncated",
            "amazon2014",
            {"r.json.gz": cut_json},
            "r.json.gz",
            ANY,
            "r.json.gz",
        ),
        Case(
            "amazon2018-meta-gz-truncated",
            "amazon2018",
            {"Cat.csv": b"I1,U1,5.0,1\n", "meta.json.gz": cut_json},
            "meta.json.gz",
            ANY,
            "Cat.csv",
            "meta.json.gz",
        ),
    ]
    baselines += [
        Case(
            "amazon2018-gz-baseline",
            "amazon2018",
            {"Cat.csv.gz": gzip.compress(big)},
            "",
            None,
            "Cat.csv.gz",
        ),
        Case(
            "amazon2014-gz-baseline",
            "amazon2014",
            {"r.json.gz": gzip.compress(big_json)},
            "",
            None,
            "r.json.gz",
        ),
    ]

    # Parquet
    def pq_case(
        defect: str, table: pa.Table | None, at: int | None, raw: bytes | None = None
    ) -> Case:
        files = {} if raw is None else {"i.parquet": raw}
        tables = {} if table is None else {"i.parquet": table}
        return Case(
            f"parquet-{defect}", "generic", files, "i.parquet", at, "i.parquet", parquet=tables
        )

    def t(**cols: pa.Array | list) -> pa.Table:
        base = {
            "user_id": ["u", "u", "v"],
            "item_id": ["a", "b", "a"],
            "timestamp": [1.5, 2.0, -3.0],
        }
        base.update(cols)
        return pa.table({k: v for k, v in base.items() if v is not None})

    good_pq = t()
    sink = pa.BufferOutputStream()
    pq.write_table(good_pq, sink)
    pq_bytes = sink.getvalue().to_pybytes()
    cases += [
        pq_case("empty-file", None, None, b""),
        pq_case("not-parquet", None, None, b"user_id,item_id\nu,a\n"),
        pq_case("truncated-file", None, None, pq_bytes[: len(pq_bytes) - 40]),
        pq_case("header-only", good_pq.slice(0, 0), None),
        pq_case("missing-column", t(item_id=None), None),
        pq_case("null-id", t(user_id=["u", None, "v"]), 2),
        pq_case("nul-in-id", t(user_id=["u", "u\x00", "v"]), 2),
        pq_case("bad-utf8-id", t(user_id=pa.array([b"u", b"\xff", b"v"], pa.binary())), 2),
        pq_case("list-id", t(user_id=pa.array([[1], [2], [3]])), None),
        pq_case("ts-null", t(timestamp=[1.0, None, 2.0]), 2),
        pq_case("ts-text", t(timestamp=["1", "soon", "2"]), 2),
        pq_case("ts-nan", t(timestamp=[1.0, float("nan"), 2.0]), 2),
        pq_case("ts-inf", t(timestamp=[1.0, float("-inf"), 2.0]), 2),
        pq_case("ts-beyond-int64-float", t(timestamp=[1.0, 1e19, 2.0]), 2),
        pq_case("ts-beyond-int64-uint", t(timestamp=pa.array([1, 2**63, 2], pa.uint64())), 2),
        pq_case(
            "ts-beyond-int64-decimal",
            t(timestamp=pa.array([Decimal(1), Decimal(10**19), Decimal(2)], pa.decimal128(25, 0))),
            2,
        ),
        pq_case("ts-wrong-type", t(timestamp=pa.array([[1], [2], [3]])), None),
    ]
    baselines.append(
        Case(
            "parquet-baseline", "generic", {}, "", None, "i.parquet", parquet={"i.parquet": good_pq}
        )
    )
    return cases, baselines


CASES, BASELINES = _corpus()


def _materialise(case: Case, d: Path) -> None:
    for name, data in case.files.items():
        (d / name).write_bytes(data)
    for name, table in case.parquet.items():
        pq.write_table(table, d / name)


def _read(case: Case, d: Path) -> object:
    return read_dataset(case.fmt, d / case.input, d / case.items if case.items else None)


def test_corpus_size() -> None:
    """The report quotes this count; every format has cases."""
    assert len(CASES) >= 240, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    formats = {c.id.split("-")[0] for c in CASES}
    assert {"generic", "movielens", "amazon2018", "amazon2014", "atomic", "parquet"} <= formats


@pytest.mark.parametrize("case", BASELINES, ids=lambda c: c.id)
def test_baseline_reads(tmp_path: Path, case: Case) -> None:
    _materialise(case, tmp_path)
    _read(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_malformed_input(tmp_path: Path, case: Case) -> None:
    _materialise(case, tmp_path)
    with pytest.raises(DataFormatError) as e:
        _read(case, tmp_path)
    bad = str(tmp_path / case.bad)
    assert e.value.path == bad, str(e.value)
    if case.line != ANY:
        assert e.value.line == case.line, str(e.value)
    assert str(e.value).startswith(bad), str(e.value)
    assert e.value.__cause__ is None or isinstance(e.value.__cause__, DataFormatError)


# ----------------------------------------------------------------- pyarrow abort (#2)

_CHILD = textwrap.dedent(
    """
    import sys
    import torch  # noqa: F401  (the abort needed torch in the process)
    from solidrec.data import DataFormatError
    from solidrec.data.readers import read_dataset
    try:
        read_dataset("amazon2018", sys.argv[1])
    except DataFormatError as e:
        print(e)
        sys.exit(2)
    sys.exit(0)
    """
)


@pytest.mark.slow
def test_malformed_amazon2018_never_aborts(tmp_path: Path) -> None:
    """pyarrow's threaded CSV reader calling a Python ``invalid_row_handler`` ended in
    std::terminate (SIGABRT, exit 134) in about 1 of 5 runs of a process that imported
    torch. The file is large enough (~27 MB) for pyarrow to parse in parallel blocks."""
    path = tmp_path / "Cat.csv"
    rnd = random.Random(1)
    with open(path, "w") as f:
        for i in range(1_000_000):
            f.write(f"I{rnd.randrange(5000)},U{rnd.randrange(50000)},5.0,{1500000000 + i}\n")
            if i == 100:
                f.write("Ix,Ux,5.0\n")  # line 102: one field short
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[2] / "python")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)

    def run(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(12)))
    for res in results:
        assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
        assert f"{path}, line 102: expected 4 fields, found 3" in res.stdout
        assert "terminate called" not in res.stderr
