"""``solidrec tune``: a hyperparameter search on Optuna (:func:`solidrec.tune.run_study`,
docs/TUNING.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from solidrec.commands._args import Accumulate, add_overrides
from solidrec.metrics import METRIC_KEYS

# optuna itself is imported only when a study runs
from solidrec.tune import GRID_PLOT_METRICS, SAMPLERS, STUDY_METRICS


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tune`` on ``sub``."""
    p = sub.add_parser(
        "tune",
        help="hyperparameter search (Optuna grid/random/TPE) on a validation metric",
        description="Train one run per trial into STUDY_DIR/trials/NNNN and maximise a validation "
        "metric. The study is kept in STUDY_DIR/study.db: run the same command again to resume.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="STUDY_DIR", help="study directory")
    p.add_argument("--space", type=Path, required=True, metavar="FILE", help="search space YAML")
    p.add_argument("--config", type=Path, help="base YAML config (as for solidrec train)")
    p.add_argument("--data", help="prepared dataset directory")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="grid: every point of a categorical/int-step space; random; tpe (default)",
    )
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="finished trials the study should have in all, resumed runs included "
        "(required for random/tpe; grid: default and maximum its size)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random/tpe sampler seed")
    p.add_argument(
        "--metric",
        choices=STUDY_METRICS,
        default="auc",
        help="validation metric to maximise (full_* keys: full ranking, README)",
    )
    add_overrides(
        p, "base config overrides for every trial, e.g. backbone=sasrec solid=full (repeatable)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="no bars and no per-epoch lines")
    p.set_defaults(func=run_tune)

    g = sub.add_parser(
        "tune-plot",
        help="the paper's Figure 5 drawing of a 2-D grid study (bubbles per metric)",
    )
    g.add_argument("study", type=Path, metavar="STUDY_DIR")
    g.add_argument("--out", type=Path, required=True, help="PNG file")
    g.add_argument("--x", default="model.lam", help="parameter on the horizontal axis")
    g.add_argument("--y", default="model.tau", help="parameter on the vertical axis")
    g.add_argument(
        "--metrics",
        nargs="+",
        action=Accumulate,
        choices=METRIC_KEYS,
        default=list(GRID_PLOT_METRICS),
    )
    g.add_argument(
        "--split", choices=("test", "valid"), default="test", help="whose metrics to draw"
    )
    g.set_defaults(func=run_plot)


def run_tune(args: argparse.Namespace) -> int:
    from solidrec.train import RunLockedError
    from solidrec.tune import OptunaMissingError, best_trial, format_trials, run_study

    try:
        study = run_study(
            args.out,
            args.space,
            data=args.data,
            config=args.config,
            overrides=args.set,
            metric=args.metric,
            sampler=args.sampler,
            trials=args.trials,
            seed=args.seed,
            progress=not (args.no_progress or args.quiet),
            quiet=args.quiet,
        )
    except (ValueError, FileNotFoundError, OptunaMissingError) as e:
        print(f"solidrec tune: error: {e}", file=sys.stderr)
        return 2
    except RunLockedError as e:
        print(f"solidrec tune: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("solidrec tune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(format_trials(study))
    if best_trial(study) is None:
        print("solidrec tune: error: no trial completed (see trials.csv)", file=sys.stderr)
        return 1
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from solidrec.tune import plot_grid

    try:
        out = plot_grid(args.study, args.out, args.x, args.y, args.metrics, args.split)
    except (ValueError, OSError, ImportError) as e:
        print(f"solidrec tune-plot: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
