"""Ranking metrics under two protocols, and the one list of their names.

- ``sampled`` (the paper's, §4.1.3): each user's held-out item among 1 + 99 sampled
  negatives (the prepared split's candidates).
- ``full`` (the field's today, e.g. RecBole's default): the held-out item's exact rank
  among every item, the user's seen items left out (:func:`full_ranking_metrics`; keys
  prefixed ``full_``).

Conventions of the sampled protocol (documented, tested):
- ``auc``: pooled over every (user, candidate) score; ties count 1/2.
- ``uauc``: mean over users of the per-user AUC; a user whose candidates are all one
  class has no AUC and is skipped (the count is reported as ``uauc_users``).
- ``ndcg@K`` / ``recall@K``: candidates sorted by descending score; a positive tied
  with a negative is ranked *after* it (pessimistic), so a constant scorer never looks
  good. Recall@K = positives in the top K / positives; NDCG@K = DCG@K / ideal DCG@K.
"""

from __future__ import annotations

import numpy as np

#: The metrics of the sampled protocol (training log, metrics.json, ``solidrec
#: evaluate``, ``solidrec report``), in the column order of the paper's Table 1.
METRIC_KEYS = ("auc", "uauc", "ndcg@10", "recall@10", "ndcg@20", "recall@20")
#: Cut-offs of the full-ranking protocol.
FULL_KS = (5, 10, 20)
#: The metrics of the full-ranking protocol: Recall@K (= HR@K: one held-out item),
#: NDCG@K and MRR@K for K in FULL_KS.
FULL_METRIC_KEYS = tuple(f"full_{m}@{k}" for k in FULL_KS for m in ("recall", "ndcg", "mrr"))
#: Each protocol's metric keys, and what its numbers are computed over (said wherever
#: they are shown).
PROTOCOL_KEYS = {"sampled": METRIC_KEYS, "full": FULL_METRIC_KEYS}
PROTOCOLS = {
    "sampled": "the held-out item among 1 + the split's sampled negatives (the paper's protocol)",
    "full": "the held-out item's rank among all items, the user's earlier items left out, "
    "ties counted against it",
}
#: ``train.eval_protocol`` / ``evaluate --protocol`` values.
PROTOCOL_CHOICES = ("sampled", "full", "both")


def protocols_of(choice: str) -> tuple[str, ...]:
    """The protocols a PROTOCOL_CHOICES value evaluates."""
    if choice not in PROTOCOL_CHOICES:
        raise ValueError(f"protocol must be one of {PROTOCOL_CHOICES}, got {choice!r}")
    return ("sampled", "full") if choice == "both" else (choice,)


def metric_keys(choice: str) -> tuple[str, ...]:
    """Metric keys a PROTOCOL_CHOICES value reports, sampled first."""
    return tuple(k for p in protocols_of(choice) for k in PROTOCOL_KEYS[p])


def protocol_of_key(key: str) -> str:
    """The protocol a metric key belongs to; ValueError for an unknown key."""
    for p, keys in PROTOCOL_KEYS.items():
        if key in keys:
            return p
    known = ", ".join(k for keys in PROTOCOL_KEYS.values() for k in keys)
    raise ValueError(f"unknown metric {key!r}; known: {known}")


def full_ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR@K (K in FULL_KS) of each user's held-out item at
    ``ranks`` (U,) (1 = first; one relevant item per user, so the ideal DCG is 1):
    Recall@K = [r <= K], NDCG@K = [r <= K] / log2(r + 1), MRR@K = [r <= K] / r, each
    averaged over users. Also ``full_users`` (U)."""
    r = np.asarray(ranks, np.float64).ravel()
    if r.size and (np.isnan(r).any() or r.min() < 1):
        raise ValueError("ranks must be >= 1 (1 = the first place)")
    out: dict[str, float] = {}
    for k in FULL_KS:
        hit = r <= k
        mean = (lambda x: float(x.mean())) if r.size else (lambda x: float("nan"))
        out[f"full_recall@{k}"] = mean(hit.astype(np.float64))
        out[f"full_ndcg@{k}"] = mean(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0))
        out[f"full_mrr@{k}"] = mean(np.where(hit, 1.0 / r, 0.0))
    out["full_users"] = int(r.size)
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Boundaries of runs of equal values.
    start = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    end = np.r_[start[1:], len(xs)]
    avg = (start + end + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, end - start)
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Pooled ROC AUC (Mann-Whitney with tie correction); NaN if one class only."""
    s, y = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel() > 0
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def user_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row AUC of (U, C) scores/labels; NaN for rows with one class. Vectorised when
    every row has exactly one positive (the evaluation protocol's candidate lists)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels) > 0
    if s.ndim == 2 and np.all(y.sum(1) == 1):
        return _user_auc_one_positive(s, y.astype(np.float64))
    out = np.full(s.shape[0], np.nan)
    for i in range(s.shape[0]):
        out[i] = auc(s[i], y[i])
    return out


def _user_auc_one_positive(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row AUC when each row has exactly one positive (vectorised)."""
    pos = (scores * labels).sum(1, keepdims=True)
    neg = labels == 0
    gt = ((pos > scores) & neg).sum(1)
    eq = ((pos == scores) & neg).sum(1)
    return (gt + 0.5 * eq) / neg.sum(1)


def ranking_metrics(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> dict:
    """All metrics of (U, C) ``scores`` against 0/1 ``labels``.

    Returns ``auc, uauc, uauc_users, ndcg@K, recall@K`` for each K.
    """
    s = np.asarray(scores, np.float64)
    y = (np.asarray(labels) > 0).astype(np.float64)
    npos = y.sum(1)
    ua = user_auc(s, y)
    valid = ~np.isnan(ua)
    out = {
        "auc": auc(s, y),
        "uauc": float(ua[valid].mean()) if valid.any() else float("nan"),
        "uauc_users": int(valid.sum()),
    }
    # Sort by score descending, and on ties negatives first (pessimistic).
    order = np.lexsort((y, -s), axis=1)
    ys = np.take_along_axis(y, order, 1)
    has = npos > 0
    for k in ks:
        disc = 1.0 / np.log2(np.arange(2, k + 2))
        dcg = (ys[:, :k] * disc[: ys[:, :k].shape[1]]).sum(1)
        ideal = np.array([disc[: int(min(n, k))].sum() for n in npos])
        out[f"ndcg@{k}"] = float((dcg[has] / ideal[has]).mean()) if has.any() else float("nan")
        out[f"recall@{k}"] = (
            float((ys[:, :k].sum(1)[has] / npos[has]).mean()) if has.any() else float("nan")
        )
    return out


def variance_summary(per_user_var: np.ndarray) -> dict:
    """Table 4's aggregate of per-user variances: median, mean, min, max."""
    v = np.asarray(per_user_var, np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {
            "median": float("nan"),
            "mean": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
        }
    return {
        "median": float(np.median(v)),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
    }
