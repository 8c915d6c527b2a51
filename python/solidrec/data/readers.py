"""Readers for the supported input formats; each returns a :class:`RawDataset`.

Formats: ``atomic`` (UniSRec/RecBole ``.inter`` files), ``movielens``
(``ratings.csv`` + ``movies.csv``), ``amazon2018`` (ratings CSV ``item,user,rating,
timestamp`` + meta JSON lines), ``amazon2014`` (5-core reviews JSON lines + meta) and
``generic`` (see docs/DATA.md). Malformed input raises :class:`DataFormatError`. The
format-agnostic parsing they share (lines, delimited and Parquet files, JSON lines,
timestamps, id checks) is in :mod:`solidrec.data.parsing`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from solidrec.data.errors import DataFormatError
from solidrec.data.parsing import (
    Meta,
    align_meta,
    arrow_time_key,
    check_file,
    check_id,
    check_ids,
    clean_text,
    factorize,
    iter_json_lines,
    number_column,
    parse_categories,
    read_delimited,
    read_parquet,
    text_lines,
    time_key,
)
from solidrec.data.raw import RawDataset

log = logging.getLogger("solidrec.data")

FORMATS = ("atomic", "movielens", "amazon2018", "amazon2014", "generic")
#: Formats whose interactions carry a rating, so a minimum rating can filter them.
RATED_FORMATS = ("generic", "movielens", "amazon2018")


@dataclass(frozen=True)
class GenericColumns:
    """Column names of a generic interactions file (``--user-col`` and the like).

    ``time`` None reads ``timestamp`` when the file has one (otherwise file order is each
    user's chronological order); a name given explicitly must exist. ``rating`` (None:
    ``rating``) is read only to apply a minimum rating.
    """

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = None
    rating: str | None = None

    DEFAULT_TIME: ClassVar[str] = "timestamp"
    DEFAULT_RATING: ClassVar[str] = "rating"
    #: The command-line option of each field; errors quote it, the CLI defines it.
    OPTIONS: ClassVar[dict[str, str]] = {
        "user": "--user-col",
        "item": "--item-col",
        "time": "--time-col",
        "rating": "--rating-col",
    }

    def __post_init__(self) -> None:
        named = {"user": self.user, "item": self.item, "time": self.time_name}
        if self.rating is not None:
            named["rating"] = self.rating
        seen: dict[str, str] = {}
        for field, name in named.items():
            if not name.strip():
                raise ValueError(f"{self.OPTIONS[field]}: empty column name")
            if name in seen:
                raise ValueError(
                    f"{self.OPTIONS[seen[name]]} and {self.OPTIONS[field]} both name column "
                    f"{name!r}"
                )
            seen[name] = field

    @property
    def time_name(self) -> str:
        return self.time if self.time is not None else self.DEFAULT_TIME

    @property
    def rating_name(self) -> str:
        return self.rating if self.rating is not None else self.DEFAULT_RATING

    def hints(self) -> dict[str, str]:
        """Column name -> the option that chose it, for missing-column errors."""
        # later entries win: an explicit user / item column over a default name
        return {
            self.rating_name: self.OPTIONS["rating"],
            self.time_name: self.OPTIONS["time"],
            self.item: self.OPTIONS["item"],
            self.user: self.OPTIONS["user"],
        }


def check_reader_options(
    fmt: str, columns: GenericColumns | None, min_rating: float | None
) -> None:
    """Reject column mappings and rating thresholds that ``fmt`` cannot honour."""
    if columns is not None and columns != GenericColumns() and fmt != "generic":
        opts = "/".join(GenericColumns.OPTIONS.values())
        raise ValueError(f"{opts} apply to --format generic only, not {fmt}")
    if min_rating is None:
        if columns is not None and columns.rating is not None:
            raise ValueError("--rating-col is only read with --min-rating")
        return
    if fmt not in RATED_FORMATS:
        raise ValueError(
            f"--min-rating: format {fmt} has no ratings (formats with ratings: "
            f"{', '.join(RATED_FORMATS)})"
        )
    if not math.isfinite(min_rating):
        raise ValueError(f"--min-rating must be a finite number, got {min_rating}")


def _rating_mask(
    path: Path,
    cols: dict[str, pa.Array],
    column: str,
    first: int,
    unit: str,
    min_rating: float | None,
) -> np.ndarray | None:
    """Rows whose rating (in ``cols[column]``) is at least ``min_rating``, None without a
    threshold; non-numeric ratings name their line."""
    if min_rating is None:
        return None
    values = number_column(path, cols[column], first, f"column {column!r}", unit)
    keep = values >= min_rating
    if not keep.any():
        raise DataFormatError(path, None, f"no rating in column {column!r} is >= {min_rating:g}")
    log.info("--min-rating %g: kept %d of %d interactions", min_rating, keep.sum(), len(keep))
    return keep


def _dataset(
    path: Path,
    items: Path | None,
    users: pa.Array | list[str],
    item_col: pa.Array | list[str],
    time: np.ndarray | None,
    read_meta: Callable[[Path, np.ndarray], Meta],
    keep: np.ndarray | None = None,
) -> RawDataset:
    """Factorize the (checked) user and item columns, keeping only the ``keep`` rows
    (all without it), and attach the titles and categories that ``read_meta(items,
    item_ids)`` reads from the items file, if there is one."""
    if keep is not None:
        # Filtered before factorizing: an item only ever rated low is no item at all.
        mask = pa.array(keep)
        users = pc.filter(users if isinstance(users, pa.Array) else pa.array(users), mask)
        item_col = pc.filter(
            item_col if isinstance(item_col, pa.Array) else pa.array(item_col), mask
        )
        time = time[keep] if time is not None else None
    user, user_ids = factorize(users)
    item, item_ids = factorize(item_col)
    items = Path(items) if items is not None else None
    meta = read_meta(items, item_ids) if items is not None else None
    titles, cats = align_meta(item_ids, meta)
    inputs = [path] + ([items] if items is not None else [])
    return RawDataset(user, item, time, user_ids, item_ids, titles, cats, inputs)


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
            check_id(path, lineno, "item_id", item)
            if item in meta:
                raise DataFormatError(path, lineno, f"duplicate item_id {item!r}")
            meta[item] = (
                clean_text(obj.get("title")),
                parse_categories(obj.get("categories"), path, lineno),
            )
        if not meta:  # only blank lines: an error, like a header-only items CSV
            raise DataFormatError(path, None, "no items")
        return meta
    cols, first = read_delimited(path, required=["item_id"], optional=("title", "categories"))
    check_ids(path, "item_id", pc.utf8_trim_whitespace(cols["item_id"]), first)
    items = cols["item_id"].to_pylist()
    titles = cols["title"].to_pylist() if "title" in cols else [""] * len(items)
    cats = cols["categories"].to_pylist() if "categories" in cols else [None] * len(items)
    for i, (item, t, c) in enumerate(zip(items, titles, cats, strict=True)):
        item = item.strip()
        if item in meta:
            raise DataFormatError(path, i + first, f"duplicate item_id {item!r}")
        meta[item] = (clean_text(t), parse_categories(c, path, i + first))
    return meta


# ---------------------------------------------------------------------------- generic


def read_generic(
    path: Path,
    items: Path | None = None,
    columns: GenericColumns | None = None,
    min_rating: float | None = None,
) -> RawDataset:
    """Generic interactions (CSV/TSV/Parquet): user, item and optional time columns named
    by ``columns`` (default ``user_id``, ``item_id``, ``timestamp``).

    Without a time column, file order is each user's chronological order. With
    ``min_rating`` only rows whose rating column holds at least that value are kept.
    """
    path = Path(path)
    c = columns or GenericColumns()
    required = [c.user, c.item]
    if c.time is not None:
        required.append(c.time)
    if min_rating is not None:
        required.append(c.rating_name)
    optional = (c.time_name,) if c.time is None else ()
    hints = c.hints()
    what = f"column {c.time_name!r}"
    name = path.name.removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        cols = read_parquet(path, required, optional, text=(c.user, c.item), hints=hints)
        first, unit = 1, "row"
        ts = cols.get(c.time_name)
        time = arrow_time_key(path, ts, what) if ts is not None else None
    else:
        cols, first = read_delimited(path, required=required, optional=optional, hints=hints)
        unit = "line"
        ts = cols.get(c.time_name)
        time = time_key(path, ts, first, what) if ts is not None else None
    users = pc.utf8_trim_whitespace(cols[c.user])
    items_ = pc.utf8_trim_whitespace(cols[c.item])
    check_ids(path, c.user, users, first, unit)
    check_ids(path, c.item, items_, first, unit)
    keep = _rating_mask(path, cols, c.rating_name, first, unit, min_rating)
    return _dataset(path, items, users, items_, time, lambda p, _: read_items_file(p), keep)


# -------------------------------------------------------------------------- movielens


def _read_movies(path: Path) -> Meta:
    """``movies.csv``: movieId, title, optional ``|``-separated genres (one label each)."""
    cols, first = read_delimited(
        path, required=["movieId", "title"], optional=("genres",), delimiter=","
    )
    check_ids(path, "movieId", cols["movieId"], first)
    meta: Meta = {}
    ids = cols["movieId"].to_pylist()
    titles = cols["title"].to_pylist()
    genres = cols["genres"].to_pylist() if "genres" in cols else [""] * len(ids)
    for i, (m, t, g) in enumerate(zip(ids, titles, genres, strict=True)):
        if m in meta:
            raise DataFormatError(path, i + first, f"duplicate movieId {m!r}")
        labels = [
            x.strip() for x in g.split("|") if x.strip() and x.strip() != "(no genres listed)"
        ]
        meta[m] = (clean_text(t), tuple((x,) for x in labels))
    return meta


def read_movielens(
    path: Path, items: Path | None = None, min_rating: float | None = None
) -> RawDataset:
    """MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
    (movieId,title,genres; ``|``-separated genres, each genre one category label). With
    ``min_rating`` only ratings of at least that value are kept."""
    path = Path(path)
    if path.is_dir():
        path = path / "ratings.csv"
    if items is None and (path.parent / "movies.csv").exists():
        items = path.parent / "movies.csv"
    required = ["userId", "movieId", "timestamp"] + (["rating"] if min_rating is not None else [])
    cols, first = read_delimited(path, required=required, delimiter=",")
    check_ids(path, "userId", cols["userId"], first)
    check_ids(path, "movieId", cols["movieId"], first)
    time = time_key(path, cols["timestamp"], first, "column 'timestamp'")
    keep = _rating_mask(path, cols, "rating", first, "line", min_rating)
    return _dataset(
        path, items, cols["userId"], cols["movieId"], time, lambda p, _: _read_movies(p), keep
    )


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
        meta[asin] = (clean_text(obj.get("title")), paths)
    if lineno == 0:  # not one object (items of other categories are fine)
        raise DataFormatError(path, None, "no items")
    return meta


def _amazon_meta(key: str) -> Callable[[Path, np.ndarray], Meta]:
    """Meta reader for :func:`_dataset`: only the interacted items, categories in ``key``."""
    return lambda path, item_ids: _read_amazon_meta(path, set(item_ids.tolist()), key)


def read_amazon2018(
    path: Path, items: Path | None = None, min_rating: float | None = None
) -> RawDataset:
    """Amazon Review Data 2018 ratings CSV (no header: ``item,user,rating,timestamp``,
    optionally .gz) and optional meta JSON lines (``asin``, ``title``, ``category``).
    With ``min_rating`` only ratings of at least that value are kept."""
    path = Path(path)
    rated = min_rating is not None
    cols, first = read_delimited(
        path,
        required=["item", "user", "timestamp"] + (["rating"] if rated else []),
        optional=() if rated else ("rating",),
        delimiter=",",
        names=["item", "user", "rating", "timestamp"],
    )
    check_ids(path, "item", cols["item"], first)
    check_ids(path, "user", cols["user"], first)
    time = time_key(path, cols["timestamp"], first, "column 'timestamp'")
    keep = _rating_mask(path, cols, "rating", first, "line", min_rating)
    return _dataset(path, items, cols["user"], cols["item"], time, _amazon_meta("category"), keep)


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
        check_id(path, lineno, "reviewerID", u)
        check_id(path, lineno, "asin", a)
        users.append(u)
        asins.append(a)
        times.append(str(t))  # exact: json.loads refuses ints too long for str()
        lines.append(lineno)
    if not users:
        raise DataFormatError(path, None, "no data rows")
    time = time_key(path, pa.array(times, pa.string()), np.asarray(lines), "unixReviewTime")
    return _dataset(path, items, users, asins, time, _amazon_meta("categories"))


# --------------------------------------------------------------------------- atomic

_ATOMIC_HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")
_SPLITS = (".train.inter", ".valid.inter", ".test.inter")


def _read_index(path: Path) -> dict[str, int]:
    """``id<TAB>index`` lines; ids and indices must both be unique (a repeated index
    would silently merge two ids, and the error would surface in another file)."""
    check_file(path)
    out: dict[str, int] = {}
    line_of_id: dict[str, int] = {}
    line_of_index: dict[int, int] = {}
    for lineno, line in text_lines(path):
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
        check_id(path, lineno, "id", key)
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


class InterRow(NamedTuple):
    """One row of a UniSRec ``.inter`` sequence file: a user's history and next item."""

    line: int  # 1-based line number in the file (for errors)
    user: str
    history: list[str]  # item tokens, oldest first
    target: str  # the item that follows the history


def _read_inter(path: Path, item_ok: Callable[[str], bool]) -> list[InterRow]:
    check_file(path)
    rows: list[InterRow] = []
    lines = text_lines(path)
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
            check_id(path, lineno, "token", p.strip())
        u, hist, target = parts[0].strip(), parts[1].split(), parts[2].strip()
        if not u or not target:
            raise DataFormatError(path, lineno, "empty user or item token")
        for tok in (*hist, target):
            if not item_ok(tok):
                raise DataFormatError(path, lineno, f"unknown item id {tok!r}")
        rows.append(InterRow(lineno, u, hist, target))
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
                clean_text(obj.get("title")),
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
        check_ids(p, "item_id:token", cols["item_id:token"], first)
        meta = {}
        ids = cols["item_id:token"].to_pylist()
        texts = cols["text:token_seq"].to_pylist()
        for i, (a, t) in enumerate(zip(ids, texts, strict=True)):
            if a in meta:
                raise DataFormatError(p, i + first, f"duplicate item_id {a!r}")
            meta[a] = (clean_text(t), ())
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
    check_ids(path, "user_id:token", cols["user_id:token"], first)
    check_ids(path, "item_id:token", cols["item_id:token"], first)
    ts = cols.get("timestamp:float")
    time = time_key(path, ts, first, "column 'timestamp:float'") if ts is not None else None
    user, user_ids = factorize(cols["user_id:token"])
    item, item_ids = factorize(cols["item_id:token"])
    inputs = [path]
    meta = _atomic_meta(pfx, items, inputs)
    titles, cats = align_meta(item_ids, meta)
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
    train_by_user: dict[str, list[InterRow]] = {}
    for row in train:
        train_by_user.setdefault(row.user, []).append(row)
    valid_by_user: dict[str, InterRow] = {}
    for row in valid:
        if row.user in valid_by_user:
            raise DataFormatError(
                pfx + ".valid.inter", row.line, f"second row for user {row.user!r}"
            )
        valid_by_user[row.user] = row
    test_by_user: dict[str, InterRow] = {}
    for row in test:
        if row.user in test_by_user:
            raise DataFormatError(
                pfx + ".test.inter", row.line, f"second row for user {row.user!r}"
            )
        if row.user not in valid_by_user:
            raise DataFormatError(
                pfx + ".test.inter", row.line, f"user {row.user!r} has no valid row"
            )
        test_by_user[row.user] = row
    for u, row in valid_by_user.items():
        if u not in test_by_user:
            raise DataFormatError(pfx + ".valid.inter", row.line, f"user {u!r} has no test row")
    for u, rows in train_by_user.items():
        if u not in valid_by_user:
            raise DataFormatError(
                pfx + ".train.inter", rows[0].line, f"user {u!r} has no valid row"
            )

    if user2index is not None:
        index_to_user = {str(v): k for k, v in user2index.items()}
        for u, row in valid_by_user.items():
            if u not in index_to_user:
                raise DataFormatError(pfx + ".valid.inter", row.line, f"unknown user id {u!r}")
        users = sorted(valid_by_user, key=lambda u: user2index[index_to_user[u]])
    else:
        users = list(valid_by_user)

    seq_user: list[int] = []
    seq_item: list[str] = []
    for ui, u in enumerate(users):
        vrow, trow = valid_by_user[u], test_by_user[u]
        rows = train_by_user.get(u, [])[::-1]  # file order is longest first
        seq = (list(rows[0].history) + [r.target for r in rows]) if rows else list(vrow.history)
        seq += [vrow.target, trow.target]
        hist = trow.history
        if hist and seq[-1 - len(hist) : -1] != hist:
            raise DataFormatError(
                pfx + ".test.inter",
                trow.line,
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
    titles, cats = align_meta(item_ids, meta)
    return RawDataset(user, item, None, user_ids, item_ids, titles, cats, inputs)


#: format -> reader(path, items[, columns=][, min_rating=]) (see check_reader_options).
READERS: dict[str, Callable[..., RawDataset]] = {
    "atomic": read_atomic,
    "movielens": read_movielens,
    "amazon2018": read_amazon2018,
    "amazon2014": read_amazon2014,
    "generic": read_generic,
}


def read_dataset(
    fmt: str,
    path: str | Path,
    items: str | Path | None = None,
    *,
    columns: GenericColumns | None = None,
    min_rating: float | None = None,
) -> RawDataset:
    """Read ``path`` (and optional items/meta file) in format ``fmt``; ``columns`` map a
    generic file's columns, ``min_rating`` keeps only ratings of at least that value."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    check_reader_options(fmt, columns, min_rating)
    kw: dict[str, Any] = {}
    if columns is not None:
        kw["columns"] = columns
    if min_rating is not None:
        kw["min_rating"] = min_rating
    return READERS[fmt](Path(path), Path(items) if items is not None else None, **kw)
