"""Item embedding files (``--item-embeddings``), the ID source of semantic ids.

Two layouts (docs/DATA.md, "Item embedding files"):

* **by item index**: ``.npy``, ``.npz`` or a torch checkpoint whose rows follow the
  prepared item indices (N rows, or N + 1 with row 0 the padding);
* **by original item id**: the same arrays with ``--embedding-ids`` (the item id of each
  row: one per line, or a ``.npy`` of strings or integers), or a table (Parquet,
  CSV, TSV) with an ``item_id`` column and either one list column (the vector; other
  columns ignored) or only numeric columns (the components, in file order).

Keyed rows are matched to the data's items by id: items without a row get a zero vector
(with a warning and a count), ids that are no item of the data are ignored (counted
too), and no match at all is an error.

A trained run (``--from-run RUN``) is a keyed source too: the item table
``item_emb.weight`` of ``RUN/model/weights.pt``, its rows named by ``items.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from solidrec.data.errors import DataFormatError
from solidrec.data.parsing import (
    check_file,
    check_id,
    check_ids,
    number_column,
    read_delimited,
    read_parquet,
    text_lines,
)

log = logging.getLogger("solidrec.data")

#: The id column of an embeddings table (the same name as in a generic items file).
ID_COLUMN = "item_id"
_PARQUET_SUFFIXES = (".parquet", ".pq")
_TEXT_TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")


def is_table(path: Path) -> bool:
    """Whether ``path`` is an embeddings table (keyed by its ``item_id`` column)."""
    return Path(path).name.lower().endswith(_PARQUET_SUFFIXES + _TEXT_TABLE_SUFFIXES)


def _read_array(path: Path, key: str | None, fits: Callable[[int], bool]) -> np.ndarray:
    """A 2-D float32 array from .npy, .npz (``key`` or its only array) or a torch
    checkpoint (``key`` or the only 2-D tensor whose row count ``fits``, searched in
    nested dicts)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = list(z.keys())
            if key is None and len(names) != 1:
                raise ValueError(f"{path}: several arrays {names}; pass --embedding-key")
            if key is not None and key not in names:
                raise ValueError(f"{path}: no array {key!r} (--embedding-key); have {names}")
            arr = z[key or names[0]]
    else:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        found: dict[str, np.ndarray] = {}

        def walk(o: object, prefix: str) -> None:
            if isinstance(o, torch.Tensor) and o.ndim == 2:
                found[prefix] = o.detach().float().numpy()
            elif isinstance(o, dict):
                for k, v in o.items():
                    walk(v, f"{prefix}.{k}" if prefix else str(k))

        walk(obj, "")
        if key is not None:
            if key not in found:
                raise ValueError(f"{path}: no 2-D tensor {key!r}; have {sorted(found)}")
            arr = found[key]
        else:
            match = [k for k, v in found.items() if fits(v.shape[0])]
            if len(match) != 1:
                raise ValueError(
                    f"{path}: {len(match)} candidate item-embedding tensors {match}; "
                    "pass --embedding-key"
                )
            arr = found[match[0]]
    try:
        arr = np.asarray(arr, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(
            f"{path}: item embeddings of dtype {arr.dtype}, expected numbers"
        ) from None
    if arr.ndim == 2 and not np.isfinite(arr).all():
        # NaN / inf would silently turn every centroid distance into NaN.
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{path}: row {row} of the item embeddings is not finite")
    return arr


def load_item_embeddings(path: Path, num_items: int, key: str | None = None) -> np.ndarray:
    """Item-ID embeddings aligned with prepared item indices: an array of shape
    (num_items + 1, D) (row 0 = padding, dropped) or (num_items, D). Accepts .npy,
    .npz (``key`` or its only array) and torch checkpoints .pt/.pth/.ckpt (``key`` or the
    only 2-D tensor with a matching row count, searched in nested dicts)."""
    path = Path(path)
    arr = _read_array(path, key, lambda n: n in (num_items, num_items + 1))
    if arr.ndim != 2 or arr.shape[0] not in (num_items, num_items + 1):
        raise ValueError(
            f"{path}: item embeddings of shape {arr.shape}, expected ({num_items}(+1), D); "
            "rows keyed by item id need --embedding-ids or a table with 'item_id'"
        )
    return arr[1:] if arr.shape[0] == num_items + 1 else arr


# ------------------------------------------------------------------------ keyed files


def _check_unique(path: Path, ids: list[str], line: Callable[[int], int], unit: str) -> None:
    first: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in first:
            raise DataFormatError(
                path, line(i), f"duplicate item id {x!r} (first on {unit} {line(first[x])})", unit
            )
        first[x] = i


def read_ids(path: Path) -> list[str]:
    """The item id of each embedding row: text with one id per line (.gz ok), or a 1-D
    ``.npy`` of strings or integers. Ids must be unique and non-empty."""
    path = Path(path)
    check_file(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:  # e.g. an object array, which would need pickle
            raise DataFormatError(path, None, f"cannot read ids ({e})") from None
        if arr.ndim != 1 or len(arr) == 0:
            raise DataFormatError(path, None, f"ids of shape {arr.shape}, expected (n,), n > 0")
        if arr.dtype.kind not in "USiu":
            raise DataFormatError(
                path, None, f"ids of dtype {arr.dtype}, expected strings or integers"
            )
        if arr.dtype.kind == "S":
            try:
                ids = [b.decode("utf-8").strip() for b in arr.tolist()]
            except UnicodeDecodeError as e:
                raise DataFormatError(path, None, f"ids are not UTF-8 ({e.reason})") from None
        else:
            ids = [str(x).strip() for x in arr.tolist()]
        for i, x in enumerate(ids):
            if not x:
                raise DataFormatError(path, i + 1, "empty item id", "row")
            check_id(path, i + 1, "item id", x, "row")
        _check_unique(path, ids, lambda i: i + 1, "row")
        return ids
    ids = []
    for lineno, text in text_lines(path):
        x = (text.lstrip("\ufeff") if lineno == 1 else text).strip()
        if not x:
            raise DataFormatError(path, lineno, "empty line (one item id per line)")
        check_id(path, lineno, "item id", x)
        ids.append(x)
    if not ids:
        raise DataFormatError(path, None, "no ids")
    _check_unique(path, ids, lambda i: i + 1, "line")
    return ids


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _list_column(path: Path, name: str, col: pa.Array) -> np.ndarray:
    """The vectors of a Parquet list column: equal lengths, numbers, finite."""
    t = col.type
    if not pa.types.is_integer(t.value_type) and not pa.types.is_floating(t.value_type):
        raise DataFormatError(
            path, None, f"column {name!r} holds lists of {t.value_type}, expected numbers"
        )
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if lengths[0] == 0:
        raise DataFormatError(path, 1, f"column {name!r}: empty vector", "row")
    uneven = lengths != lengths[0]
    if uneven.any():
        i = int(np.flatnonzero(uneven)[0])
        raise DataFormatError(
            path,
            i + 1,
            f"column {name!r}: {lengths[i]} values, but row 1 has {lengths[0]}",
            "row",
        )
    dim = int(lengths[0])
    flat = col.flatten()
    values = pc.fill_null(pc.cast(flat, pa.float64()), float("nan"))
    values = values.to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            path, i // dim + 1, f"column {name!r}: missing or non-finite value", "row"
        )
    return values.reshape(len(col), dim)


def read_table(path: Path, key: str | None = None) -> tuple[list[str], np.ndarray]:
    """Item ids and float32 vectors of an embeddings table (Parquet, CSV, TSV):
    ``item_id`` plus one list column (``key`` or the only one; Parquet) or only numeric
    columns, whose file order is the vector's."""
    path = Path(path)
    parquet = path.name.lower().endswith(_PARQUET_SUFFIXES)
    if parquet:
        cols = read_parquet(path, [ID_COLUMN], text=(ID_COLUMN,), rest=True)
        first, unit = 1, "row"
    else:
        cols, first = read_delimited(path, required=[ID_COLUMN], rest=True)
        unit = "line"
    ids_arr = pc.utf8_trim_whitespace(cols.pop(ID_COLUMN))
    check_ids(path, ID_COLUMN, ids_arr, first, unit)
    ids = ids_arr.to_pylist()
    for i, x in enumerate(ids):
        if not x:
            raise DataFormatError(path, i + first, f"empty value in column {ID_COLUMN!r}", unit)
    _check_unique(path, ids, lambda i: i + first, unit)
    if not cols:
        raise DataFormatError(path, None, f"no embedding columns besides {ID_COLUMN!r}")
    lists = [c for c, a in cols.items() if _is_list(a.type)]
    if key is not None:
        if key not in lists:
            raise ValueError(f"{path}: --embedding-key {key!r} is no list column; have {lists}")
        lists = [key]
    if len(lists) > 1:
        raise ValueError(f"{path}: several list columns {lists}; pass --embedding-key")
    if lists:
        matrix = _list_column(path, lists[0], cols[lists[0]])
    else:
        matrix = np.column_stack(
            [number_column(path, a, first, f"column {c!r}", unit) for c, a in cols.items()]
        )
    return ids, matrix.astype(np.float32)


def load_keyed_embeddings(
    path: Path, ids_path: Path | None, key: str | None = None
) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) of a table, or of an array file whose row ids are in ``ids_path``."""
    path = Path(path)
    if is_table(path):
        if ids_path is not None:
            raise ValueError(
                f"--embedding-ids: {path} is a table; its ids are its {ID_COLUMN!r} column"
            )
        return read_table(path, key)
    if ids_path is None:
        raise ValueError(f"{path}: rows keyed by item id need --embedding-ids")
    ids = read_ids(Path(ids_path))
    arr = _read_array(path, key, lambda n: n == len(ids))
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise ValueError(
            f"{path}: item embeddings of shape {arr.shape}, expected ({len(ids)}, D): "
            f"one row per id of {ids_path}"
        )
    return ids, arr


def align_embeddings(
    ids: list[str],
    vectors: np.ndarray,
    item_ids: Sequence[str],
    source: Path,
    option: str = "--item-embeddings",
) -> np.ndarray:
    """The vectors of ``item_ids`` (row i = item_ids[i]) looked up by id; items without
    one get zeros, and no match at all is an error (messages name ``option source``)."""
    row = {x: i for i, x in enumerate(ids)}
    idx = np.fromiter((row.get(str(x), -1) for x in item_ids), dtype=np.int64, count=len(item_ids))
    found = idx >= 0
    matched = int(found.sum())
    if matched == 0:
        raise ValueError(
            f"{option} {source}: none of its {len(ids):,} item ids is an item of the "
            f"data (its first id is {ids[0]!r}, the data's first item {str(item_ids[0])!r})"
        )
    out = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    out[found] = vectors[idx[found]]
    if matched < len(item_ids):
        log.warning(
            "%s %s: %d of %d items have no embedding (they get a zero vector)",
            option,
            source,
            len(item_ids) - matched,
            len(item_ids),
        )
    if matched < len(ids):
        log.warning(
            "%s %s: %d of its %d ids are no item of the data (ignored)",
            option,
            source,
            len(ids) - matched,
            len(ids),
        )
    return out


def load_embeddings(
    path: Path,
    num_items: int,
    item_ids: Sequence[str] | None,
    key: str | None = None,
    ids_path: Path | None = None,
) -> np.ndarray:
    """(num_items, D) embeddings of items 1..num_items from ``path`` in either layout;
    ``item_ids`` (their original ids) are needed for the keyed one."""
    path = Path(path)
    if ids_path is None and not is_table(path):
        return load_item_embeddings(path, num_items, key)
    if item_ids is None:
        raise ValueError(f"{path}: embeddings keyed by item id need the items' original ids")
    ids, vectors = load_keyed_embeddings(path, ids_path, key)
    return align_embeddings(ids, vectors, item_ids, path)


class ItemTableSource(Protocol):
    """ID embeddings kept outside the data layer: a trained run's item table
    (:class:`solidrec.runs.model_dir.RunItemTable`, ``prepare --from-run RUN``)."""

    def files(self) -> list[Path]:
        """The files whose contents decide the table (hashed into the fingerprint)."""
        ...

    def identity(self) -> str:
        """Where the table comes from, as recorded in the prepared manifest."""
        ...

    def embeddings(self, item_ids: Sequence[str], key: str | None = None) -> np.ndarray:
        """(len(item_ids), D) rows matched to ``item_ids`` by original item id."""
        ...
