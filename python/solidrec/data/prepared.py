"""The prepared dataset format (docs/DATA.md): its files, manifest and version, the one
writer (:func:`write_prepared`) and reader (:func:`load_prepared`), and Table-6-style
statistics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from solidrec.data.io import content_hash, write_json, write_npz

#: Version of the layout below; bump it when a file or array changes meaning.
# 2: training rows grouped per history (item/label (P, 1 + neg_train)); 1: one row per
# candidate, each history repeated.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ITEMS, USERS, SEMANTIC = "items.npz", "users.npz", "semantic.npz"
TRAIN, VALID, TEST = "train.npz", "valid.npz", "test.npz"
#: The array files, in the order they are written (the manifest is written last).
ARRAY_FILES = (ITEMS, USERS, SEMANTIC, TRAIN, VALID, TEST)
#: Manifest ``params`` key of a degenerate semantic-id result (one id for all items,
#: categories picked from zero embeddings), present only then.
SEMANTIC_WARNING = "semantic_warning"


class PreparedFormatError(FileNotFoundError, ValueError):
    """No prepared dataset this version can read at a path: no manifest, or one of
    another ``format_version``. A ``FileNotFoundError`` (what a missing dataset always
    raised, so every command reports it as before) and a ``ValueError``."""


@dataclass
class TrainSplit:
    """Training samples grouped per history: one row per training position P, its
    candidates in ``item[:, 0]`` (the positive, label 1) then its negatives (label 0).
    A model encodes each history once and scores all of its candidates."""

    user: np.ndarray  # int64 (P,)
    hist: np.ndarray  # int64 (P, L), left-padded with 0, most recent last
    hist_len: np.ndarray  # int64 (P,)
    item: np.ndarray  # int64 (P, C), C = 1 + neg_train
    label: np.ndarray  # float32 (P, C)

    @property
    def rows(self) -> int:
        """(history, candidate) samples: P x C (the paper counts these)."""
        return int(self.label.size)


@dataclass
class EvalSplit:
    """Validation/test rows: one per user; ``candidates[:, 0]`` is the positive."""

    user: np.ndarray  # int64 (U,)
    hist: np.ndarray  # int64 (U, L)
    hist_len: np.ndarray  # int64 (U,)
    candidates: np.ndarray  # int64 (U, 1 + neg_eval)


@dataclass
class PreparedDataset:
    """A prepared dataset (format in docs/DATA.md). Items are 1..num_items (0 = pad),
    users 0..num_users-1, semantic ids 1..num_semantic (0 = pad)."""

    path: Path
    manifest: dict[str, Any]
    semantic_id: np.ndarray  # int64 (num_items + 1,), [0] = 0
    item_original_id: np.ndarray  # str (num_items + 1,), [0] = ""
    item_title: np.ndarray | None  # str (num_items + 1,) or None
    semantic_name: np.ndarray  # str (num_semantic + 1,), [0] = "<pad>"
    user_original_id: np.ndarray  # str (num_users,)
    train: TrainSplit
    valid: EvalSplit
    test: EvalSplit
    # float32 (num_items + 1, E), [0] = 0: item embeddings stored as a model input
    # (``prepare --embedding-feature``), or None.
    item_embedding: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        return len(self.semantic_id) - 1

    @property
    def num_users(self) -> int:
        return len(self.user_original_id)

    @property
    def num_semantic(self) -> int:
        return len(self.semantic_name) - 1

    @property
    def history_len(self) -> int:
        return int(self.train.hist.shape[1])

    def with_history(self, length: int, what: str = "length") -> PreparedDataset:
        """The same dataset with each history cut to its ``length`` most recent items
        (views, no copy): the same rows, candidates and labels as preparing with
        ``--history-len length``. ``length`` 0 or the prepared length returns ``self``;
        above the prepared length raises ValueError naming ``what``."""
        if length == 0 or length == self.history_len:
            return self
        if not 0 < length < self.history_len:
            raise ValueError(
                f"{what} must be in 1..{self.history_len} (the history length {self.path} "
                f"was prepared with), or 0 for all of it; got {length}: prepare again with "
                f"--history-len {max(length, 1)} to read longer histories"
            )

        def cut(split: Any) -> Any:
            return dataclasses.replace(
                split,
                hist=split.hist[:, -length:],
                hist_len=np.minimum(split.hist_len, length),
            )

        return dataclasses.replace(
            self, train=cut(self.train), valid=cut(self.valid), test=cut(self.test)
        )


def _arrays(split: TrainSplit | EvalSplit) -> dict[str, np.ndarray]:
    """A split's fields as a dict, without copying (unlike ``asdict``)."""
    return {f.name: getattr(split, f.name) for f in dataclasses.fields(split)}


def dataset_fingerprint(source: dict[str, Any], params: dict[str, Any]) -> str:
    """What identifies a prepared dataset before it is built: the format version, the
    source (input names and contents) and the parameters."""
    blob = json.dumps({"v": FORMAT_VERSION, "source": source, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_prepared(
    out_dir: str | Path,
    *,
    semantic_id: np.ndarray,
    item_original_id: np.ndarray,
    item_title: np.ndarray | None,
    semantic_name: np.ndarray,
    user_original_id: np.ndarray,
    train: TrainSplit,
    valid: EvalSplit,
    test: EvalSplit,
    item_embedding: np.ndarray | None = None,
    interactions: int,
    name: str,
    source: dict[str, Any],
    params: dict[str, Any],
    fingerprint: str,
) -> dict[str, Any]:
    """Write a prepared dataset into the existing directory ``out_dir`` and return its
    manifest. The arrays are :class:`PreparedDataset`'s fields; ``interactions`` is the
    number of interactions kept, ``fingerprint`` what :func:`dataset_fingerprint` gave
    for ``source`` and ``params``. The manifest is written last; write into
    :func:`~solidrec.data.io.atomic_directory` so a crash leaves no half dataset."""
    d = Path(out_dir)
    items = {"semantic_id": semantic_id, "original_id": item_original_id}
    if item_title is not None:
        items["title"] = item_title
    if item_embedding is not None:
        items["embedding"] = item_embedding
    write_npz(d / ITEMS, items)
    write_npz(d / USERS, {"original_id": user_original_id})
    write_npz(d / SEMANTIC, {"name": semantic_name})
    write_npz(d / TRAIN, _arrays(train))
    write_npz(d / VALID, _arrays(valid))
    write_npz(d / TEST, _arrays(test))
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source": source,
        "params": params,
        "counts": {
            "users": len(user_original_id),
            "items": len(semantic_id) - 1,
            "interactions": int(interactions),
            "semantic_ids": len(semantic_name) - 1,
            "train_positives": int(np.count_nonzero(train.label)),
            "train_rows": train.rows,
            "valid_rows": len(valid.user),
            "test_rows": len(test.user),
        },
        "files": list(ARRAY_FILES),
        "fingerprint": fingerprint,
        "content_hash": content_hash(d, list(ARRAY_FILES)),
    }
    write_json(d / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset; :class:`PreparedFormatError` if there is none
    or it was written for another ``format_version``."""
    d = Path(directory)
    mpath = d / MANIFEST
    if not mpath.exists():
        raise PreparedFormatError(
            f"{d}: no {MANIFEST} (not a prepared dataset, or preparation did not finish)"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PreparedFormatError(f"{mpath}: unreadable manifest ({e})") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        found = "no format_version" if version is None else f"format_version {version!r}"
        raise PreparedFormatError(
            f"{d}: prepared dataset with {found}; this solidrec reads format_version "
            f"{FORMAT_VERSION}. Prepare it again (solidrec prepare ... --force)"
        )
    return manifest


def is_up_to_date(directory: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest if ``directory`` holds a complete, undamaged dataset with this
    fingerprint (every array file present and matching ``content_hash``), else None."""
    d = Path(directory)
    try:
        manifest = read_manifest(d)
    except OSError:  # no manifest, another version, or unreadable
        return None
    if manifest.get("fingerprint") != fingerprint or _damage(d, manifest) is not None:
        return None
    return manifest


def _damage(d: Path, manifest: dict[str, Any]) -> str | None:
    """What is wrong with a dataset's array files against its manifest, or None: a file
    missing, or contents that do not match ``content_hash`` (one sha256 pass)."""
    missing = [f for f in ARRAY_FILES if not (d / f).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    if content_hash(d, list(ARRAY_FILES)) != manifest.get("content_hash"):
        return (
            "its array files do not match the manifest's content_hash (damaged or edited "
            "since it was prepared)"
        )
    return None


def check_target(
    out: str | Path, inputs: list[Path], fingerprint: str, force: bool = False
) -> str | None:
    """Refuse an ``out`` whose contents preparing it would destroy; return a note when it
    replaces a dataset prepared from other inputs or settings (which needs ``force``).

    ``prepare`` writes a new directory and swaps it in, so everything in ``out`` goes:
    allowed only where ``out`` is absent, empty or a prepared dataset holding nothing
    but the files prepare writes, and never where it holds one of the ``inputs``.
    """
    d = Path(out)
    target = d.resolve()
    for f in inputs:
        if f.resolve() == target or target in f.resolve().parents:
            raise ValueError(
                f"--out {d} contains the input {f}: preparing there would delete it; "
                "choose another --out (e.g. a new folder beside it)"
            )
    if not d.exists() and not d.is_symlink():
        return None
    if not d.is_dir() or d.is_symlink():
        raise ValueError(f"--out {d} exists and is not a directory; choose another --out")
    entries = sorted(p.name for p in d.iterdir())
    if not entries:
        return None
    ours = {*ARRAY_FILES, MANIFEST}
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        if not isinstance(manifest, dict) or "format_version" not in manifest:
            raise ValueError("not a manifest of a prepared dataset")
    except (OSError, ValueError):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(
            f"--out {d} is not empty ({shown}) and is not a prepared dataset; prepare "
            "writes a whole directory and would delete them: choose a new or empty --out"
        ) from None
    foreign = [e for e in entries if e not in ours]
    if foreign:
        raise ValueError(
            f"--out {d} is a prepared dataset that also holds files prepare did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); replacing it "
            "would delete them: move them out or choose another --out"
        )
    if manifest.get("fingerprint") == fingerprint:
        return None  # the same dataset: rebuilt only if damaged or with --force
    files = (manifest.get("source") or {}).get("files") or []
    names = ", ".join(str(Path(str(f.get("path", "?"))).name) for f in files if isinstance(f, dict))
    what = f"a dataset prepared from {names or 'other inputs'}"
    if manifest.get("format_version") != FORMAT_VERSION:
        what += f" (format_version {manifest.get('format_version')!r})"
    if not force:
        raise ValueError(
            f"--out {d} holds {what} with other inputs or settings; pass --force to "
            "replace it, or choose another --out"
        )
    return f"replacing {d}, {what}"


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_prepared(directory: str | Path, verify: bool = True) -> PreparedDataset:
    """Load a directory written by :func:`write_prepared` (``solidrec prepare``).

    ``verify`` (the default) first checks every array file against the manifest's
    ``content_hash`` (one sha256 pass over the files: about 0.1 s for Scientific, a few
    seconds per GB) and then the arrays' values (:func:`check_values`), so a damaged or
    edited dataset is refused, naming the file, before a run trains or evaluates on it.
    """
    d = Path(directory)
    manifest = read_manifest(d)
    if verify and (damage := _damage(d, manifest)) is not None:
        raise PreparedFormatError(f"{d}: {damage}; prepare it again (solidrec prepare ... --force)")
    try:
        ds = _read(d, manifest)
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise PreparedFormatError(f"{d}: unreadable prepared dataset ({e})") from None
    if verify:
        check_values(ds)
    return ds


def _read(d: Path, manifest: dict[str, Any]) -> PreparedDataset:
    items = _load(d / ITEMS)
    return PreparedDataset(
        path=d,
        manifest=manifest,
        semantic_id=items["semantic_id"],
        item_original_id=items["original_id"],
        item_title=items.get("title"),
        semantic_name=_load(d / SEMANTIC)["name"],
        user_original_id=_load(d / USERS)["original_id"],
        train=TrainSplit(**_load(d / TRAIN)),
        valid=EvalSplit(**_load(d / VALID)),
        test=EvalSplit(**_load(d / TEST)),
        item_embedding=items.get("embedding"),
    )


def check_values(ds: PreparedDataset) -> None:
    """PreparedFormatError naming the file and array on a value no run can use: an index
    out of range, a history length that disagrees with its row, an evaluation row whose
    candidates repeat (column 0, the positive, must be unlike every negative), a
    non-finite item embedding. Vectorised: a fraction of the load time."""
    n, s = ds.num_items, ds.num_semantic

    def bad(file: str, what: str) -> PreparedFormatError:
        return PreparedFormatError(f"{ds.path / file}: {what} (prepare it again)")

    sid = ds.semantic_id
    if sid.ndim != 1 or sid[0] != 0 or (len(sid) > 1 and not (sid[1:] >= 1).all()):
        raise bad(ITEMS, "semantic_id must be 0 for padding and 1.. for items")
    if (sid > s).any():
        raise bad(ITEMS, f"semantic_id holds ids above the {s} semantic ids")
    if len(ds.item_original_id) != n + 1:
        raise bad(ITEMS, "original_id and semantic_id disagree in length")
    if ds.item_embedding is not None and not np.isfinite(ds.item_embedding).all():
        raise bad(ITEMS, "embedding holds NaN or infinity")
    for file, split, cand in (
        (TRAIN, ds.train, ds.train.item),
        (VALID, ds.valid, ds.valid.candidates),
        (TEST, ds.test, ds.test.candidates),
    ):
        h, hl = split.hist, split.hist_len
        if h.ndim != 2 or len(h) != len(hl) or len(h) != len(cand) or len(h) != len(split.user):
            raise bad(file, "arrays disagree in rows")
        if h.size and (h.min() < 0 or h.max() > n):
            raise bad(file, f"hist holds item indices outside 0..{n}")
        if cand.size and (cand.min() < 1 or cand.max() > n):
            raise bad(file, f"candidates hold item indices outside 1..{n}")
        if len(split.user) and (split.user.min() < 0 or split.user.max() >= ds.num_users):
            raise bad(file, f"user holds indices outside 0..{ds.num_users - 1}")
        if hl.size and (hl.min() < 0 or hl.max() > h.shape[1]):
            raise bad(file, f"hist_len outside 0..{h.shape[1]}")
        if cand.ndim == 2 and cand.shape[1] > 1 and _any_row_repeats(cand):
            raise bad(file, "a row's candidates repeat an item (the positive must differ "
                      "from every negative)")  # fmt: skip
    if ds.train.label.shape != ds.train.item.shape:
        raise bad(TRAIN, "label and item disagree in shape")


def _any_row_repeats(rows: np.ndarray, block: int = 1 << 16) -> bool:
    """Whether any row holds a value twice; sorted a block of rows at a time, so the
    check never doubles the memory of a catalog-scale split."""
    for i in range(0, len(rows), block):
        ordered = np.sort(rows[i : i + block], axis=1)
        if (ordered[:, 1:] == ordered[:, :-1]).any():
            return True
    return False


def dataset_stats(directory: str | Path) -> dict[str, Any]:
    """Table-6-style statistics from a prepared dataset's manifest."""
    manifest = read_manifest(directory)
    c = manifest["counts"]
    users, items, inter = c["users"], c["items"], c["interactions"]
    return {
        "dataset": manifest.get("name", Path(directory).name),
        "users": users,
        "items": items,
        "interactions": inter,
        "density": inter / (users * items) if users and items else 0.0,
        "semantic_ids": c["semantic_ids"],
        "avg_seq_len": inter / users if users else 0.0,
        "train_rows": c["train_rows"],
        "train_positives": c["train_positives"],
        "valid_rows": c["valid_rows"],
        "test_rows": c["test_rows"],
        "history_len": manifest["params"]["history_len"],
        "semantic_method": manifest["params"].get("semantic_method_used"),
        "semantic_warning": manifest["params"].get(SEMANTIC_WARNING),
    }


def format_stats(s: dict[str, Any]) -> str:
    """A Table-6-style text table."""
    head = ["Dataset", "#User", "#Item", "#Interaction", "Density", "#Semantic"]
    row = [
        str(s["dataset"]),
        f"{s['users']:,}",
        f"{s['items']:,}",
        f"{s['interactions']:,}",
        f"{s['density']:.7f}",
        f"{s['semantic_ids']:,}",
    ]
    w = [max(len(a), len(b)) for a, b in zip(head, row, strict=True)]
    lines = [
        "  ".join(h.ljust(n) for h, n in zip(head, w, strict=True)),
        "  ".join(r.ljust(n) for r, n in zip(row, w, strict=True)),
    ]
    lines.append(
        f"samples: train {s['train_rows']:,} rows ({s['train_positives']:,} positives), "
        f"valid {s['valid_rows']:,}, test {s['test_rows']:,}; history length {s['history_len']}; "
        f"semantic ids by {s['semantic_method']}"
    )
    return "\n".join(lines)
