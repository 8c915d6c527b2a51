"""Search spaces: a YAML (or mapping) of ``key: spec`` checked against the base config,
one :class:`Param` per key, and the points of a grid."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from solidrec.config import SECTIONS, RunConfig

if TYPE_CHECKING:
    import optuna


PARAM_TYPES = ("float", "int", "categorical")


_SPEC_FIELDS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


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
            raise ValueError(f"{where}: not valid YAML: {one_line(e)}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: unreadable: {one_line(e)}") from None
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


def one_line(e: BaseException | str) -> str:
    """An error message on one line (YAML and Optuna errors span several)."""
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
        raise ValueError(f"{where}: {key}: {one_line(e)}") from None


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


def grid_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every point of a grid space, the last key varying fastest."""
    keys = list(space)
    return [
        dict(zip(keys, v, strict=True))
        for v in itertools.product(*(p.grid() for p in space.values()))
    ]
