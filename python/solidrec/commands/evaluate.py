"""``solidrec evaluate RUNDIR``: metrics of a run's selected checkpoint, plus the paper's
stability (Table 4) and cost (Table 5) measures on request (:mod:`solidrec.evaluate`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` on ``sub``."""
    p = sub.add_parser("evaluate", help="evaluate a run directory's selected checkpoint")
    p.add_argument("rundir", type=Path)
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--stability", action="store_true", help="Table 4: per-user UAUC variance")
    p.add_argument("--stability-users", type=int, default=1000)
    p.add_argument("--cost", action="store_true", help="Table 5: params, s/epoch, s/test batch")
    p.add_argument(
        "--data", type=Path, help="the prepared dataset, if not where the run's config says"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:N")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from solidrec.config import resolve_device
    from solidrec.evaluate import evaluate_with_cost, load_run, stability
    from solidrec.metrics import METRIC_KEYS
    from solidrec.train import CheckpointError

    try:
        device = resolve_device(args.device)
        cfg, model, data = load_run(args.rundir, data=args.data)
        model.to(device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"solidrec evaluate: error: {e}", file=sys.stderr)
        return 2
    split = data.test if args.split == "test" else data.valid
    m, cost = evaluate_with_cost(model, split, cfg.train.eval_batch_size, device)
    out: dict[str, Any] = {k: float(m[k]) for k in METRIC_KEYS}
    out["split"] = args.split
    if args.stability:
        out["stability"] = stability(model, split, args.stability_users, device=device)
    if args.cost:
        cost_file = args.rundir / "cost.json"
        trained = json.loads(cost_file.read_text()) if cost_file.exists() else {}
        out["cost"] = {**cost, "s_per_epoch": trained.get("s_per_epoch")}
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
