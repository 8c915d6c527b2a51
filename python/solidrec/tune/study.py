"""Running a study: open or resume the SQLite study, sample, train and evaluate each
trial as an ordinary run directory, recover a trial a killed process left running."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solidrec.config import RESUME_FREE_KEYS, RunConfig, config_differences
from solidrec.data.prepared import read_manifest
from solidrec.metrics import protocol_of_key
from solidrec.runs.config import run_config
from solidrec.runs.layout import STUDY_DB, TRIALS_DIR
from solidrec.runs.lock import RunLock
from solidrec.tune.common import (
    SAMPLERS,
    SETTINGS_ATTR,
    STUDY_METRICS,
    STUDY_NAME,
    import_optuna,
)
from solidrec.tune.output import fmt_value, write_results
from solidrec.tune.space import Param, check_grid, grid_points, load_space, one_line

if TYPE_CHECKING:
    import optuna


def _seed(seed: int, k: int) -> int:
    return (seed * 1_000_003 + k) % 2**32


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """A fresh ``random`` or ``tpe`` sampler seeded by ``seed``. (The grid is walked by
    :func:`missing_grid_points`: its trials come with every value fixed.)"""
    optuna = import_optuna()
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _values(t: optuna.trial.FrozenTrial, space: Mapping[str, Param]) -> dict[str, Any]:
    """A trial's values of the space's keys: sampled, or fixed (enqueued, not started)."""
    fixed = {**t.system_attrs.get("fixed_params", {}), **t.params}
    return {k: fixed.get(k) for k in space}


def _counts(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that took (or takes) its point: finished for good, waiting or running.
    An interrupted one does not: its retry does."""
    return not t.user_attrs.get("interrupted")


def missing_grid_points(study: optuna.Study, space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """The grid points no trial of ``study`` has taken. Points are matched by value, not
    by Optuna's GridSampler ids (which depend on its seed's shuffle of the grid), so a
    rerun with any seed or Optuna version completes exactly the missing points. A trial
    that failed (not interrupted) keeps its point: rerunning would fail again."""
    taken = [_values(t, space) for t in study.get_trials(deepcopy=False) if _counts(t)]
    return [p for p in grid_points(space) if p not in taken]


def _settings(
    base: RunConfig, space: Mapping[str, Param], metric: str, fingerprint: str | None
) -> dict[str, Any]:
    return {
        "metric": metric,
        "space": {k: p.to_dict() for k, p in space.items()},
        "config": base.to_dict(),
        "data_fingerprint": fingerprint,
    }


def _check_same_study(
    study_dir: Path, saved: dict[str, Any], now: dict[str, Any], base: RunConfig
) -> None:
    """Refuse to add trials of another metric, space, base config or dataset to a study:
    its trials would not be comparable."""
    fresh = f"; use a new --out for a different study (this one is {study_dir})"
    if saved.get("metric") != now["metric"]:
        raise ValueError(
            f"{study_dir} holds a study maximising valid {saved.get('metric')}, "
            f"not {now['metric']}{fresh}"
        )
    old, new = saved.get("space", {}), now["space"]
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if keys:
        raise ValueError(f"the search space differs from the study's in {', '.join(keys)}{fresh}")
    # Keys the trials set themselves, and those that never change results, may differ.
    diff = {
        k: v
        for k, v in config_differences(saved.get("config", {}), base).items()
        if k not in RESUME_FREE_KEYS and k not in new
    }
    if diff:
        what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"the base config differs from the study's: {what}{fresh}")
    if saved.get("data_fingerprint") != now["data_fingerprint"]:
        raise ValueError(f"--data is not the prepared dataset the study was run on{fresh}")


def _recover(storage: Any, study_id: int, log: Callable[[str], None]) -> None:
    """Fail the trials a dead tuner left RUNNING and queue one retry of each interrupted
    trial. Called with the study directory locked, so no live process owns them."""
    optuna = import_optuna()
    TrialState = optuna.trial.TrialState
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        # Attributes first: a finished trial can no longer be changed.
        storage.set_trial_user_attr(tid, "interrupted", True)
        storage.set_trial_user_attr(
            tid, "error", "interrupted: the tuner stopped while this trial ran"
        )
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state != TrialState.FAIL or not t.user_attrs.get("interrupted"):
            continue
        if t.number in retried:  # idempotent: a kill right after queueing loses nothing
            continue
        # The retry takes the interrupted trial's values (all of them, for a grid point).
        fixed = t.system_attrs.get("fixed_params") or t.params
        system = {"fixed_params": fixed} if fixed else {}
        storage.create_new_trial(
            study_id,
            template_trial=optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=t.params,
                distributions=t.distributions,
                user_attrs={"retry_of": t.number},
                system_attrs=system,
            ),
        )
        log(f"solidrec tune: trial {t.number} was interrupted; queued to run again")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_study(
    out: str | Path,
    space: str | Path | Mapping[str, Any],
    *,
    data: str | Path | None = None,
    config: str | Path | RunConfig | None = None,
    overrides: Sequence[str] = (),
    metric: str = "auc",
    sampler: str = "tpe",
    trials: int | None = None,
    seed: int = 0,
    progress: bool = True,
    quiet: bool = False,
    log: Callable[[str], None] | None = _stderr,
) -> optuna.Study:
    """Run (or resume) the study in ``out`` and return it.

    The base config is ``solidrec train``'s: YAML ``config`` ← ``data`` ← ``overrides``
    (``key=value``); each trial adds its sampled ``space`` values and trains into
    ``out/trials/NNNN``. The objective, maximised, is the trial's validation ``metric``
    (one of :data:`~solidrec.metrics.METRIC_KEYS`). ``trials`` is the study's total of
    finished trials (interrupted ones excluded); under ``sampler="grid"`` it defaults to
    the grid's size. ``quiet``/``progress`` are the trials' per-epoch lines and bars;
    ``log`` gets one line per trial (None: silent). Writes ``out/trials.csv`` and
    ``out/best.json``. Raises ValueError (one line) on a bad space, config, metric or a
    study of other settings in ``out``, :class:`OptunaMissingError`,
    :class:`~solidrec.train.RunLockedError` when another tuner holds ``out``.
    """
    optuna = import_optuna()
    say = log or (lambda _line: None)
    if metric not in STUDY_METRICS:
        raise ValueError(f"--metric must be one of {', '.join(STUDY_METRICS)}, got {metric!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if trials is not None and trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    study_dir = Path(out)
    if isinstance(config, RunConfig):
        base = copy.deepcopy(config)
        base.out = str(study_dir)
        if data:
            base.data = str(data)
        if not progress:
            base.train.progress = False
        base.override(list(overrides))
        base.validate()
        if not base.data:
            raise ValueError("--data is required (flag or config)")
    else:
        base = run_config(config, data=data, out=study_dir, progress=progress, overrides=overrides)
    fingerprint = read_manifest(base.data).get("fingerprint")
    params = load_space(space, base)
    where = "space" if isinstance(space, Mapping) else str(space)
    if sampler == "grid":
        size = check_grid(params, where)
        if trials is not None and trials > size:
            raise ValueError(f"--trials {trials} exceeds the grid's {size} points")
        target = size if trials is None else trials
    elif trials is None:
        raise ValueError(f"--trials N is required with --sampler {sampler}")
    else:
        target = trials
    settings = _settings(base, params, metric, fingerprint)

    db = study_dir / STUDY_DB
    trials_dir = study_dir / TRIALS_DIR
    if not db.exists() and trials_dir.is_dir() and any(trials_dir.iterdir()):
        raise ValueError(
            f"{trials_dir} holds trial runs but {db} is missing: use a new --out "
            "(or remove the old trials)"
        )
    study_dir.mkdir(parents=True, exist_ok=True)
    verbosity = optuna.logging.get_verbosity()
    # Optuna logs each failure with its traceback: the one-line summaries here suffice,
    # unless the command runs with -v.
    if logging.getLogger().isEnabledFor(logging.INFO):
        optuna.logging.set_verbosity(optuna.logging.INFO)
    else:
        optuna.logging.set_verbosity(optuna.logging.ERROR if log else optuna.logging.CRITICAL)
    # One tuner per study directory: a RUNNING trial found under this lock belongs to a
    # dead process, so it can be failed and retried at once (no heartbeat to wait for).
    with RunLock(study_dir):
        try:
            storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
            study = _open_study(optuna, storage, study_dir, settings, base, say)
            _optimize(study, params, base, settings, sampler, target, seed, study_dir, quiet, say)
            write_results(study, study_dir)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return study


def _open_study(
    optuna: Any,
    storage: Any,
    study_dir: Path,
    settings: dict[str, Any],
    base: RunConfig,
    say: Callable[[str], None],
) -> optuna.Study:
    try:
        study_id = storage.get_study_id_from_name(STUDY_NAME)
    except KeyError:
        study_id = None
    if study_id is not None:
        saved = storage.get_study_user_attrs(study_id).get(SETTINGS_ATTR)
        if saved is not None:
            _check_same_study(study_dir, saved, settings, base)
        elif storage.get_all_trials(study_id, deepcopy=False):
            raise ValueError(f"{study_dir / STUDY_DB} is not a solidrec tune study")
        _recover(storage, study_id, say)
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"{study_dir / STUDY_DB}: the study does not maximise")
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, settings)
    return study


def _optimize(
    study: optuna.Study,
    space: Mapping[str, Param],
    base: RunConfig,
    settings: dict[str, Any],
    sampler: str,
    target: int,
    seed: int,
    study_dir: Path,
    quiet: bool,
    say: Callable[[str], None],
) -> None:
    optuna = import_optuna()
    TrialState = optuna.trial.TrialState
    metric = settings["metric"]
    trials_dir = study_dir / TRIALS_DIR

    def train_trial(trial: optuna.Trial, run_dir: Path) -> float:
        # torch only once a trial runs (the CLI's --help and checks stay light)
        from solidrec.evaluate import evaluate_run
        from solidrec.runs.checkpoint import CheckpointError
        from solidrec.train.loop import train

        values = {key: p.suggest(trial) for key, p in space.items()}
        retry_of = trial.user_attrs.get("retry_of")
        shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in values.items())
        again = f" (retry of {retry_of})" if retry_of is not None else ""
        say(f"solidrec tune: trial {trial.number}{again}: {shown} -> {run_dir}")
        cfg = copy.deepcopy(base)
        cfg.out = str(run_dir)
        cfg.override([f"{k}={json.dumps(v)}" for k, v in values.items()])
        cfg.validate()
        resume = retry_of is not None
        if resume:
            old = trials_dir / f"{retry_of:04d}"
            if old.is_dir() and not run_dir.exists():
                # Continue the interrupted run from its last checkpoint (training resumes
                # exactly), under this trial's number.
                os.replace(old, run_dir)
        try:
            test = train(cfg, resume=resume, quiet=quiet)
        except CheckpointError as e:
            if not resume:
                raise
            say(f"solidrec tune: trial {trial.number}: cannot resume ({e}); from scratch")
            shutil.rmtree(run_dir, ignore_errors=True)
            test = train(cfg, quiet=quiet)
        # A full-ranking metric is evaluated with the sampled ones beside it.
        protocol = "both" if protocol_of_key(metric) == "full" else "sampled"
        valid = evaluate_run(run_dir, split="valid", device=cfg.train.device, protocol=protocol)
        trial.set_user_attr("valid", valid)
        # Recorded for reporting only: selection never looks at the test split.
        trial.set_user_attr("test", {k: float(test[k]) for k in STUDY_METRICS if k in test})
        if not math.isfinite(valid[metric]):
            raise ValueError(f"validation {metric} is {valid[metric]}")
        return valid[metric]

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        run_dir = trials_dir / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            value = train_trial(trial, run_dir)
        except KeyboardInterrupt:
            # Optuna marks the trial failed; the next run retries it (see _recover).
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("error", "interrupted (KeyboardInterrupt)")
            raise
        except Exception as e:
            message = one_line(f"{type(e).__name__}: {e}")
            trial.set_user_attr("error", message)
            say(f"solidrec tune: trial {trial.number} failed: {message}")
            raise
        seconds = time.perf_counter() - t0
        say(f"solidrec tune: trial {trial.number}: valid {metric} {value:.4f} ({seconds:.0f} s)")
        return value

    grid = grid_points(space) if sampler == "grid" else []
    while True:
        existing = study.get_trials(deepcopy=False)
        finished = [t for t in existing if t.state.is_finished() and _counts(t)]
        if grid:
            finished = [t for t in finished if _values(t, space) in grid]
        if len(finished) >= target:
            break
        if grid and not any(t.state == TrialState.WAITING for t in existing):
            missing = missing_grid_points(study, space)
            if not missing:
                break
            study.enqueue_trial(missing[0])
        # A fresh sampler per trial, seeded by the count of sampled (not retried) trials:
        # a resumed study draws what an uninterrupted one would, rather than the seed's
        # first draws again.
        k = sum(1 for t in existing if "retry_of" not in t.user_attrs)
        study.sampler = make_sampler(sampler, _seed(seed, k))
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        write_results(study, study_dir)


# -- results ------------------------------------------------------------------------
