"""``solidrec report RUNS...``: a Table-1-style markdown table, mean ± std over seeds,
beside the paper's numbers for Scientific (:mod:`solidrec.paper`)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from solidrec.data.io import atomic_write
from solidrec.metrics import METRIC_KEYS
from solidrec.paper import BACKBONE_NAMES, DSR_NAMES, SCIENTIFIC_TABLE1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``report`` on ``sub``."""
    p = sub.add_parser("report", help="markdown table of finished runs (mean ± std over seeds)")
    p.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    p.add_argument("--no-paper", action="store_true", help="omit the paper's Scientific numbers")
    p.add_argument("--out", type=Path, help="also write the table to this file")
    p.set_defaults(func=run_report)


def _find_runs(paths: list[Path]) -> list[Path]:
    found = []
    for p in paths:
        if (p / "metrics.json").exists():
            found.append(p)
        else:
            found.extend(sorted(m.parent for m in p.rglob("metrics.json")))
    return found


def collect(paths: list[Path]) -> dict[tuple[str, str, str], list[dict]]:
    """Group finished runs by (backbone, generator, solid)."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in _find_runs(paths):
        cfg = yaml.safe_load((run / "config.yaml").read_text())["model"]
        groups[(cfg["backbone"], cfg["generator"], cfg["solid"])].append(
            json.loads((run / "metrics.json").read_text())
        )
    return groups


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def format_runs(paths: list[Path], paper: bool = True) -> str:
    """The Table-1-style markdown table (plus ablation rows for other SOLID modes)."""
    groups = collect(paths)
    head = [
        "SR Model",
        "DSR Model",
        "n",
        *[
            c.upper()
            if c in ("auc", "uauc")
            else c.replace("ndcg", "NDCG").replace("recall", "Recall")
            for c in METRIC_KEYS
        ],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {b: i for i, b in enumerate(BACKBONE_NAMES)}
    dsr_order = list(DSR_NAMES)

    def key(k: tuple[str, str, str]) -> tuple:
        gs = (k[1], k[2])
        return (order.get(k[0], 9), dsr_order.index(gs) if gs in dsr_order else 99, k)

    for k in sorted(groups, key=key):
        runs = groups[k]
        name = DSR_NAMES.get((k[1], k[2]), f"{k[1].upper()} solid={k[2]}")
        cells = [_cell([r[c] for r in runs]) for c in METRIC_KEYS]
        lines.append(
            f"| {BACKBONE_NAMES.get(k[0], k[0])} | {name} | {len(runs)} | "
            + " | ".join(cells)
            + " |"
        )
        ref = SCIENTIFIC_TABLE1.get((k[0], name)) if paper else None
        if ref:
            lines.append("| | *paper* | | " + " | ".join(f"*{v:.4f}*" for v in ref) + " | – |")
    return "\n".join(lines)


def run_report(args: argparse.Namespace) -> int:
    table = format_runs(args.runs, paper=not args.no_paper)
    print(table)
    if args.out:
        atomic_write(args.out, table + "\n")
    return 0
