"""CLI: ``solidrec train`` and ``solidrec quickstart``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from solidrec.config import BACKBONES, GENERATORS, SOLID_MODES, RunConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``quickstart`` on ``sub``."""
    p = sub.add_parser("train", help="train a model (Algorithm 1) into a run directory")
    p.add_argument("--config", type=Path, help="YAML config (data/out/model/train keys)")
    p.add_argument("--data", help="prepared dataset directory")
    p.add_argument("--out", help="run directory")
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--generator", choices=GENERATORS)
    p.add_argument("--solid", choices=SOLID_MODES, help="SOLID modules (Table 2 rows)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int, help="max epochs per stage")
    p.add_argument("--patience", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--resume", action="store_true", help="continue from RUNDIR/checkpoints/last.pt")
    p.add_argument(
        "--allow-schedule-change",
        action="store_true",
        help="with --resume: accept a changed max_epochs, stage2_max_epochs, patience, "
        "min_delta, eval_batch_size or nonfinite_patience (any other change is refused)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides, e.g. train.lr=5e-4 tau=0.02",
    )
    p.set_defaults(func=run_train)

    q = sub.add_parser(
        "quickstart", help="synthetic data → DUET and SOLID(DUET) on SASRec → metrics table"
    )
    q.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=run_quickstart)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """YAML (if any) ← explicit flags ← ``--set`` overrides."""
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    for name in ("data", "out"):
        if getattr(args, name):
            setattr(cfg, name, str(getattr(args, name)))
    for name in ("backbone", "generator", "solid"):
        if getattr(args, name):
            setattr(cfg.model, name, getattr(args, name))
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.epochs is not None:
        cfg.train.max_epochs = args.epochs
    if args.patience is not None:
        cfg.train.patience = args.patience
    if args.threads is not None:
        cfg.train.threads = args.threads
    if args.no_progress:
        cfg.train.progress = False
    cfg.override(args.set)
    cfg.model.validate()
    if not cfg.data or not cfg.out:
        raise ValueError("--data and --out are required (flags or config)")
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from solidrec.train import CheckpointError, RunLockedError, TrainingDivergedError, train

    try:
        cfg = resolve_config(args)
        metrics = train(cfg, resume=args.resume, allow_schedule_change=args.allow_schedule_change)
    except (ValueError, CheckpointError, FileNotFoundError) as e:
        print(f"solidrec train: error: {e}", file=sys.stderr)
        return 2
    except (RunLockedError, TrainingDivergedError) as e:
        print(f"solidrec train: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def run_quickstart(args: argparse.Namespace) -> int:
    from solidrec.data import PrepareConfig, prepare
    from solidrec.data.synth import SynthConfig, generate, write_generic
    from solidrec.report_cli import format_runs
    from solidrec.train import CheckpointError, RunLockedError, TrainingDivergedError, train

    t0 = time.perf_counter()
    out: Path = args.out
    raw = out / "raw"
    inter, items = write_generic(generate(SynthConfig()), raw, "csv")
    data = out / "data"
    prepare(PrepareConfig(format="generic", input=inter, items=items, out=data), progress=False)
    runs = []
    for name, solid in (("duet", "off"), ("solid-duet", "full")):
        cfg = RunConfig(data=str(data), out=str(out / "runs" / name))
        cfg.model.backbone, cfg.model.generator, cfg.model.solid = "sasrec", "duet", solid
        cfg.train.max_epochs, cfg.train.patience = args.epochs, 2
        cfg.train.progress = not args.no_progress
        run = Path(cfg.out)
        # resume=True: restore() starts afresh where there is no checkpoint at all.
        try:
            train(cfg, resume=True, allow_schedule_change=True)
        except (ValueError, CheckpointError, RunLockedError, TrainingDivergedError) as e:
            print(f"solidrec quickstart: error: {e}", file=sys.stderr)
            return 2 if isinstance(e, ValueError | CheckpointError) else 1
        runs.append(run)
    print(format_runs(runs, paper=False))  # synthetic data: no paper row applies
    print(f"\nquickstart finished in {time.perf_counter() - t0:.0f} s; runs in {out / 'runs'}")
    return 0
