"""Typed run configuration: dataclasses loadable from YAML and overridable by ``key=value``."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from solidrec.modes import CODEBOOK_INITS, SOLID_MODES, SolidMode, effective_model, get_mode

BACKBONES = ("din", "gru4rec", "sasrec", "bert4rec")
GENERATORS = ("none", "apg", "duet")
# Inputs of the static backbone per item: its id embedding, or id + category (the
# paper's sample carries the target's category and the history's categories).
ITEM_FEATURES = ("id", "id+category")


@dataclass
class ModelConfig:
    """The model: backbone x generator x SOLID switches (docs/METHOD.md §1-§5)."""

    backbone: str = "sasrec"
    generator: str = "duet"
    solid: str = "off"
    dim: int = 32  # embedding size (Table 7: 1x32)
    hidden: int = 32  # width of the 2-layer dynamic head
    cond_dim: int = 32  # generator condition vector size
    apg_rank: int = 8  # k of APG's U (N_in x k) S (k x k) V (k x N_out)
    layers: int = 2  # transformer blocks (SASRec/BERT4Rec)
    heads: int = 2
    dropout: float = 0.0
    tau: float = 0.01  # SML clip threshold T
    lam: float = 0.1  # SCL loss weight λ
    codebook_init: str = "auto"  # auto (the mode's, modes.MODES) | metacode | random | kmeans
    item_features: str = "id"  # id | id+category (backbone inputs; generators unchanged)

    def validate(self) -> None:
        """Raise ValueError on an unknown choice or an impossible combination."""
        for name, allowed in (
            ("backbone", BACKBONES),
            ("generator", GENERATORS),
            ("solid", SOLID_MODES),
            ("codebook_init", CODEBOOK_INITS),
            ("item_features", ITEM_FEATURES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.solid != "off" and self.generator == "none":
            raise ValueError("SOLID needs a parameter generator: use --generator apg or duet")
        mode = self.mode
        if self.codebook_init == "metacode" and mode.has_codebook and not mode.metacode_ok:
            raise ValueError(
                f"codebook_init=metacode copies the semantic encoder trained in stage 1 of "
                f"solid=full; solid={self.solid} has no trained one when its codebook starts: "
                f"use codebook_init=auto ({mode.codebook_init} here), random or kmeans"
            )

    @property
    def mode(self) -> SolidMode:
        """The row of the mode table (:data:`solidrec.modes.MODES`) for ``solid``."""
        return get_mode(self.solid)

    @property
    def resolved_codebook_init(self) -> str | None:
        """The codebook init this config runs with (``auto`` resolved); None: no codebook."""
        return self.mode.resolve_codebook_init(self.codebook_init)


@dataclass
class TrainConfig:
    """Optimisation, schedule, early stopping and checkpointing."""

    lr: float = 1e-3
    batch_size: int = 1024
    eval_batch_size: int = 512  # users per evaluation batch (x100 candidates)
    max_epochs: int = 30  # per stage
    patience: int = 3  # epochs without validation-AUC improvement before stopping
    stage2_max_epochs: int = 0  # 0 = same as max_epochs
    min_delta: float = 1e-4
    seed: int = 2024
    ckpt_every_steps: int = 50  # mid-epoch checkpoints (resume after a kill)
    threads: int = 0  # torch threads (0 = leave as is)
    progress: bool = True
    max_steps_per_epoch: int = 0  # 0 = full epoch (for smoke runs)
    # Consecutive steps with a non-finite loss that are skipped before training stops.
    nonfinite_patience: int = 0


@dataclass
class RunConfig:
    """Everything a run needs; written resolved to RUNDIR/config.yaml."""

    data: str = ""
    out: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        cfg = cls()
        for key, value in (d or {}).items():
            if key in ("model", "train"):
                sub = getattr(cfg, key)
                for k, v in (value or {}).items():
                    _set(sub, k, v)
            else:
                _set(cfg, key, value)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Load a YAML file with optional ``data``, ``out``, ``model:`` and ``train:`` keys."""
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from solidrec.data.io import atomic_write

        atomic_write(path, self.to_yaml())

    def override(self, items: list[str]) -> None:
        """Apply ``section.key=value`` (or bare ``key=value``, searched in model then train)."""
        for item in items:
            if "=" not in item:
                raise ValueError(f"override must be key=value, got {item!r}")
            key, raw = item.split("=", 1)
            value = yaml.safe_load(raw)
            if "." in key:
                section, k = key.split(".", 1)
                _set(getattr(self, section), k, value)
            elif any(f.name == key for f in fields(ModelConfig)):
                _set(self.model, key, value)
            elif any(f.name == key for f in fields(TrainConfig)):
                _set(self.train, key, value)
            else:
                _set(self, key, value)


def effective_config(d: dict[str, Any]) -> dict[str, Any]:
    """A :meth:`RunConfig.to_dict` (or a saved run's config) as the run computes it: its
    model section through :func:`solidrec.modes.effective_model`. Resumes compare these."""
    return {**d, "model": effective_model(d.get("model") or {})}


def _set(obj: Any, key: str, value: Any) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    if key not in names:
        raise ValueError(f"unknown config key {key!r} for {type(obj).__name__}")
    current = getattr(obj, key)
    # Cast to the declared field's type so YAML '1e-3' or CLI '5' land typed.
    if isinstance(current, bool):
        value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    elif isinstance(current, int) and not isinstance(current, bool):
        value = int(value)
    elif isinstance(current, float):
        value = float(value)
    elif isinstance(current, str):
        value = str(value)
    setattr(obj, key, value)
