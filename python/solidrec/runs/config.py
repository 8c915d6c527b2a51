"""Building a run's config: the one function every command that trains calls
(``train``, ``quickstart``, ``reproduce``, ``tune``), like RecBole's quick start."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from solidrec.config import RunConfig, flat_config


def run_config(
    config: str | Path | None = None,
    *,
    data: str | Path | None = None,
    out: str | Path | None = None,
    backbone: str | None = None,
    generator: str | None = None,
    solid: str | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    patience: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    max_steps_per_epoch: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    recipe: str | None = None,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> RunConfig:
    """A validated run config: YAML ``config`` (if any) ← the given values ←
    ``overrides`` (``key=value``, see :meth:`RunConfig.override`) ← the recipe's values
    for every key none of these set (:meth:`RunConfig.apply_recipe`). ``None`` (and
    ``progress=True``) keeps the YAML's or the default value."""
    cfg = RunConfig.load(config) if config else RunConfig()
    given = set(flat_config(_yaml_mapping(config))) if config else set()
    if data:
        cfg.data = str(data)
    if out:
        cfg.out = str(out)
    for name, value in (("backbone", backbone), ("generator", generator), ("solid", solid)):
        if value:
            setattr(cfg.model, name, value)
            given.add(f"model.{name}")
    for name, value in (
        ("seed", seed),
        ("max_epochs", epochs),
        ("patience", patience),
        ("lr", lr),
        ("batch_size", batch_size),
        ("max_steps_per_epoch", max_steps_per_epoch),
        ("threads", threads),
        ("device", device),
        ("recipe", recipe),
    ):
        if value is not None:
            setattr(cfg.train, name, value)
            given.add(f"train.{name}")
    if not progress:
        cfg.train.progress = False
    given |= cfg.override(list(overrides))
    cfg.apply_recipe(given)
    cfg.validate()
    if not cfg.data or not cfg.out:
        raise ValueError("--data and --out are required (flags or config)")
    return cfg


def _yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config holds (RunConfig.load has already refused anything else)."""
    raw = yaml.safe_load(Path(path).read_text())
    return raw if isinstance(raw, dict) else {}
