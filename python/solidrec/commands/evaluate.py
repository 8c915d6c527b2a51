"""``solidrec evaluate RUNDIR``: metrics of a run's selected checkpoint, plus the paper's
stability (Table 4) and cost (Table 5) measures on request (:mod:`solidrec.evaluate`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from solidrec.metrics import PROTOCOL_CHOICES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` on ``sub``."""
    p = sub.add_parser("evaluate", help="evaluate a run directory's selected checkpoint")
    p.add_argument("rundir", type=Path)
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument(
        "--protocol",
        choices=PROTOCOL_CHOICES,
        default="both",
        help="sampled: the held-out item among the split's 1 + 99 sampled candidates (the "
        "paper's); full: its exact rank among all items, the user's earlier items left out, "
        "ties counted against it (full_* keys); both (default)",
    )
    p.add_argument(
        "--keep-seen",
        action="store_true",
        help="full ranking: rank the user's earlier items too (default: leave them out)",
    )
    p.add_argument(
        "--ranks",
        type=Path,
        metavar="FILE.npz",
        help="write each user's rank of the held-out item under each protocol (user and "
        "item ids, one array per protocol) for paired significance tests",
    )
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
    from solidrec.evaluate import (
        evaluate_with_cost,
        load_run,
        no_items,
        seen_items,
        stability,
        write_ranks,
    )
    from solidrec.metrics import PROTOCOLS, metric_keys, protocols_of
    from solidrec.train import CheckpointError

    try:
        device = resolve_device(args.device)
        cfg, model, data = load_run(args.rundir, data=args.data)
        model.to(device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"solidrec evaluate: error: {e}", file=sys.stderr)
        return 2
    split = data.test if args.split == "test" else data.valid
    seen = None
    if "full" in protocols_of(args.protocol):
        seen = no_items(data.num_users) if args.keep_seen else seen_items(data, args.split)
        if model.backbone.target_dependent:
            print(
                f"solidrec evaluate: {cfg.model.backbone} scores each (user, item) pair: full "
                f"ranking runs {len(split.user):,} x {data.num_items:,} pairs",
                file=sys.stderr,
            )
    m, cost, ranks = evaluate_with_cost(
        model, split, cfg.train.eval_batch_size, device, args.protocol, seen
    )
    out: dict[str, Any] = {k: float(m[k]) for k in metric_keys(args.protocol)}
    out["split"] = args.split
    out["protocols"] = {p: PROTOCOLS[p] for p in protocols_of(args.protocol)}
    if seen is not None and args.keep_seen:
        out["protocols"]["full"] = (
            "the held-out item's rank among all items, the user's earlier items included, "
            "ties counted against it"
        )
    if args.ranks:
        write_ranks(args.ranks, data, split, ranks)
    if args.stability:
        out["stability"] = stability(model, split, args.stability_users, device=device)
    if args.cost:
        cost_file = args.rundir / "cost.json"
        trained = json.loads(cost_file.read_text()) if cost_file.exists() else {}
        out["cost"] = {**cost, "s_per_epoch": trained.get("s_per_epoch")}
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
