"""Hyperparameter search on Optuna (``solidrec tune``, docs/TUNING.md).

Each trial is an ordinary run directory ``STUDY_DIR/trials/NNNN`` trained by
:func:`solidrec.train.loop.train` from the base config (built as ``solidrec train``
builds it) plus the trial's sampled values; its objective is a *validation* metric of
the selected weights (:func:`solidrec.evaluate.evaluate_run` with ``split="valid"``).
The study lives in ``STUDY_DIR/study.db`` (SQLite), so running the same command again
resumes it: finished trials are kept, a trial the previous process was running is
marked failed and retried from its run's last checkpoint.

Optuna is optional (``pip install optuna`` or the ``tune`` extra): imported on use.

Modules: :mod:`~solidrec.tune.space` (search spaces), :mod:`~solidrec.tune.study`
(running and resuming a study), :mod:`~solidrec.tune.output` (tables, best trial, plots).
"""

from solidrec.tune.common import (
    SAMPLERS,
    STUDY_METRICS,
    STUDY_NAME,
    OptunaMissingError,
    import_optuna,
)
from solidrec.tune.output import (
    GRID_PLOT_METRICS,
    best_summary,
    best_trial,
    format_trials,
    grid_table,
    plot_grid,
    read_trials,
    study_settings,
    trial_rows,
    write_results,
)
from solidrec.tune.space import PARAM_TYPES, Param, check_grid, grid_points, load_space
from solidrec.tune.study import make_sampler, missing_grid_points, run_study

__all__ = [
    "GRID_PLOT_METRICS",
    "PARAM_TYPES",
    "SAMPLERS",
    "STUDY_METRICS",
    "STUDY_NAME",
    "OptunaMissingError",
    "Param",
    "best_summary",
    "best_trial",
    "check_grid",
    "format_trials",
    "grid_points",
    "grid_table",
    "import_optuna",
    "load_space",
    "make_sampler",
    "missing_grid_points",
    "plot_grid",
    "read_trials",
    "run_study",
    "study_settings",
    "trial_rows",
    "write_results",
]
