"""``solidrec recommend RUN``: top-k items after a history of original item ids
(:class:`solidrec.recommend.Recommender`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from solidrec.recommend import UNKNOWN_POLICIES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``recommend`` on ``sub``."""
    p = sub.add_parser(
        "recommend",
        help="top-k items after a history of item ids, from a trained run",
        description="Score every item after one history (--history) or many (--file, one "
        "history per line, ids separated by spaces or commas) and print the top k.",
    )
    p.add_argument("run", type=Path, help="run directory (or its model/ directory)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--history", nargs="+", metavar="ID", help="item ids, oldest first")
    src.add_argument(
        "--file", type=Path, help="one history per line, blank lines skipped ('-' for stdin)"
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--include-seen", action="store_true", help="allow the history's own items")
    p.add_argument(
        "--unknown",
        choices=UNKNOWN_POLICIES,
        default="skip",
        help="unknown item ids: skip them with a warning (default) or stop with an error",
    )
    p.add_argument("--json", action="store_true", help="JSON lines: {history, items, scores}")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="histories scored at once")
    p.set_defaults(func=run_recommend)


def _histories(args: argparse.Namespace) -> list[list[str]]:
    if args.history:
        return [[x for a in args.history for x in re.split(r"[,\s]+", a) if x]]
    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    # Blank lines separate nothing and are no history: skipped.
    rows = [[x for x in re.split(r"[,\s]+", line) if x] for line in text.splitlines()]
    return [r for r in rows if r]


def run_recommend(args: argparse.Namespace) -> int:
    from solidrec.recommend import Recommender, UnknownItemError
    from solidrec.train import CheckpointError

    try:
        histories = _histories(args)
        rec = Recommender.from_run(args.run, device=args.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = rec.recommend_batch(
                histories,
                k=args.k,
                exclude_seen=not args.include_seen,
                unknown=args.unknown,
                batch_size=args.batch_size,
            )
    except (ValueError, OSError, UnknownItemError, CheckpointError) as e:
        print(f"solidrec recommend: error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"solidrec recommend: warning: {w.message}", file=sys.stderr)
    for hist, recs in zip(histories, results, strict=True):
        if args.json:
            row = {"history": hist, "items": [i for i, _ in recs], "scores": [s for _, s in recs]}
            print(json.dumps(row))
        else:
            if len(histories) > 1:
                print(f"# {' '.join(hist)}")
            for rank, (item, score) in enumerate(recs, 1):
                print(f"{rank}\t{item}\t{score:.6f}")
    return 0
