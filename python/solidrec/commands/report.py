"""``solidrec report RUNS...``: finished runs as Table-1-style tables, mean ± std over seeds.

One table per prepared dataset (the fingerprint each run recorded) and one row per config: runs
are averaged only when every config field but the seed (and :data:`RESUME_FREE_KEYS`,
which never change results) is equal, and each field that differs between the rows of a
table is a column of it. The paper's numbers (:mod:`solidrec.paper`) stand beside rows of
its dataset run with its settings. Markdown to stdout (and ``--out``), ``--csv``,
``--json`` and ``--curves`` (training-curve PNGs from each run's log.csv).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from solidrec.commands._args import plain
from solidrec.data.io import atomic_write, write_json
from solidrec.runs.report import (
    ReportError,
    collect,
    format_tables,
    rows,
    to_csv,
    to_json,
    write_curves,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``report`` on ``sub``."""
    p = sub.add_parser(
        "report",
        help="tables of finished runs (mean ± std over seeds), one per dataset",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    p.add_argument("--no-paper", action="store_true", help="omit the paper's Scientific numbers")
    p.add_argument("--out", type=Path, metavar="FILE.md", help="also write the Markdown here")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write the rows as CSV")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the rows as JSON")
    p.add_argument(
        "--curves",
        type=Path,
        metavar="DIR",
        help="write a training-curve PNG per run and overlay.png (needs matplotlib)",
    )
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    paper = not args.no_paper
    try:
        tables = collect(args.runs)
        text = format_tables(tables, paper)
        print(text)
        if args.out:
            atomic_write(args.out, text + "\n")
        if args.csv or args.json:
            table_rows = rows(tables, paper)
            if args.csv:
                atomic_write(args.csv, to_csv(table_rows))
            if args.json:
                write_json(args.json, to_json(table_rows))
        if args.curves:
            runs = [r for t in tables for g in t.groups for r in g.runs]
            for p in write_curves(runs, args.curves):
                print(f"wrote {p}", file=sys.stderr)
    except ReportError as e:
        print(f"solidrec report: error: {e}", file=sys.stderr)
        return 2
    return 0
