"""Reproduction sweep on a prepared dataset: Table 1 (4 backbones x 5 DSR options) and
the Table 2 ablation (SASRec + DUET), seeds in parallel worker processes.

    python -m solidrec.reproduce --data runs/data/scientific --out runs/repro \
        --seeds 2024 --epochs 4 --patience 1 --workers 2
    solidrec report runs/repro --out docs/results_table.md

Finished runs (metrics.json present) are skipped; interrupted ones resume (--resume),
so the command can be re-run after a kill.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TABLE1 = [("none", "off"), ("apg", "off"), ("apg", "full"), ("duet", "off"), ("duet", "full")]
ABLATION = [("duet", "spg"), ("duet", "spg+sml"), ("duet", "spg+scl")]
BACKBONE_ORDER = ("sasrec", "gru4rec", "bert4rec", "din")


def plan(
    seeds: list[int],
    backbones: tuple[str, ...] = BACKBONE_ORDER,
    combos: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str, str, int]]:
    """(backbone, generator, solid, seed) in the order that completes comparisons first;
    ``combos`` restricts the (generator, solid) pairs."""
    jobs = []
    for seed in seeds:
        for b in backbones:
            pairs = TABLE1 + (ABLATION if b == "sasrec" else [])
            jobs += [(b, g, s, seed) for g, s in pairs if combos is None or (g, s) in combos]
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2024])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--patience", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONE_ORDER))
    ap.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run"
    )
    ap.add_argument(
        "--combos",
        nargs="+",
        metavar="GENERATOR:SOLID",
        help="only these pairs, e.g. duet:off duet:full (default: Table 1 + the ablation)",
    )
    args = ap.parse_args(argv)
    combos = [tuple(c.split(":", 1)) for c in args.combos] if args.combos else None
    jobs = plan(args.seeds, tuple(args.backbones), combos)

    def run(job: tuple[str, str, str, int]) -> str:
        b, g, s, seed = job
        rundir = args.out / f"{b}-{g}-{s.replace('+', '_')}-s{seed}"
        if (rundir / "metrics.json").exists():
            return f"skip {rundir.name}"
        cmd = [
            sys.executable, "-m", "solidrec", "train", "--data", args.data, "--out", str(rundir),
            "--backbone", b, "--generator", g, "--solid", s, "--seed", str(seed),
            "--epochs", str(args.epochs), "--patience", str(args.patience), "--threads", "1",
            "--no-progress", "--resume",
        ]  # fmt: skip
        if args.set:
            cmd += ["--set", *args.set]
        t0 = time.perf_counter()
        rundir.mkdir(parents=True, exist_ok=True)
        with open(rundir / "train.out", "a") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        status = "done" if rc == 0 else f"FAILED rc={rc}"
        return f"{status} {rundir.name} {time.perf_counter() - t0:.0f}s"

    with ThreadPoolExecutor(args.workers) as pool:
        for msg in pool.map(run, jobs):
            print(msg, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
