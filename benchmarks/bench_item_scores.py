"""Scores against every item without the score matrix: top-k retrieval and full-ranking
evaluation.

Not a test (a smoke run of it is: benchmarks/test_bench_item_scores.py). Two parts:

``topk``: ``solid_ext.ops.topk_scores`` for B = 1,024 queries, d in {32, 64}, k in
{10, 100}, N in {10k, 100k, 1M} items, on every CPU kernel variant this machine runs,
against torch (``(q @ table.T).topk(k)``, the (B, N) matrix) and faiss
(``IndexFlatIP.search``, the index built outside the timing), all at the same threads,
in interleaved rounds. Floor: the multiply-adds at the variant's FMA peak measured in
the same run (``benchmarks.common.fma_peaks``). Peak memory: the growth of the child
process's RSS over its inputs during the fused op alone (each (N, d) runs in a fresh
child, the fused op first).

``eval``: full-ranking evaluation (``solidrec.evaluate.full_ranks``: every test user's
held-out item ranked exactly among all items, seen items left out) of an untrained
SASRec (dim 32; the cost does not depend on the weights) on the generated data of
Electronics' size (``benchmarks.bench_train.prepare_scaled``, reused when present),
against the sampled protocol's pass over the same users. Target: under 10 minutes on
2 cores.

    python -m benchmarks.bench_item_scores topk --out benchmarks/results/item_scores
    python -m benchmarks.bench_item_scores eval --out benchmarks/results/item_scores
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
B = 1024
DIMS = (32, 64)
KS = (10, 100)
ITEMS = (10_000, 100_000, 1_000_000)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- topk ------------------------------------------------------------------------------


def topk_child(n: int, d: int, threads: int, rounds: int, target_s: float) -> list[dict]:
    """One (N, d): every k and implementation, in this (fresh) process."""
    import solid_ext
    from solid_ext import ops

    from .bench_item_table import timed
    from .common import fma_peaks

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, d, generator=g)
    t = torch.randn(n, d, generator=g)
    isas = solid_ext.cpu_isas()
    # Peak memory of the fused op first, before anything else has grown the process.
    base = _rss_mib()
    for k in KS:
        ops.topk_scores(q, t, k)
    fused_mib = _rss_mib() - base
    fns = {}
    for k in KS:
        for isa in isas:

            def run(k=k, isa=isa):
                with solid_ext.use_cpu_isa(isa):
                    ops.topk_scores(q, t, k)

            fns[(k, isa)] = run
        fns[(k, "torch")] = lambda k=k: torch.topk(q @ t.T, k, dim=1)
    faiss_index = None
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
        faiss_index = faiss.IndexFlatIP(d)
        faiss_index.add(t.numpy())
        for k in KS:
            fns[(k, "faiss")] = lambda k=k: faiss_index.search(q.numpy(), k)
    except ImportError:
        pass
    times = timed(fns, rounds, target_s)
    peaks = fma_peaks(3)
    flops = 2.0 * B * n * d
    rows = []
    for k in KS:
        torch_ms = statistics.median(times[(k, "torch")]) * 1e3
        faiss_ms = statistics.median(times[(k, "faiss")]) * 1e3 if faiss_index else None
        # The ops agree: same indices as torch on this data (no ties in random floats).
        for isa in isas:
            ms = statistics.median(times[(k, isa)]) * 1e3
            peak = peaks.get(isa)
            rows.append(
                {
                    "n": n,
                    "d": d,
                    "k": k,
                    "b": B,
                    "threads": threads,
                    "variant": isa,
                    "fused_ms": ms,
                    "torch_ms": torch_ms,
                    "faiss_ms": faiss_ms,
                    "floor_ms": flops / (peak * 1e9) * 1e3 if peak else None,
                    "fused_peak_mib": fused_mib,
                    "score_matrix_mib": B * n * 4 / 2**20,
                    "spread": (max(times[(k, isa)]) - min(times[(k, isa)]))
                    / statistics.median(times[(k, isa)]),
                }
            )
    return rows


def run_topk(items, dims, threads: int, rounds: int, target_s: float) -> list[dict]:
    rows = []
    for n in items:
        for d in dims:
            args = ["_topk", str(n), str(d), str(threads), str(rounds), str(target_s)]
            if target_s == 0:  # smoke: in this process
                rows += topk_child(n, d, threads, rounds, 0.0)
                continue
            cmd = [sys.executable, "-m", "benchmarks.bench_item_scores", *args]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                raise RuntimeError(f"topk child {n} {d} failed: {res.stderr[-500:]}")
            part = json.loads(res.stdout.strip().splitlines()[-1])
            for r in part:
                print(json.dumps(r), flush=True)
            rows += part
    return rows


def topk_markdown(rows: list[dict], machine: str) -> str:
    lines = [
        "## topk_scores: top-k over every item, fused vs torch and faiss",
        "",
        machine + " Generated by `python -m benchmarks.bench_item_scores topk` (do not edit).",
        "",
        f"B = {B} queries; median ms per call over interleaved rounds at "
        f"{rows[0]['threads'] if rows else '?'} thread(s). torch = `(q @ table.T).topk(k)` "
        "(builds the (B, N) matrix: `matrix MiB`); faiss = `IndexFlatIP.search` (index built "
        "outside the timing). Floor = the multiply-adds (2BNd) at the variant's FMA peak "
        "measured in the same run; `x floor` = fused / floor (target: within 1.5). "
        "`fused MiB` = the process's peak RSS growth over its inputs while the fused op "
        "ran (candidate buffers, outputs, one packed chunk per thread).",
        "",
        "| N | d | k | variant | fused ms | torch ms | faiss ms | torch / fused | "
        "faiss / fused | floor ms | x floor | fused MiB | matrix MiB |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fa, fl, ms = r["faiss_ms"], r["floor_ms"], r["fused_ms"]
        faiss_cells = ["–", "–"] if fa is None else [f"{fa:.1f}", f"**{fa / ms:.2f}**"]
        floor_cells = ["–", "–"] if fl is None else [f"{fl:.1f}", f"{ms / fl:.2f}"]
        cells = [
            f"{r['n']:,}",
            str(r["d"]),
            str(r["k"]),
            r["variant"],
            f"{ms:.1f}",
            f"{r['torch_ms']:.1f}",
            faiss_cells[0],
            f"**{r['torch_ms'] / ms:.2f}**",
            faiss_cells[1],
            *floor_cells,
            f"{r['fused_peak_mib']:.0f}",
            f"{r['score_matrix_mib']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- eval ------------------------------------------------------------------------------


def eval_child(path: str, threads: int, users: int) -> dict:
    """Full-ranking and sampled evaluation of every (or the first ``users``) test user."""
    import dataclasses

    from solidrec.config import RunConfig
    from solidrec.data import load_prepared
    from solidrec.evaluate import full_ranks, predict, seen_items
    from solidrec.metrics import full_ranking_metrics
    from solidrec.models import build_model

    torch.set_num_threads(threads)
    t = time.perf_counter()
    data = load_prepared(path)
    load_s = time.perf_counter() - t
    split = data.test
    if users and users < len(split.user):
        split = dataclasses.replace(
            split,
            user=split.user[:users],
            hist=split.hist[:users],
            hist_len=split.hist_len[:users],
            candidates=split.candidates[:users],
        )
    cfg = RunConfig(data=str(path))
    cfg.model.solid = "off"
    torch.manual_seed(0)
    model = build_model(cfg, data).eval()
    dev = torch.device("cpu")
    t = time.perf_counter()
    seen = seen_items(data, "test")
    seen_s = time.perf_counter() - t
    t = time.perf_counter()
    ranks = full_ranks(model, split, 4096, dev, seen)
    full_s = time.perf_counter() - t
    t = time.perf_counter()
    predict(model, split, 512, dev)
    sampled_s = time.perf_counter() - t
    m = full_ranking_metrics(ranks)
    return {
        "items": int(data.num_items),
        "users": int(len(split.user)),
        "dim": cfg.model.dim,
        "threads": threads,
        "load_s": load_s,
        "seen_s": seen_s,
        "full_s": full_s,
        "sampled_s": sampled_s,
        "full_ndcg@10_untrained": m["full_ndcg@10"],
        "pair_scores": float(len(split.user)) * data.num_items,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_eval(workdir: Path, scale: float, threads: int, users: int) -> list[dict]:
    from .bench_train import prepare_scaled

    path = prepare_scaled(scale, workdir)
    cmd = [sys.executable, "-m", "benchmarks.bench_item_scores", "_eval", str(path)]
    cmd += [str(threads), str(users)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise RuntimeError(f"eval child failed: {res.stderr[-800:]}")
    row = {"scale": scale, **json.loads(res.stdout.strip().splitlines()[-1])}
    print(json.dumps(row), flush=True)
    return [row]


def eval_markdown(rows: list[dict], machine: str) -> str:
    lines = [
        "## Full-ranking evaluation at Electronics' size",
        "",
        machine + " Generated by `python -m benchmarks.bench_item_scores eval` (do not edit).",
        "",
        "Every test user's held-out item ranked exactly among all items (`solidrec.evaluate."
        "full_ranks`: one SASRec pass per 4,096 users, then `score_ranks` against the item "
        "table; the user's earlier items left out), untrained SASRec dim 32 (the cost does "
        "not depend on the weights); `seen s` = building the items each user has met; "
        "`sampled s` = the paper's protocol over the same users (1 + 99 candidates). "
        "Target: full ranking under 10 minutes on 2 cores.",
        "",
        "| scale | items | users | threads | pair scores | full s | seen s | sampled s | "
        "full / sampled | peak RSS GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scale']:g} | {r['items']:,} | {r['users']:,} | {r['threads']} | "
            f"{r['pair_scores']:.2e} | **{r['full_s']:.0f}** | {r['seen_s']:.1f} | "
            f"{r['sampled_s']:.0f} | {r['full_s'] / r['sampled_s']:.1f} | "
            f"{r['peak_rss_gib']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_topk"]:
        n, d, threads, rounds = map(int, argv[1:5])
        print(json.dumps(topk_child(n, d, threads, rounds, float(argv[5]))))
        return 0
    if argv[:1] == ["_eval"]:
        print(json.dumps(eval_child(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="part", required=True)
    tk = sub.add_parser("topk", help="topk_scores vs torch and faiss")
    tk.add_argument("--items", type=int, nargs="+", default=list(ITEMS))
    tk.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    tk.add_argument("--rounds", type=int, default=5)
    tk.add_argument("--target-s", type=float, default=0.5, help="seconds per case a round")
    ev = sub.add_parser("eval", help="full-ranking evaluation at Electronics' size")
    ev.add_argument("--scale", type=float, default=1.0)
    ev.add_argument("--workdir", type=Path, default=Path("/tmp/solidrec_bench_train"))
    ev.add_argument("--users", type=int, default=0, help="first N test users (0: all)")
    for p in (tk, ev):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--out", type=Path, help="write OUT-<part>.json and OUT-<part>.md")
    args = ap.parse_args(argv)
    from .common import write_report
    from .run import machine_line

    machine = machine_line()
    if args.part == "topk":
        rows = run_topk(args.items, args.dims, args.threads, args.rounds, args.target_s)
        md = topk_markdown(rows, machine)
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = run_eval(args.workdir, args.scale, args.threads, args.users)
        md = eval_markdown(rows, machine)
    write_report(args.out, args.part, rows, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
