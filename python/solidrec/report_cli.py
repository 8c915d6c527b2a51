"""CLI: ``solidrec report RUNS...`` — a Table-1-style markdown table, mean ± std over
seeds, beside the paper's numbers for Scientific (Table 1)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from solidrec.data.io import atomic_write

COLS = ("auc", "uauc", "ndcg@10", "recall@10", "ndcg@20", "recall@20")
DSR_NAMES = {
    ("none", "off"): "-",
    ("apg", "off"): "APG",
    ("apg", "full"): "Ours (APG)",
    ("duet", "off"): "DUET",
    ("duet", "full"): "Ours (DUET)",
}
BACKBONE_NAMES = {"din": "DIN", "gru4rec": "GRU4Rec", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}
# Paper Table 1, Scientific (AUC, UAUC, NDCG@10, Recall@10, NDCG@20; Recall@20 is not
# in the extracted table).
PAPER_SCIENTIFIC = {
    ("din", "-"): (0.6100, 0.5971, 0.1337, 0.2609, 0.1648),
    ("din", "APG"): (0.7310, 0.6969, 0.1700, 0.3238, 0.2099),
    ("din", "Ours (APG)"): (0.7315, 0.6989, 0.1746, 0.3429, 0.2147),
    ("din", "DUET"): (0.6714, 0.6266, 0.1428, 0.2736, 0.1748),
    ("din", "Ours (DUET)"): (0.7138, 0.6682, 0.1589, 0.3012, 0.1989),
    ("gru4rec", "-"): (0.7424, 0.7094, 0.1621, 0.3214, 0.2049),
    ("gru4rec", "APG"): (0.7273, 0.6933, 0.1592, 0.3159, 0.1988),
    ("gru4rec", "Ours (APG)"): (0.7402, 0.7133, 0.1859, 0.3535, 0.2273),
    ("gru4rec", "DUET"): (0.7270, 0.6881, 0.1658, 0.3224, 0.2036),
    ("gru4rec", "Ours (DUET)"): (0.7410, 0.7054, 0.1792, 0.3415, 0.2196),
    ("sasrec", "-"): (0.7175, 0.6772, 0.1587, 0.3145, 0.1960),
    ("sasrec", "APG"): (0.6952, 0.6610, 0.1523, 0.3040, 0.1910),
    ("sasrec", "Ours (APG)"): (0.7161, 0.6728, 0.1634, 0.3122, 0.2002),
    ("sasrec", "DUET"): (0.6992, 0.6565, 0.1579, 0.3040, 0.1944),
    ("sasrec", "Ours (DUET)"): (0.7111, 0.6738, 0.1548, 0.3016, 0.1957),
    ("bert4rec", "-"): (0.7329, 0.7000, 0.1744, 0.3306, 0.2108),
    ("bert4rec", "APG"): (0.7255, 0.6953, 0.1699, 0.3306, 0.2069),
    ("bert4rec", "Ours (APG)"): (0.7456, 0.7132, 0.1760, 0.3508, 0.2183),
    ("bert4rec", "DUET"): (0.7325, 0.6962, 0.1707, 0.3262, 0.2090),
    ("bert4rec", "Ours (DUET)"): (0.7420, 0.7108, 0.1826, 0.3477, 0.2235),
}


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
            for c in COLS
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
        cells = [_cell([r[c] for r in runs]) for c in COLS]
        lines.append(
            f"| {BACKBONE_NAMES.get(k[0], k[0])} | {name} | {len(runs)} | "
            + " | ".join(cells)
            + " |"
        )
        ref = PAPER_SCIENTIFIC.get((k[0], name)) if paper else None
        if ref:
            lines.append("| | *paper* | | " + " | ".join(f"*{v:.4f}*" for v in ref) + " | – |")
    return "\n".join(lines)


def run_report(args: argparse.Namespace) -> int:
    table = format_runs(args.runs, paper=not args.no_paper)
    print(table)
    if args.out:
        atomic_write(args.out, table + "\n")
    return 0
