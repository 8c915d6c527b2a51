"""``solidrec recommend RUN``: top-k items after a history of original item ids
(:class:`solidrec.recommend.Recommender`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from solidrec.commands._args import Accumulate
from solidrec.recommend import UNKNOWN_POLICIES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``recommend`` on ``sub``."""
    p = sub.add_parser(
        "recommend",
        help="top-k items after a history of item ids, from a trained run",
        description="Score every item after one history (--history or --item), a user's "
        "own history in the prepared data (--user), or many histories (--file, one per "
        "line, ids separated by spaces or commas) and print the top k.",
    )
    p.add_argument("run", type=Path, help="run directory (or its model/ directory)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--history",
        nargs="+",
        action=Accumulate,
        metavar="ID",
        help="item ids, oldest first (split on spaces and commas; --item for ids with them)",
    )
    src.add_argument(
        "--item",
        action=Accumulate,
        metavar="ID",
        help="one item id taken verbatim (spaces and commas kept); repeat, oldest first",
    )
    src.add_argument(
        "--user",
        nargs="+",
        action=Accumulate,
        metavar="ID",
        help="user ids of the run's prepared dataset: recommend after each one's history",
    )
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
    p.add_argument(
        "--json", action="store_true", help="JSON lines: {history, items, scores[, titles]}"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="histories scored at once")
    p.set_defaults(func=run_recommend)


def _split(text: str) -> list[str]:
    return [x for x in re.split(r"[,\s]+", text) if x]


def _histories(args: argparse.Namespace, rec: Any) -> list[tuple[str, list[str]]]:
    """(label, item ids) of each history asked for; the label names it in messages."""
    if args.history:
        return [("--history", [x for a in args.history for x in _split(a)])]
    if args.item:
        return [("--item", list(args.item))]
    if args.user:
        return [(f"user {u}", rec.user_history(u)) for u in args.user]
    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    # Blank lines separate nothing and are no history: skipped (line numbers kept).
    rows = [(f"line {n}", _split(line)) for n, line in enumerate(text.splitlines(), 1)]
    return [(label, ids) for label, ids in rows if ids]


def _check(rec: Any, label: str, history: list[str], unknown: str) -> str | None:
    """The error that keeps this history from being scored, or None; warns (naming
    the history) on unknown ids that are skipped."""
    from solidrec.recommend import UnknownItemError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            known = rec.encode(history, unknown)
        except UnknownItemError as e:
            return str(e)
    for w in caught:
        print(f"solidrec recommend: warning: {label}: {w.message}", file=sys.stderr)
    return None if known else "no item the model knows: nothing to recommend from"


def run_recommend(args: argparse.Namespace) -> int:
    from solidrec.recommend import Recommender, UnknownItemError
    from solidrec.train import CheckpointError

    try:
        rec = Recommender.from_run(args.run, device=args.device)
        histories = _histories(args, rec)
        errors = {i: _check(rec, lb, h, args.unknown) for i, (lb, h) in enumerate(histories)}
        good = [i for i, e in errors.items() if e is None]
        if len(histories) == 1 and not good:
            raise ValueError(f"{histories[0][0]}: {errors[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown ids: reported per history above
            results = rec.recommend_batch(
                [histories[i][1] for i in good],
                k=args.k,
                exclude_seen=not args.include_seen,
                unknown="skip",
                batch_size=args.batch_size,
            )
    except (ValueError, OSError, UnknownItemError, CheckpointError) as e:
        print(f"solidrec recommend: error: {e}", file=sys.stderr)
        return 2
    recs = dict(zip(good, results, strict=True))
    for i, (label, hist) in enumerate(histories):
        if i not in recs:
            print(f"solidrec recommend: error: {label}: {errors[i]}", file=sys.stderr)
            if args.json:
                print(json.dumps({"source": label, "history": hist, "error": errors[i]}))
            continue
        titles = [rec.title(item) for item, _ in recs[i]]
        if args.json:
            row: dict[str, Any] = {
                "source": label,
                "history": hist,
                "items": [item for item, _ in recs[i]],
                "scores": [score for _, score in recs[i]],
            }
            if rec.titles is not None:
                row["titles"] = titles
            print(json.dumps(row))
            continue
        if len(histories) > 1:
            print(f"# {label}: {' '.join(hist)}")
        for rank, ((item, score), title) in enumerate(zip(recs[i], titles, strict=True), 1):
            print(f"{rank}\t{item}\t{score:.6f}" + (f"\t{title}" if title else ""))
    failed = len(histories) - len(good)
    if failed:
        print(
            f"solidrec recommend: {failed} of {len(histories)} histories failed (above); "
            "the others were answered",
            file=sys.stderr,
        )
        return 1
    return 0
