"""Scale benchmark for ``solidrec prepare``. Not a test.

Generates a synthetic generic-format dataset of the paper's Electronics size
(4,201,696 users, 476,002 items, ~7.82M interactions), then runs ``solidrec prepare``
on it in a child process and reports wall time and peak RSS (the child's ru_maxrss).
Target on a 2-core machine: under 10 minutes and under 8 GiB.

    python benchmarks/bench_prepare.py --workdir /tmp/bench_prepare --json bench_prepare.json

Smaller runs: ``--scale 0.1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ELECTRONICS_USERS = 4_201_696
ELECTRONICS_ITEMS = 476_002
ELECTRONICS_INTERACTIONS = 7_824_482


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/solidrec_bench_prepare"))
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Electronics' users/items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    from solidrec.data.synth import SynthConfig, generate, write_generic

    users = max(1, int(ELECTRONICS_USERS * args.scale))
    items = max(100, int(ELECTRONICS_ITEMS * args.scale))
    mean_len = ELECTRONICS_INTERACTIONS / ELECTRONICS_USERS
    raw_dir = args.workdir / "raw"
    out_dir = args.workdir / "prepared"

    t = time.perf_counter()
    cfg = SynthConfig(
        users=users,
        items=items,
        mean_len=mean_len,
        min_len=1,
        departments=12,
        leaves_per_department=40,
        seed=args.seed,
    )
    inter, items_file = write_generic(generate(cfg), raw_dir)
    synth_s = time.perf_counter() - t
    print(
        f"synthetic data written in {synth_s:.1f}s: {inter} "
        f"({inter.stat().st_size / 2**20:.0f} MiB)",
        flush=True,
    )

    cmd = [
        sys.executable,
        "-m",
        "solidrec",
        "-v",
        "prepare",
        "--format",
        "generic",
        "--input",
        str(inter),
        "--items",
        str(items_file),
        "--out",
        str(out_dir),
        "--force",
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = json.loads((out_dir / "manifest.json").read_text())
    sizes = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    result = {
        "command": " ".join(cmd),
        "scale": args.scale,
        "counts": manifest["counts"],
        "prepare_wall_s": round(wall, 1),
        "prepare_peak_rss_gib": round(peak_kib / 2**20, 2),
        "synth_wall_s": round(synth_s, 1),
        "output_bytes": sizes,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
