"""Loading a prepared dataset directory, and its Table-6-style statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrainSplit:
    """Training rows: each positive (label 1) followed by its negatives (label 0)."""

    user: np.ndarray  # int64 (N,)
    hist: np.ndarray  # int64 (N, L), left-padded with 0, most recent last
    hist_len: np.ndarray  # int64 (N,)
    item: np.ndarray  # int64 (N,)
    label: np.ndarray  # float32 (N,)


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


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_prepared(directory: str | Path) -> PreparedDataset:
    """Load a directory written by ``solidrec prepare``."""
    d = Path(directory)
    mpath = d / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(
            f"{d}: no manifest.json (not a prepared dataset, or preparation did not finish)"
        )
    manifest = json.loads(mpath.read_text())
    items = _load(d / "items.npz")
    return PreparedDataset(
        path=d,
        manifest=manifest,
        semantic_id=items["semantic_id"],
        item_original_id=items["original_id"],
        item_title=items.get("title"),
        semantic_name=_load(d / "semantic.npz")["name"],
        user_original_id=_load(d / "users.npz")["original_id"],
        train=TrainSplit(**_load(d / "train.npz")),
        valid=EvalSplit(**_load(d / "valid.npz")),
        test=EvalSplit(**_load(d / "test.npz")),
    )


def dataset_stats(directory: str | Path) -> dict[str, Any]:
    """Table-6-style statistics from a prepared dataset's manifest."""
    manifest = json.loads((Path(directory) / "manifest.json").read_text())
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
