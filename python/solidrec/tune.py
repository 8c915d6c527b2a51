"""Hyperparameter search on Optuna (``solidrec tune``, docs/TUNING.md).

Each trial is an ordinary run directory ``STUDY_DIR/trials/NNNN`` trained by
:func:`solidrec.train.loop.train` from the base config (built as ``solidrec train``
builds it) plus the trial's sampled values; its objective is a *validation* metric of
the selected weights (:func:`solidrec.evaluate.evaluate_run` with ``split="valid"``).
The study lives in ``STUDY_DIR/study.db`` (SQLite), so running the same command again
resumes it: finished trials are kept, a trial the previous process was running is
marked failed and retried from its run's last checkpoint.

Optuna is optional (``pip install optuna`` or the ``tune`` extra): imported on use.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from solidrec.config import RESUME_FREE_KEYS, SECTIONS, RunConfig
from solidrec.data.io import atomic_write, write_json
from solidrec.metrics import FULL_METRIC_KEYS, METRIC_KEYS, protocol_of_key

#: Metrics a study may maximise (either protocol).
STUDY_METRICS = METRIC_KEYS + FULL_METRIC_KEYS

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("grid", "random", "tpe")
PARAM_TYPES = ("float", "int", "categorical")
#: One study per directory, so the name is fixed: the directory is the identity.
STUDY_NAME = "solidrec-tune"
STUDY_DB = "study.db"
TRIALS_DIR = "trials"
#: Study user attribute holding what every trial of the study must share.
SETTINGS_ATTR = "solidrec"

_SPEC_FIELDS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


class OptunaMissingError(ImportError):
    """``solidrec tune`` needs optuna, which is not installed."""


def import_optuna() -> Any:
    """The ``optuna`` module; :class:`OptunaMissingError` naming the install command."""
    try:
        import optuna
    except ImportError:
        raise OptunaMissingError(
            "optuna is not installed: pip install optuna "
            "(or install solidrec with its 'tune' extra: pip install -e '.[tune]')"
        ) from None
    return optuna


# -- search space -------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One dimension of a search space: a config key and its distribution."""

    key: str  # canonical ``section.name``
    type: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value of this key (sampled, or fixed for a retried trial)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, log=self.log, step=self.step or 1
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def grid(self) -> list[Any]:
        """The values a grid sampler walks (categorical or int with step only)."""
        if self.type == "categorical":
            return list(self.choices)
        assert self.type == "int" and self.step is not None
        return list(range(int(self.low), int(self.high) + 1, int(self.step)))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a space file writes it (also what a study records)."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        d: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


def load_space(
    source: str | Path | Mapping[str, Any], base: RunConfig | None = None
) -> dict[str, Param]:
    """A validated search space from a YAML file or a mapping ``{key: spec}``.

    ``spec`` is ``{type: float|int, low, high[, log][, step]}``,
    ``{type: categorical, choices: [...]}`` or a bare list of choices. Keys are config
    keys (``model.tau``, ``train.lr``; a bare key as ``--set`` resolves it); every bound
    and choice is typed and checked against ``base`` (default: :class:`RunConfig`'s
    defaults). Raises ValueError, one line naming the file and the key.
    """
    base = base or RunConfig()
    if isinstance(source, Mapping):
        where, raw = "space", source
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise ValueError(f"{where}: no such space file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{where}: not valid YAML: {_one_line(e)}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: unreadable: {_one_line(e)}") from None
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(
            f"{where}: expected a mapping of config keys to specs, e.g. "
            "'model.tau: {type: float, low: 0.001, high: 0.1, log: true}'"
        )
    space: dict[str, Param] = {}
    for key, spec in raw.items():
        param = _param(where, str(key), spec, base)
        if param.key in space:
            raise ValueError(f"{where}: {key}: {param.key} is given twice")
        space[param.key] = param
    return space


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def _field(base: RunConfig, key: str) -> tuple[str, Any]:
    """(canonical ``section.name``, the base's value) of a config key; an unknown key
    raises the config's own error (nearest valid key, list of keys)."""
    section, _, name = key.rpartition(".")
    if not section:
        for sec in SECTIONS:
            if any(f.name == name for f in fields(getattr(base, sec))):
                section = sec
                break
    obj = getattr(base, section) if section in SECTIONS else None
    if obj is None or not any(f.name == name for f in fields(obj)):
        if not section and name in ("data", "out"):
            raise ValueError(f"{name} cannot be tuned: it is the same for every trial")
        copy.deepcopy(base).override([f"{key}=0"])  # raises, naming the key
        raise ValueError(f"unknown config key {key!r}")  # not reached: override raised
    return f"{section}.{name}", getattr(obj, name)


def _apply(base: RunConfig, key: str, value: Any) -> Any:
    """``value`` as the config types it for ``key`` (checked against ``base``: ranges and
    choices); ValueError names the key."""
    cfg = copy.deepcopy(base)
    # JSON is YAML, so the override reads back exactly this value (a string stays one).
    cfg.override([f"{key}={json.dumps(value)}"])
    cfg.validate()
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


def _number(v: Any, what: str, integer: bool) -> float | int:
    # PyYAML reads '1e-4' (no dot) as a string: accept any numeric text.
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"{what} must be a number, got {v!r}")
    try:
        x = float(v)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {v!r}")
    if integer:
        if not x.is_integer():
            raise ValueError(f"{what} must be an integer, got {v!r}")
        return int(x)
    return x


def _param(where: str, key: str, spec: Any, base: RunConfig) -> Param:
    try:
        canonical, current = _field(base, key)
        return _parse_spec(canonical, current, spec, base)
    except ValueError as e:
        raise ValueError(f"{where}: {key}: {_one_line(e)}") from None


def _parse_spec(key: str, current: Any, spec: Any, base: RunConfig) -> Param:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"expected a spec such as {{type: float, low: 0.001, high: 0.1}} or "
            f"{{type: categorical, choices: [...]}}, got {spec!r}"
        )
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in PARAM_TYPES:
        raise ValueError(f"type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - set(_SPEC_FIELDS[kind]))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(map(str, unknown))} for type {kind}; "
            f"valid: {', '.join(_SPEC_FIELDS[kind])}"
        )
    field_kind = type(current).__name__
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"choices must be a non-empty list, got {choices!r}")
        typed = []
        for c in choices:
            if isinstance(c, bool) and isinstance(current, str):
                # YAML 1.1 reads unquoted off/on/yes/no as booleans.
                raise ValueError(f"choice {c!r} is a YAML boolean: quote it ('{c}' as text)")
            if isinstance(c, (dict, list)) or c is None:
                raise ValueError(f"choices must be scalars, got {c!r}")
            typed.append(_apply(base, key, c))
        if len(set(typed)) != len(typed):
            raise ValueError(f"choices repeat a value: {choices!r}")
        return Param(key, kind, choices=tuple(typed))
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ValueError(f"{key} is a {field_kind} key: use type categorical")
    if kind == "float" and isinstance(current, int):
        raise ValueError(f"{key} is an int key: use type int (or categorical)")
    integer = kind == "int"
    for name in ("low", "high"):
        if name not in spec:
            raise ValueError(f"type {kind} needs low and high")
    low = _number(spec["low"], "low", integer)
    high = _number(spec["high"], "high", integer)
    if not low < high:
        raise ValueError(f"low ({low}) must be < high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"log must be true or false, got {log!r}")
    step = None
    if spec.get("step") is not None:
        step = _number(spec["step"], "step", integer)
        if step <= 0:
            raise ValueError(f"step must be > 0, got {spec['step']!r}")
        if log:
            raise ValueError("log and step cannot be combined")
        if integer and (high - low) % step:
            raise ValueError(f"high - low ({high - low}) must be a multiple of step ({step})")
    if log and low <= 0:
        raise ValueError(f"log needs low > 0, got {low}")
    _apply(base, key, low)  # ranges the config refuses (tau < 0, lr <= 0, ...)
    _apply(base, key, high)
    return Param(key, kind, low=low, high=high, log=log, step=step)


def check_grid(space: Mapping[str, Param], where: str = "space") -> int:
    """The grid's size; ValueError naming a key a grid cannot enumerate."""
    size = 1
    for key, p in space.items():
        if p.type == "float" or (p.type == "int" and p.step is None):
            raise ValueError(
                f"{where}: {key}: --sampler grid needs categorical values or an int with "
                f"step, not {p.type}{'' if p.type == 'float' else ' without step'} "
                "(list the values: {type: categorical, choices: [...]})"
            )
        size *= len(p.grid())
    return size


# -- the study ----------------------------------------------------------------------


def _seed(seed: int, k: int) -> int:
    return (seed * 1_000_003 + k) % 2**32


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """A fresh ``random`` or ``tpe`` sampler seeded by ``seed``. (The grid is walked by
    :func:`missing_grid_points`: its trials come with every value fixed.)"""
    optuna = import_optuna()
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def grid_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every point of a grid space, the last key varying fastest."""
    keys = list(space)
    return [
        dict(zip(keys, v, strict=True))
        for v in itertools.product(*(p.grid() for p in space.values()))
    ]


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
    from solidrec.train.loop import config_differences

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
    from solidrec.commands.train import run_config
    from solidrec.data.prepared import read_manifest
    from solidrec.train.lock import RunLock

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
        from solidrec.evaluate import evaluate_run
        from solidrec.train import CheckpointError
        from solidrec.train.loop import train

        values = {key: p.suggest(trial) for key, p in space.items()}
        retry_of = trial.user_attrs.get("retry_of")
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
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
            message = _one_line(f"{type(e).__name__}: {e}")
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


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def study_settings(study: optuna.Study) -> dict[str, Any]:
    """What a solidrec study records: ``metric``, ``space``, base ``config``."""
    return study.user_attrs.get(SETTINGS_ATTR, {})


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial of highest validation metric (lowest number on ties)."""
    optuna = import_optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat row per trial: number, state, params, valid_* and test_* metrics,
    run_dir, retry_of, error, seconds."""
    keys = list(study_settings(study).get("space", {}))
    trials = study.get_trials(deepcopy=False)
    # Full-ranking columns only in a study that evaluated them (every row the same keys).
    full = any(k in (t.user_attrs.get("valid") or {}) for t in trials for k in FULL_METRIC_KEYS)
    metrics = STUDY_METRICS if full else METRIC_KEYS
    rows = []
    for t in trials:
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        row.update({k: t.params.get(k) for k in keys})
        for split in ("valid", "test"):
            m = t.user_attrs.get(split) or {}
            row.update({f"{split}_{k}": m.get(k) for k in metrics})
        row["run_dir"] = t.user_attrs.get("run_dir")
        row["retry_of"] = t.user_attrs.get("retry_of")
        row["error"] = t.user_attrs.get("error")
        row["seconds"] = round(t.duration.total_seconds(), 1) if t.duration else None
        rows.append(row)
    return rows


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """best.json's content: the best trial's number, value, params, metrics, run_dir."""
    best = best_trial(study)
    if best is None:
        return None
    settings = study_settings(study)
    return {
        "metric": settings.get("metric"),
        "split": "valid",
        "value": best.value,
        "trial": best.number,
        "params": best.params,
        "run_dir": best.user_attrs.get("run_dir"),
        "valid": best.user_attrs.get("valid"),
        "test": best.user_attrs.get("test"),
        "complete_trials": len(study.get_trials(deepcopy=False, states=(best.state,))),
    }


def write_results(study: optuna.Study, study_dir: str | Path) -> None:
    """``STUDY_DIR/trials.csv`` (every trial) and ``STUDY_DIR/best.json`` (if any trial
    completed), each written atomically."""
    study_dir = Path(study_dir)
    rows = trial_rows(study)
    if rows:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write(study_dir / "trials.csv", buf.getvalue())
    best = best_summary(study)
    if best is not None:
        write_json(study_dir / "best.json", best)


def format_trials(study: optuna.Study) -> str:
    """The trials as a text table (number, state, params, validation metric, note)
    and a last line naming the best trial."""
    settings = study_settings(study)
    metric = settings.get("metric", "value")
    keys = list(settings.get("space", {}))
    head = ["trial", "state", *keys, f"valid {metric}", "note"]
    lines = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("error") or ""
        if t.user_attrs.get("retry_of") is not None:
            note = f"retry of {t.user_attrs['retry_of']}" + (f"; {note}" if note else "")
        if len(note) > 70:
            note = note[:67] + "..."
        value = "" if t.value is None else f"{t.value:.4f}"
        params = ["" if k not in t.params else _fmt(t.params[k]) for k in keys]
        lines.append([str(t.number), t.state.name, *params, value, note])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *lines]
    ]
    best = best_trial(study)
    if best is None:
        text.append("best: none (no trial completed)")
    else:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        text.append(
            f"best: trial {best.number}, valid {metric} {best.value:.4f} ({shown}); "
            f"run {best.user_attrs.get('run_dir')}"
        )
    return "\n".join(text)


#: The paper's Figure 5: metric -> colour (UAUC blue, NDCG@10 green, Recall@10 orange).
GRID_PLOT_METRICS = {"uauc": "Blues", "ndcg@10": "Greens", "recall@10": "Oranges"}


def read_trials(study_dir: str | Path) -> list[dict[str, Any]]:
    """``STUDY_DIR/trials.csv`` as rows (strings as written; see :func:`trial_rows`)."""
    path = Path(study_dir) / "trials.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trials (run solidrec tune into {study_dir} first)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def grid_table(
    rows: list[dict[str, Any]], x: str, y: str, metric: str, split: str = "test"
) -> tuple[list[float], list[float], dict[tuple[float, float], float]]:
    """(x values, y values, {(x, y): metric}) over the COMPLETE trials of a 2-D grid."""
    col = f"{split}_{metric}"
    cells: dict[tuple[float, float], float] = {}
    for r in rows:
        if r.get("state") != "COMPLETE" or not r.get(col):
            continue
        if x not in r or y not in r:
            raise ValueError(f"the study has no parameter {x if x not in r else y!r}")
        cells[(float(r[x]), float(r[y]))] = float(r[col])
    xs = sorted({k[0] for k in cells})
    ys = sorted({k[1] for k in cells})
    return xs, ys, cells


def _plot_line(
    fig: Any,
    rows: list[dict[str, Any]],
    x: str,
    metrics: Sequence[str],
    split: str,
    study_dir: str | Path,
    out: str | Path,
) -> Path:
    """One panel per metric: its value against the one parameter ``x``, best marked."""
    for i, metric in enumerate(metrics):
        col = f"{split}_{metric}"
        points = sorted((float(r[x]), float(r[col])) for r in rows if x in r and r.get(col))
        if not points:
            raise ValueError(f"{study_dir}: no finished trial with {x} and {split}_{metric}")
        ax = fig.add_subplot(1, len(metrics), i + 1)
        xs, vs = zip(*points, strict=True)
        ax.plot(range(len(xs)), vs, marker="o")
        best = max(range(len(vs)), key=vs.__getitem__)
        ax.scatter([best], [vs[best]], marker="x", color="red", s=60, zorder=3)
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set(xlabel=x, title=f"{split} {metric}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(out, buf.getvalue())
    return Path(out)


def plot_grid(
    study_dir: str | Path,
    out: str | Path,
    x: str = "model.lam",
    y: str = "model.tau",
    metrics: Sequence[str] = tuple(GRID_PLOT_METRICS),
    split: str = "test",
) -> Path:
    """The paper's Figure 5 drawing of a 2-D grid study: one panel per metric, a circle
    per grid point whose radius and colour depth grow with the value (scaled between the
    panel's min and max), the value printed beside it. Written as PNG to ``out``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (or the bench extra)"
        ) from None
    from matplotlib import colormaps

    rows = read_trials(study_dir)
    fig = Figure(figsize=(4.2 * len(metrics), 4.0))
    FigureCanvasAgg(fig)
    done = [r for r in rows if r.get("state") == "COMPLETE"]
    if x == y or (done and all(y not in r for r in done)):
        # A 1-D study (or one axis asked for twice): the metric against x, not x vs x.
        return _plot_line(fig, done, x, metrics, split, study_dir, out)
    for i, metric in enumerate(metrics):
        xs, ys, cells = grid_table(rows, x, y, metric, split)
        if not cells:
            raise ValueError(f"{study_dir}: no finished trial with {split}_{metric}")
        ax = fig.add_subplot(1, len(metrics), i + 1)
        lo, hi = min(cells.values()), max(cells.values())
        cmap = colormaps[GRID_PLOT_METRICS.get(metric, "Purples")]
        for (a, b), v in cells.items():
            t = (v - lo) / (hi - lo) if hi > lo else 1.0
            px, py = xs.index(a), ys.index(b)
            ax.scatter(px, py, s=80 + 900 * t, color=cmap(0.25 + 0.75 * t), edgecolors="k")
            ax.annotate(f"{v:.4f}", (px, py), textcoords="offset points", xytext=(0, -24),
                        ha="center", fontsize=7)  # fmt: skip
        best = max(cells, key=cells.__getitem__)
        ax.scatter(xs.index(best[0]), ys.index(best[1]), marker="x", color="red", s=40)
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.set_ylim(-0.6, len(ys) - 0.4)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{split} {metric} ({lo:.4f}-{hi:.4f})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(out, buf.getvalue())
    return Path(out)
