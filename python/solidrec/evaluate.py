"""Evaluation: candidate scores, the metrics of a split (paper §4.1.3, ``solidrec.metrics``),
the stability (Table 4) and cost (Table 5) measures, and a run directory's selected model.

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

from solidrec.config import RunConfig
from solidrec.data.prepared import EvalSplit, PreparedDataset
from solidrec.metrics import METRIC_KEYS, ranking_metrics, user_auc, variance_summary
from solidrec.models import SolidModel, build_model, count_parameters, run_dataset


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


def evaluate_split(
    model: SolidModel, split: EvalSplit, batch: int, device: torch.device
) -> dict[str, float]:
    """AUC, UAUC, NDCG@10/20, Recall@10/20 over the split's 1 + N candidates per user."""
    scores = predict(model, split, batch, device)
    return ranking_metrics(scores, _labels(scores))


def evaluate_with_cost(
    model: SolidModel, split: EvalSplit, batch: int, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`evaluate_split` and Table 5's cost of that pass: ``params``,
    ``s_per_test_batch`` (wall seconds per batch of ``test_batch_users`` users)."""
    t0 = time.perf_counter()
    metrics = evaluate_split(model, split, batch, device)
    seconds = time.perf_counter() - t0
    batches = max(1, math.ceil(len(split.user) / batch))
    cost = {
        "params": count_parameters(model),
        "s_per_test_batch": seconds / batches,
        "test_batch_users": batch,
    }
    return metrics, cost


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


def load_run(
    rundir: str | Path, data: str | Path | None = None
) -> tuple[RunConfig, SolidModel, PreparedDataset]:
    """(config, model with the selected weights in eval mode, dataset) of a finished or
    running run; ``data`` replaces the prepared dataset path of the run's config (it
    must be the same dataset: its fingerprint is checked). Raises
    :class:`~solidrec.train.CheckpointError` before the first validation,
    FileNotFoundError without a run's config or dataset."""
    # Checkpoints are the training loop's format (and the loop imports this module).
    from solidrec.train.checkpoint import CheckpointError, load_checkpoint

    rundir = Path(rundir)
    if not (rundir / "config.yaml").exists():
        raise FileNotFoundError(f"{rundir}: no config.yaml (not a run directory)")
    cfg = RunConfig.load(rundir / "config.yaml")
    path = Path(cfg.data if data is None else data)
    if not path.is_absolute() and not path.exists() and (rundir / path).exists():
        path = rundir / path  # a relative path written by an older version, seen from here
    if data is None and not path.exists():
        raise FileNotFoundError(
            f"{rundir}: its prepared dataset {cfg.data} is not there; pass --data DIR"
        )
    dataset = run_dataset(cfg, path)
    cfg.data = str(path)
    model = build_model(cfg, dataset)
    ckdir = rundir / "checkpoints"
    best = sorted(ckdir.glob("best_stage*.pt"))
    if not best:
        raise CheckpointError(f"{ckdir}: no best_stage*.pt (the run has not validated yet)")
    ck = load_checkpoint(best[-1])  # stage 2 sorts after stage 1
    _check_same_dataset(rundir, ck, dataset)
    model.load_state_dict(ck["model"])
    model.eval()
    return cfg, model, dataset


def _check_same_dataset(rundir: Path, ck: dict[str, Any], data: PreparedDataset) -> None:
    """Refuse weights trained on another prepared dataset (checkpoints since format 2
    of the trainer record its fingerprint; best checkpoints via last.pt's)."""
    from solidrec.train.checkpoint import CheckpointError, load_latest

    saved = ck.get("data_fingerprint")
    if saved is None:
        found = load_latest(rundir / "checkpoints" / "last.pt")
        saved = found[0].get("data_fingerprint") if found else None
    fp = data.manifest.get("fingerprint")
    if saved and fp and saved != fp:
        raise CheckpointError(
            f"{data.path} is not the prepared dataset {rundir} was trained on "
            f"(fingerprint {fp[:12]} vs {saved[:12]})"
        )


def evaluate_run(
    rundir: str | Path,
    split: str = "test",
    data: str | Path | None = None,
    device: str = "auto",
) -> dict[str, float]:
    """The metrics (:data:`~solidrec.metrics.METRIC_KEYS`) of a run's selected weights on
    ``split`` (``test`` or ``valid``) of its prepared dataset (or ``data``)."""
    from solidrec.config import resolve_device

    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    dev = resolve_device(device)
    cfg, model, dataset = load_run(rundir, data=data)
    model.to(dev)
    m = evaluate_split(model, getattr(dataset, split), cfg.train.eval_batch_size, dev)
    return {k: float(m[k]) for k in METRIC_KEYS}
