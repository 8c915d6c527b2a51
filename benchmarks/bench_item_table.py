"""The item table at catalog scale: the fused sparse update, the full softmax without
logits, and a training step against the number of items.

Not a test (a smoke run of it is: benchmarks/test_bench_item_table.py). Three parts,
each run in fresh child processes (so that peak RSS is the case's own):

``update``: one optimizer step of an item table (dim 32) after a batch of 1024 x 15
lookups drawn uniformly (the most distinct rows a batch can touch): dense fused Adam
(the gradient formed densely, as ``nn.Embedding`` does), ``torch.optim.SparseAdam``, and
``solid_ext``'s fused ``lazy_adam`` (every CPU kernel variant this machine runs) and
``rowwise_adagrad``. The floor is the memory traffic of the rows the step touches
(weight, two moments read and written, the gradient rows read) at the copy bandwidth
measured in the same run.

``softmax``: the full softmax's training step at 1,024 histories x dim 64 against
every item, fused (``item_softmax_xent``) against eager (the (B, N) logits through
``F.cross_entropy``): time of loss + backward + a dense Adam step on the table, and
the peak RSS over the process before the step, against the budget the issue sets
(table + its gradient + Adam's two moments, + 10%).

``scale``: SASRec none / DUET / Ours(DUET) stage 2, one training step (204 histories,
as the paper's 1024 samples; history 10) under bce (4 prepared negatives), sampled
softmax (512 negatives shared by the step) and the full softmax, with the dense
optimizer and ``item_optimizer=lazy_adam``, at 1 and 2 threads, from 0.01x to 10x
Electronics' items (4.7k to 4.7M). Histories and candidates are drawn uniformly over
the catalog; s/epoch = median step x the steps of an epoch of Electronics' training
rows at that scale (773k at 1x). The losses and optimizers are the trainer's
(``solidrec.train.losses.make_loss``, ``solidrec.train.optim.RunOptimizer``).

    python -m benchmarks.bench_item_table update --out benchmarks/results/item_table
    python -m benchmarks.bench_item_table softmax --out benchmarks/results/item_table
    python -m benchmarks.bench_item_table scale --out benchmarks/results/item_table
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
ELECTRONICS_ITEMS = 468_916  # after prepare's filtering (BENCHMARKS.md, scale 1)
ELECTRONICS_TRAIN_ROWS = 773_055
SCALES = (0.01, 0.1, 1.0, 10.0)
DIM = 32
HISTORY = 10
HISTORIES = 204  # the paper's 1024 samples = 204 x (1 + 4)
NEG_TRAIN = 4
SAMPLED = 512
UPDATE_LOOKUPS = 1024 * 15


def items_at(scale: float) -> int:
    return max(16, int(round(ELECTRONICS_ITEMS * scale)))


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


#: Seconds each case runs per round (``--target-s``; a smoke run sets it near 0).
TARGET_S = 0.3


def timed(fns: dict, rounds: int, target_s: float | None = None) -> dict[str, list[float]]:
    """Per key: seconds per call in each of ``rounds`` interleaved rounds (every case
    once per round, so a slow spell of the shared machine falls on all of them); a
    round calls a case as often as fits ``target_s`` (at least once)."""
    target_s = TARGET_S if target_s is None else target_s
    reps = {}
    for k, fn in fns.items():
        fn()  # warm up: optimizer state, first-touch pages
        t = time.perf_counter()
        fn()
        reps[k] = max(1, int(target_s / max(time.perf_counter() - t, 1e-6)))
    out = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(reps[k]):
                fn()
            out[k].append((time.perf_counter() - t) / reps[k])
    return out


def dram_gbs() -> float:
    """Read+write bandwidth of a 256 MiB copy (best of 5) at the current threads
    (16 MiB in a smoke run)."""
    big = torch.empty((64 if TARGET_S > 0.01 else 4) * 2**20).normal_()
    out = torch.empty_like(big)
    best = float("inf")
    for _ in range(6):
        t = time.perf_counter()
        out.copy_(big)
        best = min(best, time.perf_counter() - t)
    return 2 * big.numel() * 4 / best / 1e9


def _child(part: str, *args: object) -> dict:
    """Run ``part`` in a fresh process; its last stdout line is a JSON row. A smoke run
    (``--target-s 0``) calls it in this process instead: it measures nothing."""
    if TARGET_S == 0:
        threads = torch.get_num_threads()
        try:
            return _run_child([f"_{part}", *map(str, args)])
        finally:
            torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "benchmarks.bench_item_table", f"_{part}", str(TARGET_S)]
    cmd += [str(a) for a in args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {res.returncode}: {tail[0][:200]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- update ---------------------------------------------------------------------------


def update_child(n: int, threads: int, rounds: int, lookups: int) -> dict:
    import solid_ext
    from solid_ext.optim import LazyAdam, RowwiseAdagrad

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(1, n, (lookups,), generator=g)
    rows = torch.randn(lookups, DIM, generator=g)
    sparse = torch.sparse_coo_tensor(idx[None], rows, (n, DIM), check_invariants=False)
    touched = int(idx.unique().numel())

    def table() -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.randn(n, DIM, generator=g) * 0.1)

    def dense_step(p, opt):
        def run():
            # As nn.Embedding's backward: a zeroed (N, D) gradient, rows added in.
            p.grad = torch.zeros_like(p).index_add_(0, idx, rows)
            opt.step()

        return run

    def sparse_step(p, opt, isa=None):
        def run():
            p.grad = sparse
            if isa is None:
                opt.step()
            else:
                with solid_ext.use_cpu_isa(isa):
                    opt.step()

        return run

    fns = {}
    p = table()
    fns["dense Adam (fused)"] = dense_step(p, torch.optim.Adam([p], lr=1e-3, fused=True))
    p = table()
    fns["torch SparseAdam"] = sparse_step(p, torch.optim.SparseAdam([p], lr=1e-3))
    for isa in solid_ext.cpu_isas():
        p = table()
        fns[f"lazy_adam {isa}"] = sparse_step(p, LazyAdam([p], lr=1e-3), isa)
    p = table()
    fns["rowwise_adagrad"] = sparse_step(p, RowwiseAdagrad([p], lr=1e-2))
    times = timed(fns, rounds)
    bw = dram_gbs()
    # Touched rows: weight and both moments read and written, gradient rows read.
    floor_bytes = touched * DIM * 4 * 6 + lookups * (DIM * 4 + 8)
    out = {
        "items": n,
        "threads": threads,
        "lookups": lookups,
        "touched": touched,
        "dram_gbs": bw,
        "floor_ms": floor_bytes / bw / 1e6,
        "peak_rss_gib": rss_gib(),
        "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
    }
    base = times["torch SparseAdam"]
    out["vs_sparseadam"] = {
        k: statistics.median(x / y for x, y in zip(v, base, strict=True)) for k, v in times.items()
    }
    return out


def run_update(scales, threads: list[int], rounds: int, lookups: int) -> list[dict]:
    rows = []
    for s in scales:
        for t in threads:
            row = {
                "part": "update",
                "scale": s,
                **_child("update", items_at(s), t, rounds, lookups),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def update_markdown(rows: list[dict], machine: str) -> str:
    ok = [r for r in rows if "ms" in r]
    names = list(ok[0]["ms"]) if ok else []
    out = [
        "## Item table: one optimizer step after a batch's lookups",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_item_table update` (do not edit).",
        "",
        f"Table dim {DIM}; {ok[0]['lookups'] if ok else '-'} lookups drawn uniformly; median "
        "ms per step; `x SparseAdam` paired within rounds (below 1: faster); floor = the "
        "touched rows' traffic (weight and Adam's two moments read and written, gradient "
        "rows read) at the copy bandwidth measured in the same run. Dense Adam includes "
        "forming the dense (N, D) gradient, as `nn.Embedding` does.",
        "",
        "| items | threads | touched rows | "
        + " | ".join(names)
        + " | fused lazy_adam x SparseAdam | floor ms | lazy_adam / floor |",
        "|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|",
    ]
    for r in rows:
        if "ms" not in r:
            out.append(f"| {items_at(r['scale']):,} | - | - | {r.get('error')} |")
            continue
        lazy = min((k for k in r["ms"] if k.startswith("lazy_adam")), key=r["ms"].get)
        out.append(
            f"| {r['items']:,} | {r['threads']} | {r['touched']:,} | "
            + " | ".join(f"{r['ms'][k]:.2f}" for k in names)
            + f" | **{r['vs_sparseadam'][lazy]:.3f}** | {r['floor_ms']:.2f} | "
            f"{r['ms'][lazy] / r['floor_ms']:.1f} |"
        )
    return "\n".join(out) + "\n"


# -- softmax --------------------------------------------------------------------------


def softmax_child(impl: str, n: int, b: int, d: int, threads: int, reps: int) -> dict:
    import torch.nn.functional as F

    from solid_ext import ops

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    before = rss_gib()
    table = torch.nn.Parameter(torch.randn(n, d, generator=g) * 0.1)
    hidden = torch.randn(b, d, generator=g).requires_grad_(True)
    target = torch.randint(0, n, (b,), generator=g)
    opt = torch.optim.Adam([table], lr=1e-3, fused=True)

    def step() -> None:
        if impl == "fused":
            loss = ops.item_softmax_xent(hidden, table, target).mean()
        else:
            loss = F.cross_entropy(hidden @ table.T, target)
        opt.zero_grad(set_to_none=True)  # as the trainer: the op's gradient becomes .grad
        loss.backward()
        opt.step()

    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    table_gib = n * d * 4 / 2**30
    return {
        "impl": impl,
        "items": n,
        "histories": b,
        "dim": d,
        "threads": threads,
        "step_s": statistics.median(times[1:]),
        "peak_gib": rss_gib() - before,
        # table + gradient + Adam's two moments, + 10%
        "budget_gib": 4 * table_gib * 1.1,
        "logits_gib": b * n * 4 / 2**30,
    }


def run_softmax(items: list[int], b: int, d: int, threads: list[int], reps: int) -> list[dict]:
    rows = []
    for n in items:
        for t in threads:
            for impl in ("fused", "eager"):
                row = {"part": "softmax", **_child("softmax", impl, n, b, d, t, reps)}
                row.setdefault("impl", impl)
                row.setdefault("items", n)
                row.setdefault("threads", t)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def softmax_markdown(rows: list[dict], machine: str) -> str:
    out = [
        "## Full softmax over every item: fused against the logits matrix",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_item_table softmax` (do not edit).",
        "",
        "One training step of a table against every item: loss (softmax cross-entropy of "
        "each history's vector over all items), backward, dense fused Adam on the table. "
        "`fused` = `solid_ext.ops.item_softmax_xent` (items in blocks of 4,096); `eager` = "
        "`F.cross_entropy(h @ table.T)`. Peak = the child process's peak RSS over its RSS "
        "before the table was made; budget = table + gradient + Adam's two moments + 10%.",
        "",
        "| items | histories x dim | threads | impl | s/step | fused / eager | peak GiB | "
        "budget GiB | (B, N) logits GiB |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    by = {(r["items"], r["threads"], r["impl"]): r for r in rows}
    for r in rows:
        if "step_s" not in r:
            out.append(
                f"| {r['items']:,} | - | {r['threads']} | {r['impl']} | failed: "
                f"{r.get('error', '')} | | | | |"
            )
            continue
        e = by.get((r["items"], r["threads"], "eager"), {})
        ratio = (
            f"**{r['step_s'] / e['step_s']:.2f}**" if r["impl"] == "fused" and "step_s" in e else ""
        )
        out.append(
            f"| {r['items']:,} | {r['histories']} x {r['dim']} | {r['threads']} | {r['impl']} | "
            f"{r['step_s']:.2f} | {ratio} | {r['peak_gib']:.2f} | {r['budget_gib']:.2f} | "
            f"{r['logits_gib']:.2f} |"
        )
    return "\n".join(out) + "\n"


# -- scale ----------------------------------------------------------------------------

MODELS = (
    ("none", "none", "off", 1),
    ("DUET", "duet", "off", 1),
    ("Ours(DUET) s2", "duet", "full", 2),
)
LOSSES = ("bce", "sampled_softmax", "softmax")
OPTIMIZERS = ("dense", "lazy_adam")


def scale_child(
    n: int, loss: str, threads: list[int], rounds: int, histories: int, optimizers=OPTIMIZERS
) -> dict:
    import numpy as np
    from solidrec.config import ModelConfig, TrainConfig
    from solidrec.models.model import SolidModel
    from solidrec.train.losses import make_loss
    from solidrec.train.optim import RunOptimizer

    g = torch.Generator().manual_seed(0)
    num_sem = 480
    sem = torch.randint(1, num_sem + 1, (n + 1,), generator=g)
    sem[0] = 0
    hist = torch.randint(1, n + 1, (histories, HISTORY), generator=g)
    item = torch.randint(1, n + 1, (histories, 1 + NEG_TRAIN), generator=g)
    label = torch.zeros(histories, 1 + NEG_TRAIN)
    label[:, 0] = 1
    sets = {"bce": {}, "sampled_softmax": {"num_negatives": SAMPLED, "shared_negatives": True}}
    fns, opts = {}, {}
    for name, gen, solid, stage in MODELS:
        for opt_name in optimizers:
            t = TrainConfig(loss=loss, item_optimizer=opt_name, **sets.get(loss, {}))
            torch.manual_seed(0)
            model = SolidModel(ModelConfig(generator=gen, solid=solid), sem, num_sem, HISTORY)
            if stage == 2:
                model.set_stage(2)
            model.train()
            objective = make_loss(t, n, np.asarray(item[:, 0]))
            opt = RunOptimizer(model, t)

            def step(model=model, objective=objective, opt=opt) -> None:
                main, per, aux = objective(
                    model, model, hist, item, label, lambda: torch.Generator().manual_seed(1)
                )
                loss_value = main / (per * histories) + aux
                opt.zero_grad()
                loss_value.backward()
                opt.step()

            fns[f"{name}|{opt_name}"] = step
            opts[f"{name}|{opt_name}"] = opt
    out = {"items": n, "loss": loss, "histories": histories, "ms": {}}
    for t in threads:
        torch.set_num_threads(t)
        times = timed(fns, rounds)
        out["ms"][str(t)] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        out.setdefault("dram_gbs", {})[str(t)] = dram_gbs()
    touched = torch.cat([hist.flatten(), item.flatten()]).unique().numel()
    if loss == "sampled_softmax":
        touched += SAMPLED  # an upper bound: the shared negatives
    out["touched"] = int(touched)
    out["peak_rss_gib"] = rss_gib()
    return out


def run_scale(
    scales, threads: list[int], rounds: int, losses, histories: int, optimizers=OPTIMIZERS
) -> list[dict]:
    rows = []
    for s in scales:
        for loss in losses:
            n = items_at(s)
            row = {"part": "scale", "scale": s, "loss": loss, "items": n}
            th, opts = ",".join(map(str, threads)), ",".join(optimizers)
            row.update(_child("scale", n, loss, th, rounds, histories, opts))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def scale_markdown(rows: list[dict], machine: str) -> str:
    histories = rows[0].get("histories", HISTORIES) if rows else HISTORIES
    alone = rows and all(
        not any(k.endswith("|dense") for c in r.get("ms", {}).values() for k in c) for r in rows
    )
    title = "A training step against the number of items (up to 10x Electronics)"
    out = [
        f"## {title}{', lazy_adam alone' if alone else ''}",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_item_table scale` (do not edit).",
        "",
        f"SASRec, dim {DIM}, history {HISTORY}, {histories} histories a step (the paper's "
        "1024 samples), items drawn uniformly; median ms per step (forward, backward, "
        f"optimizer); bce: 1 + {NEG_TRAIN} prepared candidates; "
        f"sampled: {SAMPLED} negatives shared by the step; softmax: every item, fused. "
        "dense = Adam on every row; lazy = `train.item_optimizer=lazy_adam`. `vs 0.01x` = "
        "this step / the same case's step at 0.01x (target: within 1.3 for bce "
        "and sampled at 1x and 10x). s/epoch = step x the steps of an epoch of "
        f"Electronics' training rows at that scale ({ELECTRONICS_TRAIN_ROWS:,} at 1x). Peak "
        "RSS: the child process of that scale and loss (six models with their optimizer "
        "state; three, lazy_adam's, when built alone: then no dense model sweeps memory "
        "between the sparse steps).",
        "",
    ]
    base = {
        (r["loss"], t): r["ms"][t]
        for r in rows
        if r.get("scale") == min(SCALES) and "ms" in r
        for t in r["ms"]
    }
    for loss in LOSSES:
        sel = [r for r in rows if r["loss"] == loss]
        if not sel:
            continue
        out += [f"### {loss}", ""]
        out.append(
            "| items | threads | model | dense ms | lazy ms | lazy / dense | lazy vs 0.01x | "
            "lazy s/epoch | peak RSS GiB |"
        )
        out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in sel:
            if "ms" not in r:
                out.append(f"| {r['items']:,} | - | - | failed: {r.get('error', '')} | | | | | |")
                continue
            steps = -(-int(ELECTRONICS_TRAIN_ROWS * r["scale"]) // r["histories"])
            for t, cells in r["ms"].items():
                for name, *_ in MODELS:
                    d, lz = cells.get(f"{name}|dense"), cells[f"{name}|lazy_adam"]
                    b = base.get((loss, t), {}).get(f"{name}|lazy_adam")
                    vs = f"{lz / b:.2f}" if b else "-"
                    dense = f"{d:.1f} | **{lz / d:.2f}**" if d else "- | -"
                    out.append(
                        f"| {r['items']:,} | {t} | {name} | {dense.split(' | ')[0]} | {lz:.1f} | "
                        f"{dense.split(' | ')[1]} | {vs} | {lz * steps / 1e3:,.1f} | "
                        f"{r['peak_rss_gib']:.2f} |"
                    )
        out.append("")
    return "\n".join(out)


def _run_child(argv: list[str]) -> dict:
    """A child's row: ``[_part, args...]`` as :func:`_child` passes them."""
    part, args = argv[0], argv[1:]
    if part == "_update":
        n, t, rounds, lookups = map(int, args[:4])
        return update_child(n, t, rounds, lookups)
    if part == "_softmax":
        impl, (n, b, d, t, reps) = args[0], map(int, args[1:6])
        return softmax_child(impl, n, b, d, t, reps)
    n, loss, threads, rounds, histories = args[:5]  # then the optimizers
    th = [int(x) for x in threads.split(",")]
    opts = tuple(args[5].split(",")) if len(args) > 5 else OPTIMIZERS
    return scale_child(int(n), loss, th, int(rounds), int(histories), opts)


def main(argv: list[str] | None = None) -> int:
    global TARGET_S
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0].startswith("_"):
        TARGET_S = float(argv[1])
        print(json.dumps(_run_child([argv[0], *argv[2:]])))
        return 0
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="part", required=True)
    up = sub.add_parser("update", help="one optimizer step of an item table")
    up.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    up.add_argument("--lookups", type=int, default=UPDATE_LOOKUPS)
    sm = sub.add_parser("softmax", help="full softmax step, fused vs eager")
    sm.add_argument("--items", type=int, nargs="+", default=[262_144, 1_048_576])
    sm.add_argument("--histories", type=int, default=1024)
    sm.add_argument("--dim", type=int, default=64)
    sc = sub.add_parser("scale", help="a training step against the number of items")
    sc.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    sc.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    sc.add_argument("--histories", type=int, default=HISTORIES)
    sc.add_argument(
        "--optimizers",
        nargs="+",
        default=list(OPTIMIZERS),
        choices=OPTIMIZERS,
        help="item optimizers to build (one alone: no other case's memory between steps)",
    )
    for p in (up, sm, sc):
        p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
        p.add_argument("--rounds", type=int, default=5)
        p.add_argument("--out", type=Path, help="write OUT-<part>.json and OUT-<part>.md")
        p.add_argument("--target-s", type=float, default=0.3, help="seconds per case a round")
    args = ap.parse_args(argv)
    TARGET_S = args.target_s
    from .common import write_report
    from .run import machine_line

    machine = machine_line()
    if args.part == "update":
        rows = run_update(args.scales, args.threads, args.rounds, args.lookups)
        md = update_markdown(rows, machine)
    elif args.part == "softmax":
        rows = run_softmax(args.items, args.histories, args.dim, args.threads, args.rounds)
        md = softmax_markdown(rows, machine)
    else:
        rows = run_scale(
            args.scales, args.threads, args.rounds, args.losses, args.histories, args.optimizers
        )
        md = scale_markdown(rows, machine)
    write_report(args.out, args.part, rows, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
