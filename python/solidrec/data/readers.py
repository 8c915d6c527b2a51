"""Readers for the supported input formats; each returns a :class:`RawDataset`.

Formats: ``atomic`` (UniSRec/RecBole ``.inter`` files), ``movielens``
(``ratings.csv`` + ``movies.csv``), ``amazon2018`` (ratings CSV ``item,user,rating,
timestamp`` + meta JSON lines), ``amazon2014`` (5-core reviews JSON lines + meta) and
``generic`` (see docs/DATA.md). Malformed input raises :class:`DataFormatError`.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from solidrec.data.errors import DataFormatError
from solidrec.data.raw import CategoryPath, RawDataset

FORMATS = ("atomic", "movielens", "amazon2018", "amazon2014", "generic")

# ----------------------------------------------------------------------------- helpers


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8", newline="")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    if path.is_dir():
        raise DataFormatError(path, None, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataFormatError(path, None, "empty file")


def _binary_lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from f


def _locate_bad_row(
    path: Path, delimiter: str, ncols: int, first_line: int
) -> DataFormatError | None:
    """Slow path, only run after the fast parser failed: find the first bad line."""
    for lineno, raw in enumerate(_binary_lines(path), start=1):
        if lineno < first_line:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return DataFormatError(path, lineno, f"invalid UTF-8 ({e.reason})")
        text = text.rstrip("\r\n")
        if not text.strip():
            return DataFormatError(path, lineno, "empty line")
        try:
            fields = next(csv.reader([text], delimiter=delimiter, strict=True))
        except csv.Error as e:
            return DataFormatError(path, lineno, f"cannot parse line ({e})")
        if len(fields) != ncols:
            return DataFormatError(path, lineno, f"expected {ncols} fields, found {len(fields)}")
    return None


def _sniff_delimiter(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    if name.endswith((".tsv", ".tab", ".inter")):
        return "\t"
    if name.endswith(".csv"):
        return ","
    with _open_text(path) as f:
        first = f.readline()
    return "\t" if "\t" in first else ","


def read_delimited(
    path: Path,
    *,
    required: list[str],
    optional: tuple[str, ...] = (),
    delimiter: str | None = None,
    names: list[str] | None = None,
) -> tuple[dict[str, pa.Array], int]:
    """Read a CSV/TSV (optionally .gz) into string columns.

    With ``names`` the file has no header and ``names`` are its columns. Returns the
    columns and the line number of the first data row (row ``i`` is line ``i + that``).
    """
    _check_exists(path)
    delimiter = delimiter or _sniff_delimiter(path)
    if names is None:
        first_raw = next(_binary_lines(path), b"")
        try:
            first = first_raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFormatError(path, 1, f"invalid UTF-8 ({e.reason})") from None
        first = first.lstrip("\ufeff").rstrip("\r\n")
        if not first.strip():
            raise DataFormatError(path, 1, "empty header line")
        cols = [c.strip() for c in next(csv.reader([first], delimiter=delimiter))]
        seen: set[str] = set()
        for c in cols:
            if c in seen:
                raise DataFormatError(path, 1, f"duplicate column {c!r} in header")
            seen.add(c)
        missing = [c for c in required if c not in seen]
        if missing:
            raise DataFormatError(path, 1, f"missing column(s) {missing} (header has {cols})")
        skip, first_data = 1, 2
    else:
        cols, skip, first_data = list(names), 0, 1
    wanted = [c for c in (*required, *optional) if c in cols]
    bad_rows: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad_rows.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=cols, skip_rows=skip),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, ignore_empty_lines=False, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in cols},
                include_columns=wanted,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        err = _locate_bad_row(path, delimiter, len(cols), first_data)
        raise (err or DataFormatError(path, None, f"cannot parse: {e}")) from None
    if bad_rows:
        err = _locate_bad_row(path, delimiter, len(cols), first_data)
        row = bad_rows[0]
        raise err or DataFormatError(
            path, row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}"
        )
    if table.num_rows == 0:
        raise DataFormatError(path, None, "no data rows")
    out = {c: table.column(c).combine_chunks() for c in wanted}
    for c in required:
        empty = pc.equal(pc.utf8_trim_whitespace(out[c]), "")
        if pc.any(empty).as_py():
            i = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
            blank = all(not str(out[w][i].as_py()).strip() for w in wanted)
            raise DataFormatError(
                path, i + first_data, "empty line" if blank else f"empty value in column {c!r}"
            )
    return out, first_data


def _to_int64(path: Path, name: str, arr: pa.Array, first: int, unit: str = "line") -> np.ndarray:
    try:
        return pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        f = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        if np.isfinite(f).all():
            return np.floor(f).astype(np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for i, v in enumerate(arr.to_pylist()):
        try:
            if not np.isfinite(float(v)):
                raise ValueError
        except (TypeError, ValueError):
            raise DataFormatError(
                path, i + first, f"column {name!r}: {v!r} is not a number", unit
            ) from None
    raise DataFormatError(path, None, f"column {name!r} is not numeric")


def factorize(values: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Codes (int64, first-appearance order) and the unique values (str array)."""
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
    if arr.type != pa.string():
        arr = pc.cast(arr, pa.string())
    enc = pc.dictionary_encode(arr)
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    uniques = np.asarray(enc.dictionary.to_numpy(zero_copy_only=False), dtype=str)
    return codes, uniques


def iter_json_lines(
    path: Path, *, literal_fallback: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSON-lines file (.gz ok).

    With ``literal_fallback`` a line that is not JSON may be a Python dict literal (the
    format of the Amazon 2014 meta files).
    """
    _check_exists(path)
    f = _open_text(path)
    with f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise DataFormatError(path, lineno + 1, f"invalid UTF-8 ({e.reason})") from None
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if not literal_fallback:
                    raise DataFormatError(path, lineno, f"invalid JSON ({e.msg})") from None
                try:
                    obj = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DataFormatError(path, lineno, f"invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(path, lineno, "expected a JSON object")
            yield lineno, obj


def parse_categories(value: Any, path: Path, line: int) -> tuple[CategoryPath, ...]:
    """Categories: a JSON list (one path, root first), a list of such lists, or a
    ``|``-separated path string. Returns a tuple of paths (empty if none)."""
    if value is None:
        return ()
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return ()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    path, line, f"categories: invalid JSON list ({e.msg})"
                ) from None
        else:
            value = [p.strip() for p in s.split("|")]
    if not isinstance(value, list):
        raise DataFormatError(
            path, line, f"categories: expected a list or string, got {type(value).__name__}"
        )
    if all(isinstance(v, str) for v in value):
        p = tuple(v.strip() for v in value if v.strip())
        return (p,) if p else ()
    if all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value):
        paths = tuple(tuple(x.strip() for x in v if x.strip()) for v in value)
        return tuple(p for p in paths if p)
    raise DataFormatError(path, line, "categories: expected strings or lists of strings")


Meta = dict[str, tuple[str, tuple[CategoryPath, ...]]]


def _align_meta(
    item_ids: np.ndarray, meta: Meta | None
) -> tuple[list[str] | None, list[tuple[CategoryPath, ...]] | None]:
    if meta is None:
        return None, None
    titles: list[str] = []
    cats: list[tuple[CategoryPath, ...]] = []
    for it in item_ids.tolist():
        t, c = meta.get(it, ("", ()))
        titles.append(t)
        cats.append(c)
    return titles, cats


def _text(v: Any) -> str:
    if v is None:
        return ""
    return " ".join(str(v).split())


# ------------------------------------------------------------------------ items files


def read_items_file(path: Path) -> Meta:
    """Generic items file: CSV/TSV with ``item_id[,title][,categories]`` or JSON lines
    with the same keys. Later duplicates of an ``item_id`` are an error."""
    meta: Meta = {}
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        for lineno, obj in iter_json_lines(path):
            if "item_id" not in obj:
                raise DataFormatError(path, lineno, "missing key 'item_id'")
            item = str(obj["item_id"]).strip()
            if not item:
                raise DataFormatError(path, lineno, "empty item_id")
            if item in meta:
                raise DataFormatError(path, lineno, f"duplicate item_id {item!r}")
            meta[item] = (
                _text(obj.get("title")),
                parse_categories(obj.get("categories"), path, lineno),
            )
        return meta
    cols, first = read_delimited(path, required=["item_id"], optional=("title", "categories"))
    items = cols["item_id"].to_pylist()
    titles = cols["title"].to_pylist() if "title" in cols else [""] * len(items)
    cats = cols["categories"].to_pylist() if "categories" in cols else [None] * len(items)
    for i, (item, t, c) in enumerate(zip(items, titles, cats, strict=True)):
        item = item.strip()
        if item in meta:
            raise DataFormatError(path, i + first, f"duplicate item_id {item!r}")
        meta[item] = (_text(t), parse_categories(c, path, i + first))
    return meta


# ---------------------------------------------------------------------------- generic


def _read_parquet(
    path: Path, required: list[str], optional: tuple[str, ...]
) -> dict[str, pa.Array]:
    import pyarrow.parquet as pq

    _check_exists(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError(path, None, f"not a Parquet file ({e})") from None
    names = list(schema.names)
    for c in names:
        if names.count(c) > 1:
            raise DataFormatError(path, None, f"duplicate column {c!r}")
    missing = [c for c in required if c not in names]
    if missing:
        raise DataFormatError(path, None, f"missing column(s) {missing} (columns are {names})")
    wanted = [c for c in (*required, *optional) if c in names]
    table = pq.read_table(path, columns=wanted)
    if table.num_rows == 0:
        raise DataFormatError(path, None, "no data rows")
    out = {c: table.column(c).combine_chunks() for c in wanted}
    for c in wanted:
        nulls = out[c].is_null()
        if pc.any(nulls).as_py():
            i = int(np.flatnonzero(nulls.to_numpy(zero_copy_only=False))[0])
            raise DataFormatError(path, i + 1, f"missing value in column {c!r}", "row")
    for c in required:
        out[c] = pc.cast(out[c], pa.string())
    return out


def read_generic(path: Path, items: Path | None = None) -> RawDataset:
    """Generic interactions ``user_id,item_id[,timestamp]`` (CSV/TSV/Parquet).

    Without a ``timestamp`` column, file order is each user's chronological order.
    """
    path = Path(path)
    required = ["user_id", "item_id"]
    name = path.name.removesuffix(".gz")
    unit = "line"
    if name.endswith((".parquet", ".pq")):
        cols = _read_parquet(path, required, ("timestamp",))
        first, unit = 1, "row"
        ts = cols.get("timestamp")
        if ts is not None and ts.type != pa.string():
            ts = pc.cast(ts, pa.string()) if not pa.types.is_integer(ts.type) else ts
    else:
        cols, first = read_delimited(path, required=required, optional=("timestamp",))
        ts = cols.get("timestamp")
    user, user_ids = factorize(pc.utf8_trim_whitespace(cols["user_id"]))
    item, item_ids = factorize(pc.utf8_trim_whitespace(cols["item_id"]))
    time = None
    if ts is not None:
        time = (
            ts.to_numpy(zero_copy_only=False).astype(np.int64)
            if pa.types.is_integer(ts.type)
            else _to_int64(path, "timestamp", ts, first, unit)
        )
    meta = read_items_file(Path(items)) if items is not None else None
    titles, cats = _align_meta(item_ids, meta)
    inputs = [path] + ([Path(items)] if items is not None else [])
    return RawDataset(user, item, time, user_ids, item_ids, titles, cats, inputs)


# -------------------------------------------------------------------------- movielens


def read_movielens(path: Path, items: Path | None = None) -> RawDataset:
    """MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
    (movieId,title,genres; ``|``-separated genres, each genre one category label)."""
    path = Path(path)
    if path.is_dir():
        path = path / "ratings.csv"
    if items is None and (path.parent / "movies.csv").exists():
        items = path.parent / "movies.csv"
    cols, first = read_delimited(path, required=["userId", "movieId", "timestamp"], delimiter=",")
    user, user_ids = factorize(cols["userId"])
    item, item_ids = factorize(cols["movieId"])
    time = _to_int64(path, "timestamp", cols["timestamp"], first)
    meta: Meta | None = None
    if items is not None:
        items = Path(items)
        mcols, mfirst = read_delimited(
            items, required=["movieId", "title"], optional=("genres",), delimiter=","
        )
        meta = {}
        ids = mcols["movieId"].to_pylist()
        titles = mcols["title"].to_pylist()
        genres = mcols["genres"].to_pylist() if "genres" in mcols else [""] * len(ids)
        for i, (m, t, g) in enumerate(zip(ids, titles, genres, strict=True)):
            if m in meta:
                raise DataFormatError(items, i + mfirst, f"duplicate movieId {m!r}")
            labels = [
                x.strip() for x in g.split("|") if x.strip() and x.strip() != "(no genres listed)"
            ]
            meta[m] = (_text(t), tuple((x,) for x in labels))
    titles_, cats = _align_meta(item_ids, meta)
    inputs = [path] + ([items] if items is not None else [])
    return RawDataset(user, item, time, user_ids, item_ids, titles_, cats, inputs)


# --------------------------------------------------------------------------- amazon


def _read_amazon_meta(path: Path, wanted: set[str], key: str) -> Meta:
    meta: Meta = {}
    for lineno, obj in iter_json_lines(path, literal_fallback=True):
        asin = obj.get("asin")
        if not isinstance(asin, str) or not asin:
            raise DataFormatError(path, lineno, "missing key 'asin'")
        if asin not in wanted or asin in meta:
            continue
        cats = obj.get(key)
        if (
            key == "categories"
            and isinstance(cats, list)
            and cats
            and all(isinstance(c, list) for c in cats)
        ):
            paths = parse_categories(cats, path, lineno)
        else:
            paths = parse_categories(cats if isinstance(cats, list) else None, path, lineno)
        meta[asin] = (_text(obj.get("title")), paths)
    return meta


def read_amazon2018(path: Path, items: Path | None = None) -> RawDataset:
    """Amazon Review Data 2018 ratings CSV (no header: ``item,user,rating,timestamp``,
    optionally .gz) and optional meta JSON lines (``asin``, ``title``, ``category``)."""
    path = Path(path)
    cols, first = read_delimited(
        path,
        required=["item", "user", "timestamp"],
        optional=("rating",),
        delimiter=",",
        names=["item", "user", "rating", "timestamp"],
    )
    user, user_ids = factorize(cols["user"])
    item, item_ids = factorize(cols["item"])
    time = _to_int64(path, "timestamp", cols["timestamp"], first)
    meta = (
        _read_amazon_meta(Path(items), set(item_ids.tolist()), "category")
        if items is not None
        else None
    )
    titles, cats = _align_meta(item_ids, meta)
    inputs = [path] + ([Path(items)] if items is not None else [])
    return RawDataset(user, item, time, user_ids, item_ids, titles, cats, inputs)


def read_amazon2014(path: Path, items: Path | None = None) -> RawDataset:
    """Amazon 2014 (5-core) reviews JSON lines (``reviewerID``, ``asin``,
    ``unixReviewTime``) and optional meta (``asin``, ``title``, ``categories`` as a list
    of paths; JSON or Python-literal lines)."""
    path = Path(path)
    users: list[str] = []
    asins: list[str] = []
    times: list[int] = []
    for lineno, obj in iter_json_lines(path):
        for k in ("reviewerID", "asin", "unixReviewTime"):
            if k not in obj:
                raise DataFormatError(path, lineno, f"missing key {k!r}")
        t = obj["unixReviewTime"]
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise DataFormatError(path, lineno, f"unixReviewTime {t!r} is not a number")
        users.append(str(obj["reviewerID"]))
        asins.append(str(obj["asin"]))
        times.append(int(t))
    if not users:
        raise DataFormatError(path, None, "no data rows")
    user, user_ids = factorize(users)
    item, item_ids = factorize(asins)
    time = np.asarray(times, dtype=np.int64)
    meta = (
        _read_amazon_meta(Path(items), set(item_ids.tolist()), "categories")
        if items is not None
        else None
    )
    titles, cats = _align_meta(item_ids, meta)
    inputs = [path] + ([Path(items)] if items is not None else [])
    return RawDataset(user, item, time, user_ids, item_ids, titles, cats, inputs)


# --------------------------------------------------------------------------- atomic

_ATOMIC_HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")


def _read_index(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise DataFormatError(
                    path, lineno, f"expected 2 tab-separated fields, found {len(parts)}"
                )
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                raise DataFormatError(
                    path, lineno, f"index {parts[1]!r} is not an integer"
                ) from None
    return out


def _read_inter(
    path: Path, item_ok: Callable[[str], bool]
) -> list[tuple[int, str, list[str], str]]:
    _check_exists(path)
    rows: list[tuple[int, str, list[str], str]] = []
    with _open_text(path) as f:
        header = tuple(c.strip() for c in f.readline().lstrip("\ufeff").rstrip("\r\n").split("\t"))
        if len(set(header)) != len(header):
            raise DataFormatError(path, 1, f"duplicate column in header {list(header)}")
        if header != _ATOMIC_HEADER:
            raise DataFormatError(
                path, 1, f"expected header {list(_ATOMIC_HEADER)}, found {list(header)}"
            )
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                raise DataFormatError(
                    path, lineno, f"expected 3 tab-separated fields, found {len(parts)}"
                )
            u, hist, target = parts[0].strip(), parts[1].split(), parts[2].strip()
            if not u or not target:
                raise DataFormatError(path, lineno, "empty user or item token")
            for tok in (*hist, target):
                if not item_ok(tok):
                    raise DataFormatError(path, lineno, f"unknown item id {tok!r}")
            rows.append((lineno, u, hist, target))
    return rows


def _atomic_prefix(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.train.inter"))
        if len(found) != 1:
            raise DataFormatError(
                path, None, f"expected exactly one *.train.inter file, found {len(found)}"
            )
        return found[0].parent / found[0].name.removesuffix(".train.inter")
    name = path.name
    for suffix in (".train.inter", ".valid.inter", ".test.inter"):
        if name.endswith(suffix):
            return path.parent / name.removesuffix(suffix)
    return path


def read_atomic(path: Path, items: Path | None = None) -> RawDataset:
    """UniSRec/RecBole atomic files ``NAME.{train,valid,test}.inter`` (+ ``NAME.item2index``,
    ``NAME.user2index``, ``NAME.items.jsonl`` or ``NAME.text``).

    Each user's sequence is rebuilt as: the history of its shortest (last) train row, the
    train targets from shortest row to longest, the valid target, the test target (users with
    no train row: the valid row's history, the valid and test targets); train rows are
    taken in reverse file order (the files list them longest first). Item tokens are
    indices into ``item2index`` when that file exists.
    """
    prefix = _atomic_prefix(Path(path))
    pfx = str(prefix)
    item2index = (
        _read_index(Path(pfx + ".item2index")) if Path(pfx + ".item2index").exists() else None
    )
    user2index = (
        _read_index(Path(pfx + ".user2index")) if Path(pfx + ".user2index").exists() else None
    )
    if item2index is not None:
        index_to_item = {str(v): k for k, v in item2index.items()}

        def item_ok(tok: str) -> bool:
            return tok in index_to_item
    else:

        def item_ok(tok: str) -> bool:
            return True

    train = _read_inter(Path(pfx + ".train.inter"), item_ok)
    valid = _read_inter(Path(pfx + ".valid.inter"), item_ok)
    test = _read_inter(Path(pfx + ".test.inter"), item_ok)
    train_by_user: dict[str, list[tuple[int, str, list[str], str]]] = {}
    for row in train:
        train_by_user.setdefault(row[1], []).append(row)
    valid_by_user = {}
    for row in valid:
        if row[1] in valid_by_user:
            raise DataFormatError(pfx + ".valid.inter", row[0], f"second row for user {row[1]!r}")
        valid_by_user[row[1]] = row
    test_by_user = {}
    for row in test:
        if row[1] in test_by_user:
            raise DataFormatError(pfx + ".test.inter", row[0], f"second row for user {row[1]!r}")
        if row[1] not in valid_by_user:
            raise DataFormatError(pfx + ".test.inter", row[0], f"user {row[1]!r} has no valid row")
        test_by_user[row[1]] = row
    for u, row in valid_by_user.items():
        if u not in test_by_user:
            raise DataFormatError(pfx + ".valid.inter", row[0], f"user {u!r} has no test row")
    for u, rows in train_by_user.items():
        if u not in valid_by_user:
            raise DataFormatError(pfx + ".train.inter", rows[0][0], f"user {u!r} has no valid row")

    if user2index is not None:
        index_to_user = {str(v): k for k, v in user2index.items()}
        for u, row in valid_by_user.items():
            if u not in index_to_user:
                raise DataFormatError(pfx + ".valid.inter", row[0], f"unknown user id {u!r}")
        users = sorted(valid_by_user, key=lambda u: user2index[index_to_user[u]])
    else:
        users = list(valid_by_user)

    seq_user: list[int] = []
    seq_item: list[str] = []
    for ui, u in enumerate(users):
        vrow, trow = valid_by_user[u], test_by_user[u]
        rows = train_by_user.get(u, [])[::-1]  # file order is longest first
        seq = (list(rows[0][2]) + [r[3] for r in rows]) if rows else list(vrow[2])
        seq += [vrow[3], trow[3]]
        hist = trow[2]
        if hist and seq[-1 - len(hist) : -1] != hist:
            raise DataFormatError(
                pfx + ".test.inter",
                trow[0],
                f"history of user {u!r} disagrees with its train/valid rows",
            )
        seq_user.extend([ui] * len(seq))
        seq_item.extend(seq)

    if item2index is not None:
        item_ids = np.asarray(
            [a for a, _ in sorted(item2index.items(), key=lambda kv: kv[1])], dtype=str
        )
        pos = {
            str(v): i for i, (_, v) in enumerate(sorted(item2index.items(), key=lambda kv: kv[1]))
        }
        item = np.asarray([pos[t] for t in seq_item], dtype=np.int64)
    else:
        item, item_ids = factorize(seq_item)
    user_ids = np.asarray(
        [index_to_user[u] for u in users] if user2index is not None else users, dtype=str
    )
    user = np.asarray(seq_user, dtype=np.int64)

    meta: Meta | None = None
    inputs = [
        Path(pfx + s)
        for s in (".train.inter", ".valid.inter", ".test.inter", ".item2index", ".user2index")
    ]
    inputs = [p for p in inputs if p.exists()]
    if items is not None:
        meta = read_items_file(Path(items))
        inputs.append(Path(items))
    elif Path(pfx + ".items.jsonl").exists():
        meta = {}
        p = Path(pfx + ".items.jsonl")
        for lineno, obj in iter_json_lines(p):
            asin = obj.get("asin")
            if not isinstance(asin, str):
                raise DataFormatError(p, lineno, "missing key 'asin'")
            meta[asin] = (
                _text(obj.get("title")),
                parse_categories(obj.get("categories"), p, lineno),
            )
        inputs.append(p)
    elif Path(pfx + ".text").exists():
        p = Path(pfx + ".text")
        cols, _ = read_delimited(p, required=["item_id:token", "text:token_seq"], delimiter="\t")
        meta = {
            a: (_text(t), ())
            for a, t in zip(
                cols["item_id:token"].to_pylist(), cols["text:token_seq"].to_pylist(), strict=True
            )
        }
        inputs.append(p)
    titles, cats = _align_meta(item_ids, meta)
    return RawDataset(user, item, None, user_ids, item_ids, titles, cats, inputs)


READERS: dict[str, Callable[[Path, Path | None], RawDataset]] = {
    "atomic": read_atomic,
    "movielens": read_movielens,
    "amazon2018": read_amazon2018,
    "amazon2014": read_amazon2014,
    "generic": read_generic,
}


def read_dataset(fmt: str, path: str | Path, items: str | Path | None = None) -> RawDataset:
    """Read ``path`` (and optional items/meta file) in format ``fmt``."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    return READERS[fmt](Path(path), Path(items) if items is not None else None)
