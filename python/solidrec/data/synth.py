"""Synthetic interaction logs in the generic format (vectorised, seeded).

Items belong to leaf categories arranged under departments (paths ``Synthetic >
Department > Leaf``) and have titles built from their category's words. Each user has
an interest that drifts: it starts on a random leaf and, at each interaction, steps to
a neighbouring leaf on a ring of leaves with probability ``drift`` (so interests move
between related categories); items are drawn from the current leaf by a Zipf
popularity, with a ``noise`` fraction drawn from all items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_DEPARTMENTS = [
    "Lab",
    "Home",
    "Garden",
    "Audio",
    "Office",
    "Sports",
    "Toys",
    "Auto",
    "Tools",
    "Books",
    "Music",
    "Health",
]
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "to",
    "vi",
    "zu",
    "per",
    "dan",
    "gol",
    "tri",
    "qua",
    "bel",
    "nor",
]


@dataclass(frozen=True)
class SynthConfig:
    """Size and shape of a synthetic dataset."""

    users: int = 2000
    items: int = 1000
    departments: int = 4
    leaves_per_department: int = 6
    mean_len: float = 12.0  # mean interactions per user
    min_len: int = 5
    drift: float = 0.15
    noise: float = 0.05
    zipf: float = 1.0
    unlabeled: float = 0.03  # fraction of items without categories
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1 or self.min_len < 1 or self.mean_len < self.min_len:
            raise ValueError("need users >= 1, items >= 1, 1 <= min_len <= mean_len")


@dataclass
class SynthData:
    user: np.ndarray  # int64 (n,) user numbers
    item: np.ndarray  # int64 (n,) item numbers
    timestamp: np.ndarray  # int64 (n,)
    titles: list[str]
    paths: list[list[str]]  # per item, root first; [] = unlabeled


def _segment_cumsum(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    cs = np.cumsum(x)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return cs - cs[starts] + x[starts]


def _word(rng: np.random.Generator, n: int) -> str:
    return "".join(_SYLLABLES[i] for i in rng.integers(len(_SYLLABLES), size=n)).capitalize()


def generate(cfg: SynthConfig) -> SynthData:
    """Generate a dataset in memory (rows sorted by timestamp)."""
    rng = np.random.default_rng(cfg.seed)
    n_dep = min(cfg.departments, len(_DEPARTMENTS))
    k = n_dep * cfg.leaves_per_department
    if cfg.items < k:
        raise ValueError(f"need at least one item per leaf category ({k})")
    leaf_names = [_word(rng, 2) for _ in range(k)]
    leaf_words = [[_word(rng, 2).lower() for _ in range(4)] for _ in range(k)]
    brands = [_word(rng, 2) for _ in range(64)]

    # items: category, popularity within the category, title, path
    item_cat = rng.permutation(cfg.items) % k
    rank = np.empty(cfg.items, dtype=np.int64)
    order = np.lexsort((rng.random(cfg.items), item_cat))
    counts = np.bincount(item_cat, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(cfg.items) - np.repeat(starts, counts)
    weight = 1.0 / (rank + 1.0) ** cfg.zipf
    cdf = np.cumsum(weight[order])
    base = np.concatenate([[0.0], cdf])[starts]
    total = np.concatenate([[0.0], cdf])[starts + counts] - base

    w_choice = rng.integers(4, size=(cfg.items, 2))
    brand = rng.integers(len(brands), size=cfg.items)
    model = rng.integers(100, 1000, size=cfg.items)
    no_label = rng.random(cfg.items) < cfg.unlabeled
    titles, paths = [], []
    for i in range(cfg.items):
        c = int(item_cat[i])
        words = leaf_words[c]
        titles.append(
            f"{brands[brand[i]]} {words[w_choice[i, 0]]} {words[w_choice[i, 1]]} "
            f"{leaf_names[c].lower()} {model[i]}"
        )
        dep = _DEPARTMENTS[c // cfg.leaves_per_department]
        paths.append([] if no_label[i] else ["Synthetic", dep, f"{dep} {leaf_names[c]}"])

    # users: sequence lengths, drifting interest, items
    extra = cfg.mean_len - cfg.min_len
    lengths = cfg.min_len + (
        rng.geometric(1.0 / (extra + 1.0), size=cfg.users) - 1 if extra > 0 else 0
    )
    lengths = np.asarray(lengths, dtype=np.int64)
    n = int(lengths.sum())
    user = np.repeat(np.arange(cfg.users, dtype=np.int64), lengths)
    step = rng.choice(np.array([-1, 0, 1]), size=n, p=[cfg.drift / 2, 1 - cfg.drift, cfg.drift / 2])
    step[np.cumsum(lengths) - lengths] = 0
    start_cat = rng.integers(k, size=cfg.users)
    cat = (start_cat[user] + _segment_cumsum(step.astype(np.int64), lengths)) % k
    u = rng.random(n)
    pos = np.searchsorted(cdf, base[cat] + u * total[cat], side="right")
    pos = np.clip(pos, starts[cat], starts[cat] + counts[cat] - 1)
    item = order[pos]
    noisy = rng.random(n) < cfg.noise
    item[noisy] = rng.integers(cfg.items, size=int(noisy.sum()))

    t0 = 1_500_000_000 + rng.integers(0, 3 * 365 * 86400, size=cfg.users)
    gaps = rng.exponential(2 * 86400, size=n).astype(np.int64) + 1
    ts = t0[user] + _segment_cumsum(gaps, lengths)
    by_time = np.lexsort((np.arange(n), ts))
    return SynthData(user[by_time], item[by_time].astype(np.int64), ts[by_time], titles, paths)


def write_generic(
    data: SynthData, out: Path, interactions_format: str = "csv"
) -> tuple[Path, Path]:
    """Write ``interactions.{csv,tsv,parquet}`` (user_id,item_id,timestamp) and
    ``items.jsonl`` (item_id,title,categories) into ``out``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    user_tok = pc.binary_join_element_wise(
        "u", pc.utf8_lpad(pc.cast(pa.array(data.user), pa.string()), 7, "0"), ""
    )
    item_tok = pc.binary_join_element_wise(
        "i", pc.utf8_lpad(pc.cast(pa.array(data.item), pa.string()), 6, "0"), ""
    )
    table = pa.table(
        {"user_id": user_tok, "item_id": item_tok, "timestamp": pa.array(data.timestamp)}
    )
    inter = out / f"interactions.{interactions_format}"
    if interactions_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, inter)
    elif interactions_format in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        opts = pacsv.WriteOptions(
            delimiter="," if interactions_format == "csv" else "\t", quoting_style="none"
        )
        pacsv.write_csv(table, inter, write_options=opts)
    else:
        raise ValueError(f"unknown interactions format {interactions_format!r}")
    items = out / "items.jsonl"
    with open(items, "w", encoding="utf-8") as f:
        for i, (title, path) in enumerate(zip(data.titles, data.paths, strict=True)):
            f.write(json.dumps({"item_id": f"i{i:06d}", "title": title, "categories": path}) + "\n")
    return inter, items
