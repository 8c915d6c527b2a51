"""``solidrec train`` and ``solidrec quickstart``; :func:`train_run`, the error
handling every command that trains shares (their config:
:func:`solidrec.runs.config.run_config`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solidrec.commands._args import add_overrides
from solidrec.config import (
    BACKBONES,
    GENERATORS,
    RECIPE_CHOICES,
    SOLID_MODES,
    RunConfig,
)
from solidrec.runs.config import run_config
from solidrec.runs.layout import CONFIG, RunDir


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
    p.add_argument("--lr", type=float, help="Adam learning rate (train.lr)")
    p.add_argument(
        "--batch-size", type=int, help="(history, candidate) samples per step (train.batch_size)"
    )
    p.add_argument(
        "--max-steps-per-epoch",
        type=int,
        help="cap on steps per epoch, for smoke runs (train.max_steps_per_epoch; 0 = all)",
    )
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--device", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (train.device)"
    )
    p.add_argument(
        "--recipe",
        choices=RECIPE_CHOICES,
        help="defaults for the settings you do not set: strong (tuned for softmax CE), "
        "paper (the paper's), auto (default: strong for the softmax losses, else paper)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its config.yaml "
        "(flags given with it must agree with the run's)",
    )
    p.add_argument(
        "--allow-schedule-change",
        action="store_true",
        help="with --resume: accept a changed max_epochs, stage2_max_epochs, patience, "
        "min_delta, eval_batch_size or nonfinite_patience (any other change is refused)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="no bars and no per-epoch lines")
    add_overrides(
        p, "overrides, e.g. train.lr=5e-4 tau=0.02 (repeatable; a key given twice is an error)"
    )
    p.set_defaults(func=run_train)

    q = sub.add_parser(
        "quickstart", help="synthetic data → DUET and SOLID(DUET) on SASRec → metrics table"
    )
    q.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.add_argument("--quiet", action="store_true", help="no bars and no per-epoch lines")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    q.set_defaults(func=run_quickstart)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """``solidrec train``'s config: YAML (if any) ← explicit flags ← ``--set`` overrides.

    With ``--resume`` and no ``--config``, the YAML is the run's own config.yaml, so
    ``train --resume --out RUN`` alone continues RUN and any flag given beside it is
    compared with what the run was trained with."""
    config = args.config
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out RUN, the run directory to continue")
        run = RunDir(args.out)
        # A run killed before it wrote config.yaml still has its lock file (or a
        # checkpoint): resumed from the flags, as it was started.
        started = any(p.exists() for p in (run.config, run.lock, run.checkpoints))
        if not started:
            what = "no such directory" if not run.root.exists() else f"no {CONFIG} in it"
            raise ValueError(
                f"--resume: {run.root} holds no run to continue ({what}); drop --resume to "
                "start a new run there"
            )
        if config is None and run.config.is_file():
            config = run.config
    return run_config(
        config,
        data=args.data,
        out=args.out,
        backbone=args.backbone,
        generator=args.generator,
        solid=args.solid,
        seed=args.seed,
        epochs=args.epochs,
        patience=args.patience,
        lr=args.lr,
        batch_size=args.batch_size,
        max_steps_per_epoch=args.max_steps_per_epoch,
        threads=args.threads,
        device=args.device,
        recipe=args.recipe,
        progress=not args.no_progress,
        overrides=args.set,
    )


def train_run(
    command: str,
    config: RunConfig | Callable[[], RunConfig],
    resume: bool = False,
    allow_schedule_change: bool = False,
    quiet: bool = False,
) -> tuple[int, dict[str, Any] | None]:
    """Train ``config`` (or the config calling it returns): ``(0, test metrics)``; else
    one line ``solidrec COMMAND: error: ...`` on stderr and ``(2, None)`` for a bad
    config, dataset or checkpoint, ``(1, None)`` for a locked run or a diverged loss;
    stopped by SIGINT/SIGTERM, one line with the resume command and ``(130 or 143,
    None)``."""
    from solidrec.runs.checkpoint import CheckpointError
    from solidrec.runs.lock import RunLockedError
    from solidrec.train import TrainingDivergedError, TrainingInterrupted, train

    try:
        cfg = config() if callable(config) else config
        metrics = train(
            cfg, resume=resume, allow_schedule_change=allow_schedule_change, quiet=quiet
        )
    except (ValueError, CheckpointError, FileNotFoundError) as e:
        print(f"solidrec {command}: error: {e}", file=sys.stderr)
        return 2, None
    except (RunLockedError, TrainingDivergedError) as e:
        print(f"solidrec {command}: error: {e}", file=sys.stderr)
        return 1, None
    except TrainingInterrupted as e:
        print(f"solidrec {command}: {e}", file=sys.stderr)
        return e.exit_code, None
    return 0, metrics


def run_train(args: argparse.Namespace) -> int:
    rc, metrics = train_run(
        "train",
        lambda: resolve_config(args),
        resume=args.resume,
        allow_schedule_change=args.allow_schedule_change,
        quiet=args.quiet,
    )
    if metrics is not None:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    return rc


def run_quickstart(args: argparse.Namespace) -> int:
    from solidrec.data import PrepareConfig, prepare
    from solidrec.data.synth import SynthConfig, generate, write_generic
    from solidrec.runs.report import format_runs

    t0 = time.perf_counter()
    out: Path = args.out
    raw = out / "raw"
    inter, items = write_generic(generate(SynthConfig()), raw, "csv")
    data = out / "data"
    prepare(PrepareConfig(format="generic", input=inter, items=items, out=data), progress=False)
    runs = []
    for name, solid in (("duet", "off"), ("solid-duet", "full")):
        run = out / "runs" / name
        cfg = run_config(
            data=data,
            out=run,
            backbone="sasrec",
            generator="duet",
            solid=solid,
            epochs=args.epochs,
            patience=2,
            device=args.device,
            progress=not args.no_progress,
        )
        cfg.train.eval_protocol = "both"  # the paper's sampled metrics and full ranking
        if not args.quiet:
            print(f"quickstart: training {name} into {run}", file=sys.stderr)
        # resume=True: restore() starts afresh where there is no checkpoint at all.
        rc, _ = train_run(
            "quickstart", cfg, resume=True, allow_schedule_change=True, quiet=args.quiet
        )
        if rc:
            return rc
        runs.append(run)
    print(format_runs(runs, paper=False))  # synthetic data: no paper row applies
    print(f"\nquickstart finished in {time.perf_counter() - t0:.0f} s; runs in {out / 'runs'}")
    print(
        "Next: `solidrec evaluate RUN --protocol full --ranks ranks.npz` (per-user ranks for "
        "significance tests), `solidrec recommend RUN --history ID ...`, or your own "
        "data with `solidrec prepare` (docs/DATA.md)."
    )
    return 0
