"""Training throughput: epoch time per generator and stage, and how it grows with data.

Not a test (a smoke run of it is: benchmarks/test_bench_train.py). Two parts:

``epoch``: on the paper's Scientific set, one training step of the paper's setting
(1024 samples = 204 histories x (1 positive + 4 negatives), BCE + λ·MSE, backward,
fused Adam, as the trainer) for none / APG / Ours(APG) / DUET / Ours(DUET), each SOLID
model in both stages of Algorithm 1, on SASRec and GRU4Rec, with the fused and the
reference ops. Cases are timed in interleaved rounds (every case once per round) so
that a slow spell of the shared machine falls on all of them; s/epoch = median step
x steps per epoch. FLOPs per step are counted with the reference ops
(``torch.utils.flop_counter``: matmuls and attention) and give the compute floor at
the sgemm rate measured in the same run.

``scale``: generated data at fractions of the paper's largest set (Electronics: 4.2M
users, 476k items, 7.8M interactions), prepared by ``solidrec prepare``; per scale, in
a fresh child process, the step time of DUET and Ours(DUET) stage 2 with the fused ops,
the steps of one epoch, and the child's peak RSS (data + model + Adam + one step).

    python -m benchmarks.bench_train epoch --threads 1 2 --out benchmarks/results/train
    python -m benchmarks.bench_train scale --scales 0.01 0.1 1 --out benchmarks/results/train
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SOLIDREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / "benchmarks" / ".cache"  # git-ignored; prepared data reused across runs
SAMPLES_PER_STEP = 1024  # the paper's batch: (history, candidate) samples
EVAL_USERS = 512  # users per evaluation batch, as train.eval_batch_size


@dataclass(frozen=True)
class Case:
    label: str  # as the paper's tables: none / APG / Ours(APG) ...
    generator: str
    solid: str
    stage: int

    @property
    def base(self) -> str:
        """The label of the model this one's cost is compared with (its generator)."""
        return {"none": "none", "apg": "APG", "duet": "DUET"}[self.generator]


CASES = [
    Case("none", "none", "off", 1),
    Case("APG", "apg", "off", 1),
    Case("Ours(APG) stage 1", "apg", "full", 1),
    Case("Ours(APG) stage 2", "apg", "full", 2),
    Case("DUET", "duet", "off", 1),
    Case("Ours(DUET) stage 1", "duet", "full", 1),
    Case("Ours(DUET) stage 2", "duet", "full", 2),
]
BACKBONES = ["sasrec", "gru4rec"]
BACKENDS = ["cpu", "reference"]


def make_step(
    data,
    backbone: str,
    case: Case,
    backend: str,
    seed: int = 0,
    fused_adam: bool = True,
    histories: int | None = None,
):
    """(a closure running one training step of ``case`` on a fixed batch of ``data``,
    the steps of one epoch, the model). A batch is the paper's 1024 samples, or
    ``histories`` histories with all their candidates."""
    from solidrec.config import ModelConfig
    from solidrec.models.model import SolidModel

    import solid_ext

    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=backbone, generator=case.generator, solid=case.solid)
    sem = torch.from_numpy(data.semantic_id)
    model = SolidModel(cfg, sem, data.num_semantic, data.history_len)
    if case.stage == 2:
        model.set_stage(2)  # codebook <- metacode, as the trainer enters stage 2
    tr = data.train
    per_step = histories or max(1, SAMPLES_PER_STEP // tr.item.shape[1])
    batch = min(per_step, len(tr.item))
    idx = torch.randperm(len(tr.item), generator=torch.Generator().manual_seed(seed))[:batch]
    hist, item = torch.from_numpy(tr.hist[idx.numpy()]), torch.from_numpy(tr.item[idx.numpy()])
    label = torch.from_numpy(tr.label[idx.numpy()]).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam or None)

    def step() -> None:
        with solid_ext.use_backend(backend):
            logits, aux = model(hist, item)
            loss = F.binary_cross_entropy_with_logits(logits, label) + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    step.histories = batch
    steps_per_epoch = -(-len(tr.item) // per_step)
    return step, steps_per_epoch, model


def flops_per_step(step) -> int:
    """FLOPs of one step (matmuls and attention, as torch's FlopCounterMode counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def sgemm_gflops(threads: int) -> float:
    torch.set_num_threads(threads)
    n = 1024
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def interleaved(fns: dict, rounds: int, reps: int) -> dict:
    """Per key: the per-call times (s) of ``rounds`` rounds, each timing ``reps`` calls
    of every function in turn."""
    for fn in fns.values():  # warm up: Adam's state, first-touch pages
        for _ in range(3):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t) / reps)
    return times


def paired(times: dict, a, b) -> float | None:
    """Median over rounds of a's time / b's in the same round (None if b was not run):
    the cases of one round run back to back, so a slow spell of the machine cancels."""
    if b not in times:
        return None
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def scientific():
    from solidrec.data import PrepareConfig, load_prepared, prepare

    src = SHARED / "amazon-scientific"
    if not src.exists():
        raise SystemExit(f"bench_train: needs the Scientific data at {src}")
    out = CACHE / "scientific"
    prepare(PrepareConfig(format="atomic", input=src, out=out))  # a no-op when up to date
    return load_prepared(out)


def run_epoch(data, threads: list[int], rounds: int, reps: int, backbones, backends) -> list:
    rows = []
    for t in threads:
        rate = sgemm_gflops(t)
        torch.set_num_threads(t)
        for bb in backbones:
            fns, spe, flops = {}, {}, {}
            for case in CASES:
                for be in backends:
                    fns[case.label, be], spe[case.label], _ = make_step(data, bb, case, be)
                flops[case.label] = flops_per_step(make_step(data, bb, case, "reference")[0])
            load0 = os.getloadavg()[0]
            times = interleaved(fns, rounds, reps)
            load1 = os.getloadavg()[0]
            med = {k: statistics.median(v) for k, v in times.items()}

            for (label, be), ts in times.items():
                case = next(c for c in CASES if c.label == label)
                q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
                rows.append(
                    {
                        "part": "epoch",
                        "threads": t,
                        "backbone": bb,
                        "model": label,
                        "ops": "fused" if be == "cpu" else be,
                        "step_ms": med[label, be] * 1e3,
                        "iqr_ms": (q[2] - q[0]) * 1e3,
                        "epoch_s": med[label, be] * spe[label],
                        "vs_generator": paired(times, (label, be), (case.base, be)),
                        "vs_none": paired(times, (label, be), ("none", be)),
                        "fused_speedup": paired(times, (label, "reference"), (label, be)),
                        "gflop_step": flops[label] / 1e9,
                        "floor_ms": flops[label] / (rate * 1e9) * 1e3,
                        "steps_per_epoch": spe[label],
                        "sgemm_gflops": rate,
                        "load": [load0, load1],
                    }
                )
                print(_fmt_epoch(rows[-1]), flush=True)
    return rows


#: (label, fused Adam, valid-only codebook search): what this version changed in a step.
# (label, fused Adam, valid-only search, DynamicLinear.fused_generation)
ABLATIONS = [
    ("this version", True, True, "auto"),
    ("Adam as before (foreach)", False, True, "auto"),
    ("every position searched", True, False, "auto"),
    ("weights generated, then applied", True, True, "never"),
    ("all as before", False, False, "never"),
]


def run_ablate(
    data, threads: list[int], rounds: int, reps: int, histories: list[int | None] = (None,)
) -> list[dict]:
    """SASRec + DUET and + Ours(DUET) stage 2 steps, fused ops, with each change of this
    version undone; ratios paired within rounds against this version. ``histories``:
    batch sizes in histories (None: the paper's 1024 samples)."""
    rows = []
    for t in threads:
        for h in histories:
            rows += _ablate_at(data, t, rounds, reps, h)
    return rows


def _ablate_at(data, t: int, rounds: int, reps: int, histories: int | None) -> list[dict]:
    from solid_ext import DynamicLinear

    torch.set_num_threads(t)
    fns, batch = {}, None
    for case in (c for c in CASES if c.label in ("DUET", "Ours(DUET) stage 2")):
        for label, fused, valid_only, generation in ABLATIONS:
            if case.generator == "duet" and case.solid == "off" and not valid_only:
                continue  # no codebook: the search switch changes nothing
            step, _, model = make_step(
                data, "sasrec", case, "cpu", fused_adam=fused, histories=histories
            )
            model.valid_only_search = valid_only
            for m in model.modules():
                if isinstance(m, DynamicLinear):
                    m.fused_generation = generation
            fns[case.label, label], batch = step, step.histories
    times = interleaved(fns, rounds, reps)
    return [
        {
            "part": "ablate",
            "threads": t,
            "model": model_label,
            "variant": label,
            "histories": batch,
            "step_ms": statistics.median(ts) * 1e3,
            "vs_this": paired(times, (model_label, label), (model_label, "this version")),
        }
        for (model_label, label), ts in times.items()
    ]


def ablate_markdown(rows: list[dict], machine: str) -> str:
    out = [
        "## What this version's step changes bought (Scientific, SASRec)",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_train ablate` (do not edit).",
        "",
        "Fused ops, BCE over each history's candidates; `histories` per step (204: the "
        "paper's 1024 samples); `vs this version` = step time with the change undone / "
        "with it, the median over rounds of the ratio within a round.",
        "",
        "| model | threads | histories | variant | step ms | vs this version |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['threads']} | {r.get('histories', '')} | {r['variant']} "
            f"| {r['step_ms']:.2f} | {r['vs_this']:.2f}x |"
        )
    return "\n".join(out) + "\n"


def _fmt_epoch(r: dict) -> str:
    return (
        f"{r['threads']}t {r['backbone']:8s} {r['model']:20s} {r['ops']:9s} "
        f"{r['step_ms']:7.2f} ms  {r['epoch_s']:6.2f} s/epoch  x{r['vs_generator']:.2f} gen"
    )


def epoch_markdown(rows: list[dict], machine: str) -> str:
    out = [
        "## Training epoch by generator and stage (Scientific)",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_train epoch` (do not edit).",
        "",
        f"One step = {SAMPLES_PER_STEP} samples (204 histories x 5 candidates), BCE + "
        "λ·MSE, backward, fused Adam; s/epoch = median step x "
        f"{rows[0]['steps_per_epoch']} steps. `vs gen` = step time / that of the model's "
        "generator alone (APG or DUET) with the same ops, `vs none` = / no generator and "
        "`fused speedup` = reference / fused, each the median over rounds of the ratio "
        "within a round (robust to the shared machine's slow spells, which the medians "
        "of the times are not); `IQR` = spread of the step times over rounds. "
        "`GFLOP` = matmul and attention FLOPs of one step (reference ops); `floor` = "
        "those at the sgemm rate measured in the same run. Load average (1 min) at the "
        "start and end of each table's timing in the last column.",
    ]
    for t in sorted({r["threads"] for r in rows}):
        for bb in dict.fromkeys(r["backbone"] for r in rows):
            sel = [r for r in rows if r["threads"] == t and r["backbone"] == bb]
            if not sel:
                continue
            out += [
                "",
                f"### {bb}, {t} thread(s) (sgemm {sel[0]['sgemm_gflops']:.0f} GFLOP/s; load "
                f"{sel[0]['load'][0]:.2f} → {sel[0]['load'][1]:.2f})",
                "",
                "| model | ops | step ms | IQR ms | s/epoch | vs gen | vs none | fused "
                "speedup | GFLOP | floor ms |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in sel:
                sp = "-" if r["fused_speedup"] is None else f"{r['fused_speedup']:.2f}x"
                out.append(
                    f"| {r['model']} | {r['ops']} | {r['step_ms']:.2f} | {r['iqr_ms']:.2f} | "
                    f"{r['epoch_s']:.2f} | {r['vs_generator']:.2f}x | {r['vs_none']:.2f}x | "
                    f"{sp} | {r['gflop_step']:.3f} | {r['floor_ms']:.2f} |"
                )
    return "\n".join(out) + "\n"


# -- scale ----------------------------------------------------------------------------

ELECTRONICS = {"users": 4_201_696, "items": 476_002, "interactions": 7_824_482}


def prepare_scaled(scale: float, workdir: Path) -> Path:
    """Generated data at ``scale`` x Electronics, prepared (reused when present)."""
    from solidrec.data import PrepareConfig, prepare
    from solidrec.data.synth import SynthConfig, generate, write_generic

    out = workdir / f"prepared-{scale:g}"
    if (out / "manifest.json").exists():
        return out
    users = max(1, int(ELECTRONICS["users"] * scale))
    items = max(480, int(ELECTRONICS["items"] * scale))
    cfg = SynthConfig(
        users=users,
        items=items,
        mean_len=ELECTRONICS["interactions"] / ELECTRONICS["users"],
        min_len=1,
        departments=12,
        leaves_per_department=40,
    )
    raw = workdir / f"raw-{scale:g}"
    inter, items_file = write_generic(generate(cfg), raw)
    prepare(PrepareConfig(format="generic", input=inter, items=items_file, out=out))
    return out


def scale_child(path: Path, threads: int, rounds: int, reps: int) -> dict:
    """In a fresh process: step times at one prepared scale, and the peak RSS."""
    from solidrec.data import load_prepared

    torch.set_num_threads(threads)
    t = time.perf_counter()
    data = load_prepared(path)
    load_s = time.perf_counter() - t
    cases = [c for c in CASES if c.label in ("none", "DUET", "Ours(DUET) stage 2")]
    fns, spe, models = {}, {}, {}
    for case in cases:
        fns[case.label], spe[case.label], models[case.label] = make_step(
            data, "sasrec", case, "cpu"
        )
    times = interleaved(fns, rounds, reps)
    # One pass over the test split: 512 users x (1 + 99) candidates per batch.
    te = data.test
    users = min(EVAL_USERS, len(te.user))
    hist, cand = torch.from_numpy(te.hist[:users]), torch.from_numpy(te.candidates[:users])

    def scorer(model):
        model.eval()
        return lambda: model(hist, cand)

    with torch.no_grad():
        eval_times = interleaved({k: scorer(m) for k, m in models.items()}, rounds, reps)
    out = {
        "items": int(data.num_items),
        "train_rows": int(len(data.train.item)),
        "test_users": int(len(te.user)),
        "load_s": load_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    for label, ts in times.items():
        r = out[label] = {"step_ms": statistics.median(ts) * 1e3, "steps_per_epoch": spe[label]}
        r["epoch_s"] = r["step_ms"] * spe[label] / 1e3
        r["eval_batch_ms"] = statistics.median(eval_times[label]) * 1e3
        r["eval_s"] = r["eval_batch_ms"] * -(-len(te.user) // users) / 1e3
    return out


def run_scale(scales, workdir: Path, threads: int, rounds: int, reps: int) -> list[dict]:
    rows = []
    for s in scales:
        t = time.perf_counter()
        path = prepare_scaled(s, workdir)
        prep_s = time.perf_counter() - t
        cmd = [sys.executable, "-m", "benchmarks.bench_train", "_scale_child", str(path)]
        cmd += [str(threads), str(rounds), str(reps)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        row = {"part": "scale", "scale": s, "threads": threads, "prepare_s": prep_s}
        row.update(json.loads(res.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _secs(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def scale_markdown(rows: list[dict], machine: str) -> str:
    out = [
        "## Training cost against data size (generated, up to Electronics' size)",
        "",
        f"{machine} Generated by `python -m benchmarks.bench_train scale` (do not edit).",
        "",
        f"SASRec, fused ops, {rows[0]['threads'] if rows else '-'} thread(s); one step = "
        f"{SAMPLES_PER_STEP} samples; s/epoch = median step x steps per epoch; eval s = one "
        f"pass over the test split ({EVAL_USERS} users x 100 candidates per batch); peak "
        "RSS = the measuring process (prepared data loaded, three models with Adam state, "
        "their steps).",
        "",
        "| scale | items | train rows | test users | steps/epoch | none s/epoch | DUET "
        "ms/step | DUET s/epoch | DUET eval s | Ours(DUET) s2 ms/step | Ours(DUET) s2 "
        "s/epoch | Ours(DUET) s2 eval s | peak RSS GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, o, n = r["DUET"], r["Ours(DUET) stage 2"], r["none"]
        out.append(
            f"| {r['scale']:g} | {r['items']:,} | {r['train_rows']:,} | {r['test_users']:,} | "
            f"{d['steps_per_epoch']:,} | {_secs(n['epoch_s'])} | {d['step_ms']:.1f} | "
            f"{_secs(d['epoch_s'])} | {_secs(d['eval_s'])} | {o['step_ms']:.1f} | "
            f"{_secs(o['epoch_s'])} | {_secs(o['eval_s'])} | {r['peak_rss_gib']:.2f} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_scale_child"]:
        path, threads, rounds, reps = argv[1:5]
        print(json.dumps(scale_child(Path(path), int(threads), int(rounds), int(reps))))
        return 0
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="part", required=True)
    ep = sub.add_parser("epoch", help="epoch time per generator and stage (Scientific)")
    ep.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ep.add_argument("--backbones", nargs="+", default=BACKBONES)
    ep.add_argument("--backends", nargs="+", default=BACKENDS)
    ab = sub.add_parser("ablate", help="this version's step changes, each undone")
    ab.add_argument("--threads", type=int, nargs="+", default=[1])
    ab.add_argument(
        "--histories",
        type=int,
        nargs="+",
        default=[0, 1024],
        help="histories per step; 0: the paper's 1024 samples (204 histories)",
    )
    sc = sub.add_parser("scale", help="epoch time and memory against data size")
    sc.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    sc.add_argument("--workdir", type=Path, default=Path("/tmp/solidrec_bench_train"))
    sc.add_argument("--threads", type=int, default=2)
    for p in (ep, ab):
        p.add_argument("--tiny", action="store_true", help="the tiny generated set (smoke)")
    for p in (ep, ab, sc):
        p.add_argument("--rounds", type=int, default=9)
        p.add_argument("--reps", type=int, default=5, help="steps per round and case")
        p.add_argument("--out", type=Path, help="write OUT.json and OUT-<part>.md")
    args = ap.parse_args(argv)
    from .common import write_report
    from .run import machine_line

    machine = machine_line()
    if args.part in ("epoch", "ablate") and args.tiny:
        from solidrec.data import load_prepared
        from solidrec.testing import make_tiny_dataset

        data = load_prepared(make_tiny_dataset(CACHE / "tiny"))
    elif args.part in ("epoch", "ablate"):
        data = scientific()
    if args.part == "epoch":
        rows = run_epoch(data, args.threads, args.rounds, args.reps, args.backbones, args.backends)
        md = epoch_markdown(rows, machine)
    elif args.part == "ablate":
        hist = [h or None for h in args.histories]
        rows = run_ablate(data, args.threads, args.rounds, args.reps, hist)
        md = ablate_markdown(rows, machine)
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = run_scale(args.scales, args.workdir, args.threads, args.rounds, args.reps)
        md = scale_markdown(rows, machine)
    write_report(args.out, args.part, rows, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
