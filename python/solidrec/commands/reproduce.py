"""``solidrec reproduce``: the paper's runs on a prepared dataset, Table 1 (4 backbones x 5
DSR options) and the Table 2 ablation (SASRec + DUET), several runs at a time.

    solidrec reproduce --data runs/data/scientific --out runs/repro \\
        --seeds 2024 --epochs 4 --patience 1 --workers 2
    solidrec report runs/repro --out docs/results/table.md

Each run trains through solidrec.train.train with one thread (with --workers above 1 in
a fresh process per run), its output appended to RUNDIR/train.out. Finished runs
(metrics.json present) are skipped; interrupted ones resume, so the command can be re-run
after a kill or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from solidrec.commands._args import Accumulate, add_overrides, plain
from solidrec.paper import ABLATION, ABLATION_BACKBONE, TABLE1

#: Default ``--backbones``, in the order that completes comparisons first.
RUN_ORDER = ("sasrec", "gru4rec", "bert4rec", "din")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``reproduce`` on ``sub``."""
    p = sub.add_parser(
        "reproduce",
        help="the paper's Table 1 and Table 2 runs (resumable), several at a time",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--out", required=True, type=Path, help="folder of the run directories")
    p.add_argument("--seeds", type=int, nargs="+", action=Accumulate, default=[2024])
    p.add_argument("--epochs", type=int, default=4, help="max epochs per stage")
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="runs at a time")
    p.add_argument("--backbones", nargs="+", action=Accumulate, default=list(RUN_ORDER))
    add_overrides(p, "config overrides for every run (repeatable)")
    p.add_argument(
        "--combos",
        nargs="+",
        action=Accumulate,
        metavar="GENERATOR:SOLID",
        help="only these pairs, e.g. duet:off duet:full (default: Table 1 + the ablation)",
    )
    p.set_defaults(func=run_reproduce)


def plan(
    seeds: list[int],
    backbones: tuple[str, ...] = RUN_ORDER,
    combos: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str, str, int]]:
    """(backbone, generator, solid, seed) in the order that completes comparisons first;
    ``combos`` restricts the (generator, solid) pairs."""
    jobs = []
    for seed in seeds:
        for b in backbones:
            pairs = TABLE1 + (ABLATION if b == ABLATION_BACKBONE else [])
            jobs += [(b, g, s, seed) for g, s in pairs if combos is None or (g, s) in combos]
    return jobs


def run_dir(out: Path, backbone: str, generator: str, solid: str, seed: int) -> Path:
    """The run directory of one job under ``out``."""
    return out / f"{backbone}-{generator}-{solid.replace('+', '_')}-s{seed}"


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Append this process's output (Python's and native code's) to ``path``."""
    with open(path, "a", buffering=1) as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with redirect_stdout(log), redirect_stderr(log):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_one(task: tuple[Path, dict[str, Any]]) -> str:
    """Train or resume one run (config values ``task[1]``), output to RUNDIR/train.out;
    returns its status line."""
    from solidrec.commands.train import train_run
    from solidrec.runs.config import run_config

    rundir, values = task
    t0 = time.perf_counter()
    rundir.mkdir(parents=True, exist_ok=True)
    with _output_to(rundir / "train.out"):
        try:
            rc, metrics = train_run("train", lambda: run_config(out=rundir, **values), resume=True)
            if metrics is not None:
                print(json.dumps(metrics, indent=2, sort_keys=True))
        except Exception:  # a bug, not a run's error: keep the traceback, go on with others
            traceback.print_exc()
            rc = 1
    status = "done" if rc == 0 else f"FAILED rc={rc}"
    return f"{status} {rundir.name} {time.perf_counter() - t0:.0f}s"


def run_reproduce(args: argparse.Namespace) -> int:
    combos = [tuple(c.split(":", 1)) for c in args.combos] if args.combos else None
    tasks = []
    for b, g, s, seed in plan(args.seeds, tuple(args.backbones), combos):
        rundir = run_dir(args.out, b, g, s, seed)
        if (rundir / "metrics.json").exists():
            print(f"skip {rundir.name}", flush=True)
            continue
        values = {
            "data": args.data,
            "backbone": b,
            "generator": g,
            "solid": s,
            "seed": seed,
            "epochs": args.epochs,
            "patience": args.patience,
            "threads": 1,
            "progress": False,
            "overrides": args.set,
        }
        tasks.append((rundir, values))
    try:
        with ExitStack() as stack:
            if args.workers > 1 and len(tasks) > 1:
                # A fresh process per run: each starts from torch's defaults, as a CLI
                # run does. Workers ignore Ctrl-C: leaving the pool below stops them.
                ctx = multiprocessing.get_context("spawn")
                pool = ctx.Pool(args.workers, _ignore_sigint, maxtasksperchild=1)
                stack.callback(pool.join)  # after the pool's exit, which terminates it
                results = stack.enter_context(pool).imap(_train_one, tasks)
            else:
                results = map(_train_one, tasks)
            for msg in results:
                print(msg, flush=True)
    except KeyboardInterrupt:
        print("solidrec reproduce: interrupted; the same command resumes", file=sys.stderr)
        return 130
    return 0
