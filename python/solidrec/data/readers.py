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
import re
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from solidrec.data.errors import DataFormatError
from solidrec.data.raw import CategoryPath, RawDataset

FORMATS = ("atomic", "movielens", "amazon2018", "amazon2014", "generic")

#: Where rows come from: the line (or Parquet row) of row 0, rows following one per line,
#: or an explicit line per row (JSON lines skip blank lines).
Lines = int | np.ndarray

# Control characters (C0, DEL, C1). numpy's str arrays drop trailing NULs, so "u\0" and
# "u" would become two users stored under the same id; ids with any control character
# are rejected rather than silently merged or mangled.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_RE2 = r"[\x00-\x1f\x7f-\x{9f}]"

# ----------------------------------------------------------------------------- helpers


def _line(lines: Lines, i: int) -> int:
    return int(lines[i]) if isinstance(lines, np.ndarray) else lines + i


def _first_true(mask: pa.Array | np.ndarray) -> int:
    m = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
    return int(np.flatnonzero(m)[0])


def _open_binary(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    if path.is_dir():
        raise DataFormatError(path, None, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataFormatError(path, None, "empty file")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its line ending) for each line (.gz ok).

    Lines end at LF, CRLF or a lone CR (CR-only files, as pyarrow's CSV parser and
    Python's universal newlines see them). Each line is decoded on its own so invalid
    UTF-8 is reported on its own line, not on the first line of whatever block a text
    decoder happened to read. Unreadable or truncated compressed input is reported as a
    :class:`DataFormatError` too.
    """
    lineno = 0
    try:
        with _open_binary(path) as raw:
            # latin-1 maps each byte to one character, so this only finds the line ends;
            # 0x0A / 0x0D never occur inside a multi-byte UTF-8 sequence, so splitting
            # before decoding is safe.
            f = io.TextIOWrapper(raw, encoding="latin-1", newline="")  # type: ignore[arg-type]
            for text in f:
                lineno += 1
                data = text.rstrip("\r\n").encode("latin-1")
                try:
                    decoded = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(path, lineno, f"invalid UTF-8 ({e.reason})") from None
                yield lineno, decoded
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(path, lineno + 1, f"cannot read file ({e})") from None


def _check_id(path: Path, line: int | None, what: str, value: str, unit: str = "line") -> None:
    m = _CONTROL.search(value)
    if m:
        raise DataFormatError(
            path,
            line,
            f"{what}: {value!r} contains control character U+{ord(m.group()):04X}",
            unit,
        )


def _check_ids(path: Path, column: str, arr: pa.Array, lines: Lines, unit: str = "line") -> None:
    """Reject ids with control characters (see ``_CONTROL``), naming the line."""
    bad = pc.match_substring_regex(arr, _CONTROL_RE2)
    if pc.any(bad).as_py():
        i = _first_true(bad)
        _check_id(path, _line(lines, i), f"column {column!r}", arr[i].as_py(), unit)


def _locate_bad_row(
    path: Path, delimiter: str, ncols: int, first_line: int, quoting: bool = True
) -> DataFormatError | None:
    """Slow path, only run after the fast parser failed: find the first bad line."""
    quote = {} if quoting else {"quoting": csv.QUOTE_NONE}
    try:
        for lineno, text in _text_lines(path):
            if lineno < first_line:
                continue
            if not text.strip():
                return DataFormatError(path, lineno, "empty line")
            try:
                fields = next(csv.reader([text], delimiter=delimiter, strict=True, **quote))
            except csv.Error as e:
                return DataFormatError(path, lineno, f"cannot parse line ({e})")
            if len(fields) != ncols:
                problem = f"expected {ncols} fields, found {len(fields)}"
                return DataFormatError(path, lineno, problem)
    except DataFormatError as e:
        return e
    return None


def _sniff_delimiter(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    if name.endswith((".tsv", ".tab", ".inter")):
        return "\t"
    if name.endswith(".csv"):
        return ","
    first = next(_text_lines(path), (1, ""))[1]
    return "\t" if "\t" in first else ","


def read_delimited(
    path: Path,
    *,
    required: list[str],
    optional: tuple[str, ...] = (),
    delimiter: str | None = None,
    names: list[str] | None = None,
    quoting: bool = True,
) -> tuple[dict[str, pa.Array], int]:
    """Read a CSV/TSV (optionally .gz) into string columns.

    With ``names`` the file has no header and ``names`` are its columns. ``quoting=False``
    reads ``"`` as an ordinary character (RecBole files are not CSV-quoted). Returns the
    columns and the line number of the first data row (row ``i`` is line ``i + that``).
    """
    _check_exists(path)
    delimiter = delimiter or _sniff_delimiter(path)
    if names is None:
        first = next(_text_lines(path), (1, ""))[1]
        first = first.lstrip("\ufeff")
        if not first.strip():
            raise DataFormatError(path, 1, "empty header line")
        try:
            quote = {} if quoting else {"quoting": csv.QUOTE_NONE}
            cols = [c.strip() for c in next(csv.reader([first], delimiter=delimiter, **quote))]
        except csv.Error as e:
            raise DataFormatError(path, 1, f"cannot parse header ({e})") from None
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
    # Strict parse, no ``invalid_row_handler``: pyarrow calls a Python handler from its
    # worker threads, and in a process that imported torch that intermittently ended in
    # std::terminate (SIGABRT) after the error was raised. A bad row fails the parse and
    # the slow path below names its line.
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=cols, skip_rows=skip),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                ignore_empty_lines=False,
                quote_char='"' if quoting else False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in cols},
                include_columns=wanted,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        err = _locate_bad_row(path, delimiter, len(cols), first_data, quoting)
        if err is None and next(_text_lines(path), None) is None:
            err = DataFormatError(path, None, "empty file (after decompression)")
        raise (err or DataFormatError(path, None, f"cannot parse: {e}")) from None
    if table.num_rows == 0:
        raise DataFormatError(path, None, "no data rows")
    out = {c: table.column(c).combine_chunks() for c in wanted}
    for c in required:
        empty = pc.equal(pc.utf8_trim_whitespace(out[c]), "")
        if pc.any(empty).as_py():
            i = _first_true(empty)
            blank = all(not str(out[w][i].as_py()).strip() for w in wanted)
            raise DataFormatError(
                path, i + first_data, "empty line" if blank else f"empty value in column {c!r}"
            )
    return out, first_data


# -------------------------------------------------------------------------- timestamps
#
# Timestamps only order each user's interactions, so the reader turns them into an int64
# sort key (RawDataset.time) that orders exactly like the values: integers are kept as
# they are; decimals, floats and anything beyond one int64 get a dense rank computed with
# exact comparisons (a float64 key would tie 1.0000000000000001 with 1, and flooring to
# integers reverses 0.9 / 0.5 / 0.1 within a second). Equal values get equal keys, so the
# protocol's stable sort keeps their file order.

_INT_RE = r"^[+-]?[0-9]+$"
_NUM_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NONFINITE_RE = r"(?i)^[+-]?(nan|inf|infinity)$"
_TIME = r"[T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
_ZONE = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)"
_ISO_RE = rf"^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}({_TIME}{_ZONE}?)?$"
_AWARE_RE = rf"{_TIME}{_ZONE}$"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _first_failure(arr: pa.Array, fn: Callable[[pa.Array], Any]) -> int:
    """Index of the first element on which the vectorised ``fn`` fails (it fails on
    ``arr``): halving, O(n) in total."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            fn(arr.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


def _dense_rank(*keys: np.ndarray) -> np.ndarray:
    """int64 rank of each row under the lexicographic order of ``keys`` (most
    significant first); equal rows get equal ranks."""
    order = np.lexsort(keys[::-1])
    new = np.zeros(len(order), dtype=bool)
    new[0] = True
    for k in keys:
        s = k[order]
        new[1:] |= s[1:] != s[:-1]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return rank


def _decimal_key(s: pa.Array, bad: Callable[[int, str], DataFormatError]) -> np.ndarray:
    """Exact order key of decimal strings (all match ``_NUM_RE``)."""
    try:
        f = pc.cast(s, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # e.g. exponents arrow's parser refuses; Python's never does
        f = np.asarray([float(x) for x in s.to_pylist()], dtype=np.float64)
    # Correctly rounded parsing is monotone, so float64 orders the values correctly up to
    # ties between distinct values that round to the same double; those are split below.
    edge = 2.0**63
    over = ~np.isfinite(f) | (f > edge) | (f < -edge)
    for i in np.flatnonzero(np.abs(f) == edge).tolist():
        d = Decimal(s[i].as_py())
        over[i] = d > _INT64_MAX or d < _INT64_MIN
    if over.any():
        i = _first_true(over)
        raise bad(i, f"{s[i].as_py()!r} is out of range (beyond 64-bit integers)")
    n = len(f)
    sub = np.zeros(n, dtype=np.int64)
    order = np.argsort(f, kind="stable")
    fs = f[order]
    same = fs[1:] == fs[:-1]
    if same.any():
        ss = s.take(pa.array(order))
        differ = same & pc.not_equal(ss.slice(1), ss.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        if differ.any():
            starts = np.flatnonzero(np.r_[True, ~same])
            ends = np.r_[starts[1:], n]
            run = np.cumsum(np.r_[True, ~same]) - 1
            for r in np.unique(run[1:][differ]).tolist():
                a, b = int(starts[r]), int(ends[r])
                vals = [Decimal(x) for x in ss.slice(a, b - a).to_pylist()]
                rank = {v: k for k, v in enumerate(sorted(set(vals)))}
                sub[order[a:b]] = [rank[v] for v in vals]
    return _dense_rank(f, sub)


def _iso_key(s: pa.Array, bad: Callable[[int, str], DataFormatError]) -> np.ndarray:
    """Order key of ISO-8601 dates / date-times (all match ``_ISO_RE``)."""
    aware = pc.match_substring_regex(s, _AWARE_RE).to_numpy(zero_copy_only=False)
    if aware.any() and not aware.all():
        # Naive times are local to an unknown zone: ordering them against UTC-offset
        # times would be a guess.
        i = _first_true(aware != aware[0])
        has = "has a UTC offset" if aware[i] else "has no UTC offset"
        raise bad(i, f"{s[i].as_py()!r} {has}, unlike {s[0].as_py()!r} on the first row")
    unit = pa.timestamp("s", "UTC") if aware[0] else pa.timestamp("s")
    secs = pc.replace_substring_regex(s, r"(:[0-9]{2})\.[0-9]+", r"\1")
    try:
        sec = pc.cast(secs, unit).cast(pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        i = _first_failure(secs, lambda a: pc.cast(a, unit))
        raise bad(i, f"{s[i].as_py()!r} is not a valid date/time") from None
    frac = pc.struct_field(pc.extract_regex(s, r"^[^.]*(?:\.(?P<f>[0-9]+))?"), [0])
    ns = pc.cast(pc.utf8_rpad(frac, 9, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    if len(sec) and sec.min() > -(2**63) // 10**9 and sec.max() < (2**63 - 1) // 10**9:
        return sec * np.int64(10**9) + ns  # nanoseconds since the epoch (UTC if zoned)
    return _dense_rank(sec, ns)


def _time_key(
    path: Path, values: pa.Array, lines: Lines, what: str, unit: str = "line"
) -> np.ndarray:
    """int64 order key of textual timestamps: integers, decimals (exact), or ISO-8601
    dates / date-times. Rejects other text, non-finite and out-of-int64 values, naming
    the line."""

    def bad(i: int, problem: str) -> DataFormatError:
        return DataFormatError(path, _line(lines, i), f"{what}: {problem}", unit)

    s = pc.utf8_trim_whitespace(values.cast(pa.string()))
    if pc.all(pc.match_substring_regex(s, _INT_RE)).as_py():
        try:
            plain = pc.replace_substring_regex(s, r"^\+", "")
            return pc.cast(plain, pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            pass  # beyond int64: the decimal path names the row
    num = pc.match_substring_regex(s, _NUM_RE)
    iso = pc.match_substring_regex(s, _ISO_RE)
    numeric = num[0].as_py() or not iso[0].as_py()
    ok = num if numeric else iso
    if not pc.all(ok).as_py():
        i = _first_true(pc.invert(ok))
        v = s[i].as_py()
        if pc.match_substring_regex(pa.array([v]), _NONFINITE_RE)[0].as_py():
            raise bad(i, f"{v!r} is not a finite number")
        if i == 0:
            raise bad(i, f"{v!r} is not a number or an ISO-8601 date/time")
        raise bad(i, f"{v!r} is not " + ("a number" if numeric else "an ISO-8601 date/time"))
    return _decimal_key(s, bad) if numeric else _iso_key(s, bad)


def _arrow_time_key(path: Path, col: pa.Array, what: str) -> np.ndarray:
    """int64 order key of a typed (Parquet) timestamp column; errors name the row."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type

    def bad(i: int, problem: str) -> DataFormatError:
        return DataFormatError(path, i + 1, f"{what}: {problem}", "row")

    if pa.types.is_integer(t):
        if pa.types.is_unsigned_integer(t):
            over = pc.greater(col, pa.scalar(_INT64_MAX, pa.uint64()))
            if pc.any(over).as_py():
                i = _first_true(over)
                raise bad(i, f"{col[i].as_py()} is out of range (beyond 64-bit integers)")
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_floating(t):
        f = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        if not np.isfinite(f).all():
            i = _first_true(~np.isfinite(f))
            raise bad(i, f"{f[i]!r} is not a finite number")
        over = (f >= 2.0**63) | (f < -(2.0**63))
        if over.any():
            i = _first_true(over)
            raise bad(i, f"{f[i]!r} is out of range (beyond 64-bit integers)")
        return _dense_rank(f)  # floats are exact values: their order is the key's
    if pa.types.is_decimal(t):
        return _time_key(path, pc.cast(col, pa.string()), 1, what, "row")
    if pa.types.is_timestamp(t):
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)  # UTC when zoned
    if pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("s"))
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _time_key(path, col, 1, what, "row")
    raise DataFormatError(
        path, None, f"{what} has type {t}; expected numbers, dates, date/times or text"
    )


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
    path: Path, *, literal_fallback: bool = False, exact_numbers: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSON-lines file (.gz ok).

    With ``literal_fallback`` a line that is not JSON may be a Python dict literal (the
    format of the Amazon 2014 meta files). With ``exact_numbers`` JSON decimals (and
    NaN / Infinity) are :class:`~decimal.Decimal`, not rounded floats.
    """
    _check_exists(path)
    numbers: dict[str, Any] = (
        {"parse_float": Decimal, "parse_constant": Decimal} if exact_numbers else {}
    )
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, **numbers)
        except (ValueError, RecursionError) as e:
            # ValueError: JSONDecodeError, or an integer past Python's digit limit.
            msg = getattr(e, "msg", None) or str(e) or type(e).__name__
            if not literal_fallback:
                raise DataFormatError(path, lineno, f"invalid JSON ({msg})") from None
            try:
                obj = ast.literal_eval(line)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                raise DataFormatError(path, lineno, f"invalid JSON ({msg})") from None
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
            _check_id(path, lineno, "item_id", item)
            if item in meta:
                raise DataFormatError(path, lineno, f"duplicate item_id {item!r}")
            meta[item] = (
                _text(obj.get("title")),
                parse_categories(obj.get("categories"), path, lineno),
            )
        if not meta:  # only blank lines: an error, like a header-only items CSV
            raise DataFormatError(path, None, "no items")
        return meta
    cols, first = read_delimited(path, required=["item_id"], optional=("title", "categories"))
    _check_ids(path, "item_id", pc.utf8_trim_whitespace(cols["item_id"]), first)
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
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(path, None, f"cannot read Parquet data ({e})") from None
    if table.num_rows == 0:
        raise DataFormatError(path, None, "no data rows")
    out = {c: table.column(c).combine_chunks() for c in wanted}
    for c in wanted:
        nulls = out[c].is_null()
        if pc.any(nulls).as_py():
            i = _first_true(nulls)
            raise DataFormatError(path, i + 1, f"missing value in column {c!r}", "row")
    for c in required:
        col = out[c]
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        try:
            out[c] = pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                i = _first_failure(col, lambda a: pc.cast(a, pa.string()))
                raise DataFormatError(path, i + 1, f"column {c!r}: invalid UTF-8", "row") from None
            raise DataFormatError(
                path, None, f"column {c!r} of type {col.type} cannot be read as ids ({e})"
            ) from None
    return out


def read_generic(path: Path, items: Path | None = None) -> RawDataset:
    """Generic interactions ``user_id,item_id[,timestamp]`` (CSV/TSV/Parquet).

    Without a ``timestamp`` column, file order is each user's chronological order.
    """
    path = Path(path)
    required = ["user_id", "item_id"]
    name = path.name.removesuffix(".gz")
    what = "column 'timestamp'"
    if name.endswith((".parquet", ".pq")):
        cols = _read_parquet(path, required, ("timestamp",))
        first, unit = 1, "row"
        ts = cols.get("timestamp")
        time = _arrow_time_key(path, ts, what) if ts is not None else None
    else:
        cols, first = read_delimited(path, required=required, optional=("timestamp",))
        unit = "line"
        ts = cols.get("timestamp")
        time = _time_key(path, ts, first, what) if ts is not None else None
    users = pc.utf8_trim_whitespace(cols["user_id"])
    items_ = pc.utf8_trim_whitespace(cols["item_id"])
    _check_ids(path, "user_id", users, first, unit)
    _check_ids(path, "item_id", items_, first, unit)
    user, user_ids = factorize(users)
    item, item_ids = factorize(items_)
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
    _check_ids(path, "userId", cols["userId"], first)
    _check_ids(path, "movieId", cols["movieId"], first)
    time = _time_key(path, cols["timestamp"], first, "column 'timestamp'")
    user, user_ids = factorize(cols["userId"])
    item, item_ids = factorize(cols["movieId"])
    meta: Meta | None = None
    if items is not None:
        items = Path(items)
        mcols, mfirst = read_delimited(
            items, required=["movieId", "title"], optional=("genres",), delimiter=","
        )
        _check_ids(items, "movieId", mcols["movieId"], mfirst)
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
    lineno = 0
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
    if lineno == 0:  # not one object (items of other categories are fine)
        raise DataFormatError(path, None, "no items")
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
    _check_ids(path, "item", cols["item"], first)
    _check_ids(path, "user", cols["user"], first)
    time = _time_key(path, cols["timestamp"], first, "column 'timestamp'")
    user, user_ids = factorize(cols["user"])
    item, item_ids = factorize(cols["item"])
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
    times: list[str] = []
    lines: list[int] = []
    # exact_numbers: a JSON decimal would otherwise be rounded to a float before it is
    # ordered; the exact text goes through the same timestamp parser as the CSV formats.
    for lineno, obj in iter_json_lines(path, exact_numbers=True):
        for k in ("reviewerID", "asin", "unixReviewTime"):
            if k not in obj:
                raise DataFormatError(path, lineno, f"missing key {k!r}")
        t = obj["unixReviewTime"]
        if isinstance(t, bool) or not isinstance(t, (int, Decimal)):
            raise DataFormatError(path, lineno, f"unixReviewTime: {t!r} is not a number")
        u, a = str(obj["reviewerID"]), str(obj["asin"])
        if not u.strip() or not a.strip():
            raise DataFormatError(path, lineno, "empty reviewerID or asin")
        _check_id(path, lineno, "reviewerID", u)
        _check_id(path, lineno, "asin", a)
        users.append(u)
        asins.append(a)
        times.append(str(t))  # exact: json.loads refuses ints too long for str()
        lines.append(lineno)
    if not users:
        raise DataFormatError(path, None, "no data rows")
    time = _time_key(path, pa.array(times, pa.string()), np.asarray(lines), "unixReviewTime")
    user, user_ids = factorize(users)
    item, item_ids = factorize(asins)
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
_SPLITS = (".train.inter", ".valid.inter", ".test.inter")


def _read_index(path: Path) -> dict[str, int]:
    """``id<TAB>index`` lines; ids and indices must both be unique (a repeated index
    would silently merge two ids, and the error would surface in another file)."""
    _check_exists(path)
    out: dict[str, int] = {}
    line_of_id: dict[str, int] = {}
    line_of_index: dict[int, int] = {}
    for lineno, line in _text_lines(path):
        if not line.strip():
            raise DataFormatError(path, lineno, "empty line")
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataFormatError(
                path, lineno, f"expected 2 tab-separated fields, found {len(parts)}"
            )
        key, idx = parts[0].lstrip("\ufeff") if lineno == 1 else parts[0], parts[1].strip()
        if not key.strip():
            raise DataFormatError(path, lineno, "empty id")
        _check_id(path, lineno, "id", key)
        # str.isdigit() alone would accept non-ASCII digits, and int() also "1_0".
        if not (idx.isascii() and idx.isdigit()):
            raise DataFormatError(path, lineno, f"index {parts[1]!r} is not a non-negative integer")
        value = int(idx)
        if key in line_of_id:
            raise DataFormatError(
                path, lineno, f"duplicate id {key!r} (first on line {line_of_id[key]})"
            )
        if value in line_of_index:
            raise DataFormatError(
                path, lineno, f"duplicate index {value} (first on line {line_of_index[value]})"
            )
        out[key] = value
        line_of_id[key] = lineno
        line_of_index[value] = lineno
    if not out:
        # An empty index would make every token "unknown" and blame the .inter file.
        raise DataFormatError(path, None, "no entries")
    return out


def _read_inter(
    path: Path, item_ok: Callable[[str], bool]
) -> list[tuple[int, str, list[str], str]]:
    _check_exists(path)
    rows: list[tuple[int, str, list[str], str]] = []
    lines = _text_lines(path)
    first = next(lines, (1, ""))[1]
    header = tuple(c.strip() for c in first.lstrip("\ufeff").split("\t"))
    if len(set(header)) != len(header):
        raise DataFormatError(path, 1, f"duplicate column in header {list(header)}")
    if header != _ATOMIC_HEADER:
        raise DataFormatError(
            path, 1, f"expected header {list(_ATOMIC_HEADER)}, found {list(header)}"
        )
    for lineno, line in lines:
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(
                path, lineno, f"expected 3 tab-separated fields, found {len(parts)}"
            )
        for p in parts:
            _check_id(path, lineno, "token", p.strip())
        u, hist, target = parts[0].strip(), parts[1].split(), parts[2].strip()
        if not u or not target:
            raise DataFormatError(path, lineno, "empty user or item token")
        for tok in (*hist, target):
            if not item_ok(tok):
                raise DataFormatError(path, lineno, f"unknown item id {tok!r}")
        rows.append((lineno, u, hist, target))
    if not rows:
        # Without this, an all-header dataset failed deep in sampling ("high <= 0").
        raise DataFormatError(path, None, "no interactions (the file has only a header)")
    return rows


def _atomic_prefix(path: Path) -> tuple[Path, bool]:
    """(``NAME`` prefix, whether the data is one per-interaction ``NAME.inter`` file
    rather than UniSRec's ``NAME.{train,valid,test}.inter`` sequence files)."""
    if path.is_dir():
        found = sorted(path.glob("*.train.inter"))
        if len(found) == 1:
            return found[0].parent / found[0].name.removesuffix(".train.inter"), False
        single = [p for p in sorted(path.glob("*.inter")) if not p.name.endswith(_SPLITS)]
        if not found and len(single) == 1:
            return single[0].parent / single[0].name.removesuffix(".inter"), True
        raise DataFormatError(
            path,
            None,
            f"expected exactly one *.train.inter file (or one NAME.inter), found "
            f"{len(found)} *.train.inter and {len(single)} other *.inter",
        )
    name = path.name
    for suffix in _SPLITS:
        if name.endswith(suffix):
            return path.parent / name.removesuffix(suffix), False
    if name.endswith(".inter"):
        return path.parent / name.removesuffix(".inter"), True
    if not Path(str(path) + ".train.inter").exists() and Path(str(path) + ".inter").exists():
        return path, True
    return path, False


def _atomic_meta(pfx: str, items: Path | None, inputs: list[Path]) -> Meta | None:
    """Item titles / categories: ``--items``, else ``NAME.items.jsonl``, else ``NAME.text``."""
    if items is not None:
        inputs.append(Path(items))
        return read_items_file(Path(items))
    p = Path(pfx + ".items.jsonl")
    if p.exists():
        meta: Meta = {}
        for lineno, obj in iter_json_lines(p):
            asin = obj.get("asin")
            if not isinstance(asin, str):
                raise DataFormatError(p, lineno, "missing key 'asin'")
            if asin in meta:
                raise DataFormatError(p, lineno, f"duplicate asin {asin!r}")
            meta[asin] = (
                _text(obj.get("title")),
                parse_categories(obj.get("categories"), p, lineno),
            )
        if not meta:
            raise DataFormatError(p, None, "no items")
        inputs.append(p)
        return meta
    p = Path(pfx + ".text")
    if p.exists():
        cols, first = read_delimited(
            p, required=["item_id:token", "text:token_seq"], delimiter="\t", quoting=False
        )
        _check_ids(p, "item_id:token", cols["item_id:token"], first)
        meta = {}
        ids = cols["item_id:token"].to_pylist()
        texts = cols["text:token_seq"].to_pylist()
        for i, (a, t) in enumerate(zip(ids, texts, strict=True)):
            if a in meta:
                raise DataFormatError(p, i + first, f"duplicate item_id {a!r}")
            meta[a] = (_text(t), ())
        inputs.append(p)
        return meta
    return None


def _read_atomic_interactions(pfx: str, items: Path | None) -> RawDataset:
    """RecBole's per-interaction ``NAME.inter``: ``user_id:token``, ``item_id:token``,
    optional ``timestamp:float`` (other columns ignored); ids are the tokens."""
    path = Path(pfx + ".inter")
    cols, first = read_delimited(
        path,
        required=["user_id:token", "item_id:token"],
        optional=("timestamp:float",),
        delimiter="\t",
        quoting=False,
    )
    _check_ids(path, "user_id:token", cols["user_id:token"], first)
    _check_ids(path, "item_id:token", cols["item_id:token"], first)
    ts = cols.get("timestamp:float")
    time = _time_key(path, ts, first, "column 'timestamp:float'") if ts is not None else None
    user, user_ids = factorize(cols["user_id:token"])
    item, item_ids = factorize(cols["item_id:token"])
    inputs = [path]
    meta = _atomic_meta(pfx, items, inputs)
    titles, cats = _align_meta(item_ids, meta)
    return RawDataset(user, item, time, user_ids, item_ids, titles, cats, inputs)


def read_atomic(path: Path, items: Path | None = None) -> RawDataset:
    """UniSRec/RecBole atomic files ``NAME.{train,valid,test}.inter`` (+ ``NAME.item2index``,
    ``NAME.user2index``, ``NAME.items.jsonl`` or ``NAME.text``), or RecBole's single
    per-interaction ``NAME.inter`` (``user_id:token``, ``item_id:token``, optional
    ``timestamp:float``).

    Each user's sequence is rebuilt as: the history of its shortest (last) train row, the
    train targets from shortest row to longest, the valid target, the test target (users with
    no train row: the valid row's history, the valid and test targets); train rows are
    taken in reverse file order (the files list them longest first). Item tokens are
    indices into ``item2index`` when that file exists.
    """
    prefix, single = _atomic_prefix(Path(path))
    pfx = str(prefix)
    if single:
        return _read_atomic_interactions(pfx, items)
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

    inputs = [Path(pfx + s) for s in (*_SPLITS, ".item2index", ".user2index")]
    inputs = [p for p in inputs if p.exists()]
    meta = _atomic_meta(pfx, items, inputs)
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
