"""Format-agnostic parsing shared by the readers: text lines (.gz, any line ending,
per-line UTF-8), delimited files with the bad line named, Parquet columns, JSON lines,
timestamps as exact int64 order keys, id checks, categories, and factorizing ids.

Everything malformed raises :class:`DataFormatError` naming the file and line (row).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from solidrec.data.errors import DataFormatError
from solidrec.data.raw import CategoryPath

#: Where rows come from: the line (or Parquet row) of row 0, rows following one per line,
#: or an explicit line per row (JSON lines skip blank lines).
Lines = int | np.ndarray

# Control characters (C0, DEL, C1). numpy's str arrays drop trailing NULs, so "u\0" and
# "u" would become two users stored under the same id; ids with any control character
# are rejected rather than silently merged or mangled.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_RE2 = r"[\x00-\x1f\x7f-\x{9f}]"

# ------------------------------------------------------------ lines, ids, tabular files


def _line(lines: Lines, i: int) -> int:
    """The line (row) number of row ``i``."""
    return int(lines[i]) if isinstance(lines, np.ndarray) else lines + i


def _first_true(mask: pa.Array | np.ndarray) -> int:
    m = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
    return int(np.flatnonzero(m)[0])


def _open_binary(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def check_file(path: Path) -> None:
    """An input file must exist, be a file and not be empty."""
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    if path.is_dir():
        raise DataFormatError(path, None, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataFormatError(path, None, "empty file")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
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


def check_id(path: Path, line: int | None, what: str, value: str, unit: str = "line") -> None:
    """Reject one id with a control character (see ``_CONTROL``)."""
    m = _CONTROL.search(value)
    if m:
        raise DataFormatError(
            path,
            line,
            f"{what}: {value!r} contains control character U+{ord(m.group()):04X}",
            unit,
        )


def check_ids(path: Path, column: str, arr: pa.Array, lines: Lines, unit: str = "line") -> None:
    """Reject ids with control characters (see ``_CONTROL``), naming the line."""
    bad = pc.match_substring_regex(arr, _CONTROL_RE2)
    if pc.any(bad).as_py():
        i = _first_true(bad)
        check_id(path, _line(lines, i), f"column {column!r}", arr[i].as_py(), unit)


def _locate_bad_row(
    path: Path, delimiter: str, ncols: int, first_line: int, quoting: bool = True
) -> DataFormatError | None:
    """Slow path, only run after the fast parser failed: find the first bad line."""
    quote = {} if quoting else {"quoting": csv.QUOTE_NONE}
    try:
        for lineno, text in text_lines(path):
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
    first = next(text_lines(path), (1, ""))[1]
    return "\t" if "\t" in first else ","


def missing_columns(
    path: Path,
    line: int | None,
    missing: list[str],
    have: list[str],
    hints: Mapping[str, str] | None = None,
) -> DataFormatError:
    """The error for required columns a file lacks: each column with the option that
    chose it (``hints``: column -> option), and the columns the file has."""
    hints = hints or {}
    named = ", ".join(f"{c!r} ({hints[c]})" if c in hints else repr(c) for c in missing)
    noun = "column" if len(missing) == 1 else "columns"
    where = "the header has" if line is not None else "the columns are"
    return DataFormatError(path, line, f"missing {noun} {named}; {where} {have}")


def read_delimited(
    path: Path,
    *,
    required: list[str],
    optional: tuple[str, ...] = (),
    delimiter: str | None = None,
    names: list[str] | None = None,
    quoting: bool = True,
    hints: Mapping[str, str] | None = None,
    rest: bool = False,
) -> tuple[dict[str, pa.Array], int]:
    """Read a CSV/TSV (optionally .gz) into string columns.

    With ``names`` the file has no header and ``names`` are its columns. ``quoting=False``
    reads ``"`` as an ordinary character (RecBole files are not CSV-quoted). ``hints``
    name the option behind a required column in the missing-column error; ``rest`` also
    reads every other column (after ``required``, in file order). Returns the columns
    and the line number of the first data row (row ``i`` is line ``i + that``).
    """
    check_file(path)
    delimiter = delimiter or _sniff_delimiter(path)
    if names is None:
        first = next(text_lines(path), (1, ""))[1]
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
            raise missing_columns(path, 1, missing, cols, hints)
        skip, first_data = 1, 2
    else:
        cols, skip, first_data = list(names), 0, 1
    wanted = _wanted(cols, required, optional, rest)
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
        if err is None and next(text_lines(path), None) is None:
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


def _wanted(
    cols: list[str], required: list[str], optional: tuple[str, ...], rest: bool
) -> list[str]:
    """The columns to read: ``required``, then ``optional`` (or, with ``rest``, every other
    column in file order)."""
    if rest:
        return [*required, *(c for c in cols if c not in required)]
    return list(dict.fromkeys(c for c in (*required, *optional) if c in cols))


def read_parquet(
    path: Path,
    required: list[str],
    optional: tuple[str, ...] = (),
    *,
    text: Collection[str] = (),
    hints: Mapping[str, str] | None = None,
    rest: bool = False,
) -> dict[str, pa.Array]:
    """Read Parquet columns (``required``, ``optional``, or with ``rest`` every other one);
    nulls are errors naming the row. Columns in ``text`` are ids, cast to strings; the
    others keep their types. ``hints`` as for :func:`read_delimited`."""
    import pyarrow.parquet as pq

    check_file(path)
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
        raise missing_columns(path, None, missing, names, hints)
    wanted = _wanted(names, required, optional, rest)
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
    for c in text:
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


def time_key(
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


def arrow_time_key(path: Path, col: pa.Array, what: str) -> np.ndarray:
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
        return time_key(path, pc.cast(col, pa.string()), 1, what, "row")
    if pa.types.is_timestamp(t):
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)  # UTC when zoned
    if pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("s"))
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return time_key(path, col, 1, what, "row")
    raise DataFormatError(
        path, None, f"{what} has type {t}; expected numbers, dates, date/times or text"
    )


def number_column(
    path: Path, values: pa.Array, lines: Lines, what: str, unit: str = "line"
) -> np.ndarray:
    """float64 values of a numeric column (ratings, embedding values): numbers as they
    are, text as decimal numbers. Other text, other types and non-finite values are
    rejected, naming the line (row)."""

    def bad(i: int, problem: str) -> DataFormatError:
        return DataFormatError(path, _line(lines, i), f"{what}: {problem}", unit)

    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    t = values.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        f = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        s = pc.utf8_trim_whitespace(values)
        ok = pc.match_substring_regex(s, _NUM_RE)
        if not pc.all(ok).as_py():
            i = _first_true(pc.invert(ok))
            raise bad(i, f"{s[i].as_py()!r} is not a number")
        try:
            f = pc.cast(s, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # exponents arrow's parser refuses; Python's never does
            f = np.asarray([float(x) for x in s.to_pylist()], dtype=np.float64)
    else:
        raise DataFormatError(path, None, f"{what} has type {t}; expected numbers")
    finite = np.isfinite(f)
    if not finite.all():
        i = _first_true(~finite)
        raise bad(i, f"{values[i].as_py()!r} is not a finite number")
    return f


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
    check_file(path)
    numbers: dict[str, Any] = (
        {"parse_float": Decimal, "parse_constant": Decimal} if exact_numbers else {}
    )
    for lineno, line in text_lines(path):
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


#: Files whose comma-separated category strings were already warned about.
_COMMA_WARNED: set[str] = set()


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
            if "," in s and "|" not in s and str(path) not in _COMMA_WARNED:
                _COMMA_WARNED.add(str(path))
                logging.getLogger("solidrec.data").warning(
                    "%s:%s: categories %r is read as one label; separate the levels of a "
                    "category path with '|' (or give a JSON list) (said once per file)",
                    path,
                    line,
                    s,
                )
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


#: Item metadata read from an items / meta file: id -> (title, category paths).
Meta = dict[str, tuple[str, tuple[CategoryPath, ...]]]


def align_meta(
    item_ids: np.ndarray, meta: Meta | None
) -> tuple[list[str] | None, list[tuple[CategoryPath, ...]] | None]:
    """Titles and categories aligned with ``item_ids`` (items ``meta`` lacks get none);
    (None, None) without ``meta``."""
    if meta is None:
        return None, None
    titles: list[str] = []
    cats: list[tuple[CategoryPath, ...]] = []
    for it in item_ids.tolist():
        t, c = meta.get(it, ("", ()))
        titles.append(t)
        cats.append(c)
    return titles, cats


def clean_text(v: Any) -> str:
    """A title as one line: runs of whitespace folded to one space ("" for None)."""
    if v is None:
        return ""
    return " ".join(str(v).split())
