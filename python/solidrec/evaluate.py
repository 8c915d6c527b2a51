"""Evaluation: candidate scores, the metrics of a split under the sampled and full-ranking
protocols (``solidrec.metrics``), the stability (Table 4) and cost (Table 5) measures,
and a run directory's selected model.

Used by the training loop (validation each epoch, the test split once) and by
``solidrec evaluate``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from solidrec.config import resolve_device
from solidrec.data.io import write_npz
from solidrec.data.prepared import EvalSplit, PreparedDataset
from solidrec.metrics import (
    full_ranking_metrics,
    metric_keys,
    protocols_of,
    ranking_metrics,
    user_auc,
    variance_summary,
)
from solidrec.models import SolidModel, count_parameters
from solidrec.runs.load import load_run


@torch.no_grad()
def predict(
    model: SolidModel,
    split: EvalSplit,
    batch: int,
    device: torch.device,
    hist: np.ndarray | None = None,
) -> np.ndarray:
    """Scores (U, C) of each user's candidates (column 0 is the positive); ``hist``
    replaces the split's histories."""
    was = model.training
    model.eval()
    h_all = torch.from_numpy(split.hist if hist is None else hist)
    c_all = torch.from_numpy(split.candidates)
    out = []
    for i in range(0, len(c_all), batch):
        logits, _ = model(h_all[i : i + batch].to(device), c_all[i : i + batch].to(device))
        out.append(logits.float().cpu())
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(c_all.shape, np.float32)


def _labels(scores: np.ndarray) -> np.ndarray:
    """0/1 labels of a split's scores: the positive is column 0."""
    labels = np.zeros(scores.shape)
    labels[:, 0] = 1
    return labels


def write_ranks(
    path: Path, data: PreparedDataset, split: EvalSplit, ranks: dict[str, np.ndarray]
) -> None:
    """Each user's rank of the held-out item under each protocol evaluated, for paired
    significance tests between runs: ``user`` (original ids), ``item`` (the held-out
    item's original id) and one int64 array per protocol (``sampled``, ``full``)."""
    write_npz(
        Path(path),
        {
            "user": data.user_original_id[split.user],
            "item": data.item_original_id[split.candidates[:, 0]],
            **{p: np.asarray(r, np.int64) for p, r in ranks.items()},
        },
    )


def seen_items(data: PreparedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The items each user met before ``split``'s held-out item, as CSR ``(indptr
    (num_users + 1,), items)`` of model item ids (1..N), sorted per user: every
    training item (the positives, and the first training row's history, which holds
    the items before the first positive), the validation item for ``test``, and the
    split's own history. Full-ranking evaluation leaves these out of the ranking."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    tr, ev = data.train, getattr(data, split)
    users = [tr.user, np.repeat(ev.user, ev.hist.shape[1])]
    items = [tr.item[:, 0], ev.hist.ravel()]
    if len(tr.user):
        _, first = np.unique(tr.user, return_index=True)
        users.append(np.repeat(tr.user[first], tr.hist.shape[1]))
        items.append(tr.hist[first].ravel())
    if split == "test":
        users.append(data.valid.user)
        items.append(data.valid.candidates[:, 0])
    u = np.concatenate(users).astype(np.int64)
    it = np.concatenate(items).astype(np.int64)
    keep = it > 0  # 0 pads histories
    key = np.unique(u[keep] * (data.num_items + 1) + it[keep])
    u, it = np.divmod(key, data.num_items + 1)
    indptr = np.zeros(data.num_users + 1, np.int64)
    np.cumsum(np.bincount(u, minlength=data.num_users), out=indptr[1:])
    return indptr, it


def no_items(num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty :func:`seen_items` (full ranking that keeps every item)."""
    return np.zeros(num_users + 1, np.int64), np.zeros(0, np.int64)


def _exclusions(seen: tuple[np.ndarray, np.ndarray], users: np.ndarray) -> torch.Tensor:
    """(B, E) table rows (item id - 1) each user leaves out, -1 padded."""
    indptr, items = seen
    start, count = indptr[users], indptr[users + 1] - indptr[users]
    e = int(count.max()) if len(users) else 0
    out = np.full((len(users), e), -1, np.int64)
    col = np.arange(e)
    mask = col[None, :] < count[:, None]
    out[mask] = items[(start[:, None] + col[None, :])[mask]] - 1
    return torch.from_numpy(out)


@torch.no_grad()
def full_ranks(
    model: SolidModel,
    split: EvalSplit,
    batch: int,
    device: torch.device,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Each user's held-out item's exact rank among all items (U,) int64, 1 = first,
    ties counted against it, the ``seen`` items (:func:`seen_items`; None keeps them)
    left out. One user pass per batch and ``solid_ext.ops.score_ranks`` against the
    item table (no (B, N) score matrix); a target-dependent backbone (DIN) scores
    every (user, item) pair through its attention, chunked: B x N pair evaluations."""
    from solid_ext.ops import score_ranks
    from solid_ext.reference import ranks_from_scores

    was = model.training
    model.eval()
    dep = model.backbone.target_dependent
    table = None if dep else model.item_table().detach()
    out = []
    for i in range(0, len(split.user), batch):
        hist = torch.from_numpy(split.hist[i : i + batch]).to(device)
        target = torch.from_numpy(split.candidates[i : i + batch, 0] - 1).to(device)
        ex = _exclusions(seen, split.user[i : i + batch]).to(device) if seen else None
        if dep:
            scores = model.score_all(hist)[:, 1:].float()
            out.append(ranks_from_scores(scores, target, ex).cpu())
        else:
            user = model(hist, None, return_user=True)[0]
            out.append(score_ranks(user.to(table.dtype), table, target, ex).cpu())
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def sampled_ranks(scores: np.ndarray) -> np.ndarray:
    """The positive's (column 0) rank among each row's candidates, ties against it."""
    return 1 + (scores[:, 1:] >= scores[:, :1]).sum(1)


def evaluate_protocols(
    model: SolidModel,
    split: EvalSplit,
    batch: int,
    device: torch.device,
    protocol: str = "sampled",
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The metrics of ``protocol`` (``sampled``, ``full`` or ``both``; keys of
    :func:`solidrec.metrics.metric_keys`) and each user's rank of the held-out item
    under each protocol evaluated (``{"sampled": (U,), "full": (U,)}``). ``seen``
    (:func:`seen_items`) is what full ranking leaves out; required for it."""
    metrics: dict[str, float] = {}
    ranks: dict[str, np.ndarray] = {}
    for p in protocols_of(protocol):
        if p == "sampled":
            scores = predict(model, split, batch, device)
            metrics.update(ranking_metrics(scores, _labels(scores)))
            ranks[p] = sampled_ranks(scores)
        else:
            if seen is None:
                raise ValueError("full-ranking evaluation needs the seen items (seen_items)")
            ranks[p] = full_ranks(model, split, batch, device, seen)
            metrics.update(full_ranking_metrics(ranks[p]))
    return metrics, ranks


def evaluate_split(
    model: SolidModel,
    split: EvalSplit,
    batch: int,
    device: torch.device,
    protocol: str = "sampled",
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """The metrics of :func:`evaluate_protocols` (sampled: AUC, UAUC, NDCG@10/20,
    Recall@10/20 over the split's 1 + N candidates per user)."""
    return evaluate_protocols(model, split, batch, device, protocol, seen)[0]


def evaluate_with_cost(
    model: SolidModel,
    split: EvalSplit,
    batch: int,
    device: torch.device,
    protocol: str = "sampled",
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """:func:`evaluate_protocols` and Table 5's cost of that pass: ``params``,
    ``s_per_test_batch`` (wall seconds per batch of ``test_batch_users`` users).
    Returns (metrics, cost, ranks)."""
    t0 = time.perf_counter()
    metrics, ranks = evaluate_protocols(model, split, batch, device, protocol, seen)
    seconds = time.perf_counter() - t0
    batches = max(1, math.ceil(len(split.user) / batch))
    cost = {
        "params": count_parameters(model),
        "s_per_test_batch": seconds / batches,
        "test_batch_users": batch,
    }
    return metrics, cost, ranks


@torch.no_grad()
def stability(
    model: SolidModel,
    split: EvalSplit,
    max_users: int,
    batch: int = 256,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Table 4: for each user, add the history's behaviours one at a time (prefixes of
    length 1..L ending at the oldest kept item, i.e. histories growing toward the
    present), score the candidates after each addition, and take the variance of that
    user's AUC across the additions; aggregate median/mean/min/max over users."""
    n = min(max_users, len(split.user))
    hist = split.hist[:n]
    lens = split.hist_len[:n]
    L = hist.shape[1]
    sub = dataclasses.replace(
        split, user=split.user[:n], hist=hist, hist_len=lens, candidates=split.candidates[:n]
    )
    aucs = []
    for k in range(1, L + 1):
        # Keep the first k real behaviours (oldest first), left-padded again.
        h = np.zeros_like(hist)
        for i in range(n):
            real = hist[i, L - lens[i] :]
            keep = real[: min(k, len(real))]
            if len(keep):
                h[i, L - len(keep) :] = keep
        scores = predict(model, sub, batch, device or _device_of(model), hist=h)
        aucs.append(user_auc(scores, _labels(scores)))
    a = np.stack(aucs, 1)  # (U, L)
    # Only additions that actually change the history count (k <= hist_len).
    var = np.array(
        [a[i, : max(int(lens[i]), 1)].var() if lens[i] >= 2 else np.nan for i in range(n)]
    )
    return variance_summary(var)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate_run(
    rundir: str | Path,
    split: str = "test",
    data: str | Path | None = None,
    device: str = "auto",
    protocol: str = "sampled",
    keep_seen: bool = False,
) -> dict[str, float]:
    """The metrics of a run's selected weights on ``split`` (``test`` or ``valid``) of
    its prepared dataset (or ``data``) under ``protocol`` (``sampled``: the keys of
    :data:`~solidrec.metrics.METRIC_KEYS`; ``full``: ``full_*``; ``both``).
    ``keep_seen`` ranks the user's earlier items too (full ranking)."""
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    keys = metric_keys(protocol)
    dev = resolve_device(device)
    cfg, model, dataset = load_run(rundir, data=data)
    model.to(dev)
    seen = None
    if protocol != "sampled":
        seen = no_items(dataset.num_users) if keep_seen else seen_items(dataset, split)
    m = evaluate_split(
        model, getattr(dataset, split), cfg.train.eval_batch_size, dev, protocol, seen
    )
    return {k: float(m[k]) for k in keys}
