"""CLI: ``solidrec evaluate RUNDIR`` — metrics of a run's selected checkpoint, plus the
paper's stability (Table 4) and cost (Table 5) measures on request."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from solidrec.config import RunConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` on ``sub``."""
    p = sub.add_parser("evaluate", help="evaluate a run directory's selected checkpoint")
    p.add_argument("rundir", type=Path)
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--stability", action="store_true", help="Table 4: per-user UAUC variance")
    p.add_argument("--stability-users", type=int, default=1000)
    p.add_argument("--cost", action="store_true", help="Table 5: params, s/epoch, s/test batch")
    p.set_defaults(func=run_evaluate)


def load_run(rundir: Path) -> tuple[RunConfig, Any, Any]:
    """(config, model with the selected weights, dataset) of a finished or running run."""
    from solidrec.data.prepared import load_prepared
    from solidrec.train import CheckpointError, build_model, load_checkpoint

    cfg = RunConfig.load(rundir / "config.yaml")
    data = load_prepared(cfg.data)
    model = build_model(cfg, data)
    ckdir = rundir / "checkpoints"
    best = sorted(ckdir.glob("best_stage*.pt"))
    if not best:
        raise CheckpointError(f"{ckdir}: no best_stage*.pt (the run has not validated yet)")
    ck = load_checkpoint(best[-1])  # stage 2 sorts after stage 1
    model.load_state_dict(ck["model"])
    model.eval()
    return cfg, model, data


@torch.no_grad()
def stability(model: Any, split: Any, max_users: int, batch: int = 256) -> dict[str, float]:
    """Table 4: for each user, add the history's behaviours one at a time (prefixes of
    length 1..L ending at the oldest kept item, i.e. histories growing toward the
    present), score the candidates after each addition, and take the variance of that
    user's AUC across the additions; aggregate median/mean/min/max over users."""
    from solidrec.metrics import _user_auc_fast, variance_summary
    from solidrec.train import predict

    n = min(max_users, len(split.user))
    hist = split.hist[:n]
    lens = split.hist_len[:n]
    L = hist.shape[1]
    labels = np.zeros(split.candidates[:n].shape)
    labels[:, 0] = 1
    aucs = []
    sub = type(split)(split.user[:n], hist, lens, split.candidates[:n])
    for k in range(1, L + 1):
        # Keep the first k real behaviours (oldest first), left-padded again.
        h = np.zeros_like(hist)
        for i in range(n):
            real = hist[i, L - lens[i] :]
            keep = real[: min(k, len(real))]
            if len(keep):
                h[i, L - len(keep) :] = keep
        aucs.append(_user_auc_fast(predict(model, sub, batch, torch.device("cpu"), hist=h), labels))
    a = np.stack(aucs, 1)  # (U, L)
    # Only additions that actually change the history count (k <= hist_len).
    var = np.array(
        [a[i, : max(int(lens[i]), 1)].var() if lens[i] >= 2 else np.nan for i in range(n)]
    )
    return variance_summary(var)


def run_evaluate(args: argparse.Namespace) -> int:
    from solidrec.train import CheckpointError, evaluate_split
    from solidrec.train.loop import METRIC_KEYS

    try:
        cfg, model, data = load_run(args.rundir)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"solidrec evaluate: error: {e}", file=sys.stderr)
        return 2
    split = data.test if args.split == "test" else data.valid
    t0 = time.perf_counter()
    m = evaluate_split(model, split, cfg.train.eval_batch_size, torch.device("cpu"))
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {k: float(m[k]) for k in METRIC_KEYS}
    out["split"] = args.split
    if args.stability:
        out["stability"] = stability(model, split, args.stability_users)
    if args.cost:
        from solidrec.models import count_parameters

        cost_file = args.rundir / "cost.json"
        cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}
        nb = max(1, -(-len(split.user) // cfg.train.eval_batch_size))
        out["cost"] = {
            "params": count_parameters(model),
            "s_per_epoch": cost.get("s_per_epoch"),
            "s_per_test_batch": elapsed / nb,
            "test_batch_users": cfg.train.eval_batch_size,
        }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
