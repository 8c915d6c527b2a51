"""Typed run configuration: dataclasses loadable from YAML and overridable by ``key=value``."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from solidrec.data.io import atomic_write
from solidrec.metrics import (
    FULL_METRIC_KEYS,
    METRIC_KEYS,
    PROTOCOL_CHOICES,
    metric_keys,
    protocol_of_key,
    protocols_of,
)
from solidrec.modes import CODEBOOK_INITS, SOLID_MODES, SolidMode, effective_model, get_mode

if TYPE_CHECKING:
    import torch

BACKBONES = ("din", "gru4rec", "sasrec", "bert4rec")
GENERATORS = ("none", "apg", "duet")
# Inputs of the static backbone per item: its id embedding, or id + category (the
# paper's sample carries the target's category and the history's categories).
# With "+embedding", the prepared dataset's stored item embeddings (prepare
# --embedding-feature), projected to dim, are added too.
#: ``train.loss`` values (solidrec.train.losses). bce: the paper's (Eq. 4); softmax:
#: cross-entropy over every item; sampled_softmax: over the positive and sampled negatives.
LOSSES = ("bce", "softmax", "sampled_softmax")
#: ``train.negative_sampling`` values for ``sampled_softmax`` with ``num_negatives > 0``.
NEGATIVE_SAMPLERS = ("uniform", "popularity")
#: ``train.item_optimizer`` values: how the item id table is updated. dense: with the rest
#: of the model by Adam (every row, every step); lazy_adam / rowwise_adagrad: sparse
#: gradients and the fused row-wise step of ``solid_ext.optim`` on the rows a step
#: touched; auto: dense below AUTO_SPARSE_ITEMS items, lazy_adam from there
#: (docs/TRAINING.md, "Training at catalog scale").
ITEM_OPTIMIZERS = ("auto", "dense", "lazy_adam", "rowwise_adagrad")
#: Catalog size from which ``item_optimizer=auto`` takes lazy_adam (BENCHMARKS.md, "Item
#: table": where the dense update's cost stops being negligible beside a step). Below it
#: the paper's datasets keep dense Adam, and their results bit for bit.
AUTO_SPARSE_ITEMS = 20_000


def resolve_item_optimizer(name: str, num_items: int) -> str:
    """``train.item_optimizer`` as a run uses it: ``auto`` resolved by the catalog size."""
    if name != "auto":
        return name
    return "lazy_adam" if num_items >= AUTO_SPARSE_ITEMS else "dense"


ITEM_FEATURES = ("id", "id+category", "id+embedding", "id+category+embedding")
#: ``model.block``: where the transformer blocks (SASRec, BERT4Rec) normalise. pre_ln:
#: LayerNorm before attention and feed-forward, one more after the last block (ours);
#: post_ln: after each residual sum (the SASRec paper's and RecBole's).
BLOCKS = ("pre_ln", "post_ln")
#: ``model.embed``: how a transformer's input is formed. scale: item x sqrt(dim) +
#: position (ours); norm: LayerNorm(item + position), then dropout (RecBole's SASRec).
EMBEDS = ("scale", "norm")


#: ``train.recipe`` values: settings a run takes for every key of the recipe the user did
#: not set (flag, ``--set`` or YAML). paper: the paper's (the dataclass defaults: Adam
#: 1e-3, no weight decay, selection on AUC); strong: what the TPE studies of SASRec with
#: softmax CE chose on Scientific (docs/RESULTS.md, "Tuned per backbone"); auto: strong
#: for the softmax losses, paper for bce.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "strong": {
        "train.lr": 9.7e-3,
        "model.dropout": 0.0,
        "train.weight_decay": 1e-3,
        "train.select_metric": "ndcg@10",
        "train.max_epochs": 60,
        "train.patience": 5,
    },
}
RECIPE_CHOICES = ("auto", *RECIPES)
#: What ``train.recipe=auto`` means per ``train.loss``.
LOSS_RECIPE = {"bce": "paper", "softmax": "strong", "sampled_softmax": "strong"}

#: Config keys that never change what a run computes: a resume may differ in them.
RESUME_FREE_KEYS = frozenset(
    {
        "data",
        "out",
        "train.threads",
        "train.progress",
        "train.ckpt_every_steps",
        "train.device",
        "train.test_protocol",  # read once, after training
        # its effect is in the keys it set, which are compared
        "train.recipe",
    }
)
#: Keys a resume may change only with ``allow_schedule_change`` (``--allow-schedule-change``):
#: they extend or shorten the schedule (or the selection) but not the optimisation itself.
RESUME_SCHEDULE_KEYS = frozenset(
    {
        "train.max_epochs",
        "train.stage2_max_epochs",
        "train.patience",
        "train.min_delta",
        "train.eval_batch_size",
        "train.nonfinite_patience",
    }
)


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
    # Most recent history items the model reads (0: all the dataset was prepared with);
    # a tunable setting without preparing the data again (PreparedDataset.with_history).
    history_len: int = 0
    # Architecture variants, for comparing with other libraries' SASRec (docs/RESULTS.md,
    # "Where the gap to RecBole's SASRec comes from"); the defaults are the model every
    # result before them used.
    head_layers: int = 2  # layers of the head; 0 (generator none, not DIN): no head
    block: str = "pre_ln"  # BLOCKS
    embed: str = "scale"  # EMBEDS
    init_std: float = 0.1  # std of the id tables' N(0, std^2) initialisation

    def validate(self) -> None:
        """Raise ValueError on an unknown choice or an impossible combination."""
        for name, allowed in (
            ("backbone", BACKBONES),
            ("generator", GENERATORS),
            ("solid", SOLID_MODES),
            ("codebook_init", CODEBOOK_INITS),
            ("item_features", ITEM_FEATURES),
            ("block", BLOCKS),
            ("embed", EMBEDS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        _check_ranges(
            self,
            "model",
            positive=("dim", "hidden", "cond_dim", "apg_rank", "layers", "heads"),
            nonnegative=("lam", "tau", "history_len", "head_layers"),  # tau = 0: an ablation
        )
        if not 0.0 < self.init_std <= 1.0:
            raise ValueError(f"model.init_std must be in (0, 1], got {self.init_std!r}")
        if self.head_layers == 0 and (self.generator != "none" or self.backbone == "din"):
            raise ValueError(
                "model.head_layers=0 (no head) needs generator none and a backbone scored "
                f"by a dot product, got generator {self.generator!r}, backbone "
                f"{self.backbone!r}: the generators' weights and DIN's logit live in the head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if self.backbone in ("sasrec", "bert4rec") and self.dim % self.heads:
            raise ValueError(
                f"model.dim ({self.dim}) must be a multiple of model.heads ({self.heads})"
            )
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
    patience: int = 3  # epochs without improvement of select_metric before stopping
    # Validation metric that selects the best epoch and stops early: one of the keys of
    # eval_protocol (metrics.METRIC_KEYS sampled, metrics.FULL_METRIC_KEYS full).
    select_metric: str = "auc"
    # What validation and the test split report (metrics.PROTOCOL_CHOICES): sampled (the
    # paper's 1 + 99 candidates) | full (rank among all items, seen ones left out) | both.
    eval_protocol: str = "sampled"
    # What the test split reports, when it should differ from validation: "" (the same
    # as eval_protocol) or a PROTOCOL_CHOICES value. Selecting on the sampled protocol
    # and testing under both keeps a target-dependent backbone (DIN, whose full ranking
    # costs users x items pair evaluations) from paying full ranking every epoch.
    test_protocol: str = ""
    stage2_max_epochs: int = 0  # 0 = same as max_epochs
    min_delta: float = 1e-4
    seed: int = 2024
    ckpt_every_steps: int = 50  # mid-epoch checkpoints (resume after a kill)
    threads: int = 0  # torch threads (0 = leave as is)
    progress: bool = True
    max_steps_per_epoch: int = 0  # 0 = full epoch (for smoke runs)
    # Consecutive steps with a non-finite loss that are skipped before training stops.
    nonfinite_patience: int = 0
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    # Objective (a Loss of solidrec.train.losses.LOSS_TYPES): bce (the paper's) | softmax |
    # sampled_softmax.
    loss: str = "bce"
    # sampled_softmax: negatives drawn per history each step (0: the prepared ones).
    num_negatives: int = 0
    negative_sampling: str = "uniform"  # uniform | popularity (logQ-corrected)
    label_smoothing: float = 0.0  # softmax losses
    weight_decay: float = 0.0  # Adam's L2 penalty
    # sampled_softmax: the num_negatives are drawn once per step and scored by every
    # history (O(batch x negatives) whatever the catalog), not drawn per history.
    shared_negatives: bool = False
    # sampled_softmax: the other histories' positives of the step are negatives too.
    in_batch_negatives: bool = False
    # The item id table's optimizer (ITEM_OPTIMIZERS); item_lr 0 = train.lr.
    item_optimizer: str = "auto"
    item_lr: float = 0.0
    # RECIPE_CHOICES: defaults for the keys of RECIPES[...] the user did not set; written
    # resolved (paper or strong) to config.yaml with the values it chose.
    recipe: str = "auto"

    def validate(self) -> None:
        """Raise ValueError naming the key on a value no run can use."""
        _check_ranges(
            self,
            "train",
            positive=("lr", "batch_size", "eval_batch_size", "max_epochs", "patience"),
            nonnegative=(
                "stage2_max_epochs",
                "min_delta",
                "ckpt_every_steps",
                "threads",
                "max_steps_per_epoch",
                "nonfinite_patience",
                "num_negatives",
                "weight_decay",
                "item_lr",
            ),
        )
        parse_device(self.device, "train.device")
        if not 0 <= self.seed < 2**63:  # torch and numpy take 64-bit seeds
            raise ValueError(f"train.seed must be in [0, 2**63), got {self.seed!r}")
        if self.eval_protocol not in PROTOCOL_CHOICES:
            raise ValueError(
                f"train.eval_protocol must be one of {PROTOCOL_CHOICES}, got {self.eval_protocol!r}"
            )
        if self.test_protocol not in ("",) + tuple(PROTOCOL_CHOICES):
            raise ValueError(
                f"train.test_protocol must be empty (as train.eval_protocol) or one of "
                f"{PROTOCOL_CHOICES}, got {self.test_protocol!r}"
            )
        keys = metric_keys(self.eval_protocol)
        if self.select_metric not in keys:
            hint = ""
            if self.select_metric in METRIC_KEYS + FULL_METRIC_KEYS:
                p = protocol_of_key(self.select_metric)
                hint = f" (a {p} metric: set train.eval_protocol={p} or both)"
            raise ValueError(
                f"train.select_metric must be one of train.eval_protocol={self.eval_protocol}'s "
                f"metrics {keys}, got {self.select_metric!r}{hint}"
            )
        for name, allowed in (
            ("loss", LOSSES),
            ("recipe", RECIPE_CHOICES),
            ("negative_sampling", NEGATIVE_SAMPLERS),
            ("item_optimizer", ITEM_OPTIMIZERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"train.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"train.label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
            )
        if self.loss == "bce" and (self.num_negatives or self.label_smoothing):
            raise ValueError(
                "train.num_negatives and train.label_smoothing apply to the softmax losses; "
                "train.loss is bce (its negatives are the prepared ones: prepare --neg-train)"
            )
        if self.num_negatives and self.loss != "sampled_softmax":
            raise ValueError("train.num_negatives applies to train.loss=sampled_softmax only")
        if (self.shared_negatives or self.in_batch_negatives) and self.loss != "sampled_softmax":
            raise ValueError(
                "train.shared_negatives and train.in_batch_negatives apply to "
                f"train.loss=sampled_softmax only, got train.loss={self.loss}"
            )
        if self.shared_negatives and not self.num_negatives:
            raise ValueError(
                "train.shared_negatives draws train.num_negatives per step: set it > 0 (e.g. 512)"
            )
        if self.negative_sampling != "uniform" and not self.num_negatives:
            raise ValueError(
                f"train.negative_sampling={self.negative_sampling} draws negatives: set "
                "train.num_negatives > 0 (the prepared negatives are uniform)"
            )


@dataclass
class RunConfig:
    """Everything a run needs; written resolved to RUNDIR/config.yaml."""

    data: str = ""
    out: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Validate both sections (ValueError naming the key)."""
        self.model.validate()
        self.train.validate()
        if self.train.loss == "softmax" and self.model.backbone == "din":
            raise ValueError(
                "train.loss=softmax scores every item with one user vector; DIN's depends on "
                "the candidate: use train.loss=sampled_softmax (or bce) with din"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> RunConfig:
        """A config from nested ``{data, out, model: {...}, train: {...}}``; unknown keys
        and malformed sections raise ValueError naming the key and the valid ones."""
        if not isinstance(d, dict):
            raise ValueError(
                f"{source}: expected a mapping of keys (data, out, model, train), "
                f"got {type(d).__name__} {d!r}"
            )
        cfg = cls()
        _refuse_unknown(d, source)
        for key, value in d.items():
            if key in SECTIONS:
                if value is None:
                    continue
                if not isinstance(value, dict):
                    valid = ", ".join(f.name for f in fields(getattr(cfg, key)))
                    raise ValueError(
                        f"{source}: {key!r} must be a mapping of its keys ({valid}), "
                        f"got {value!r}; e.g. '{key}:' then '  "
                        f"{fields(getattr(cfg, key))[0].name}: ...' on the next line"
                    )
                for k, v in value.items():
                    try:
                        _set(getattr(cfg, key), k, v, key)
                    except ValueError as e:
                        raise ValueError(f"{source}: {e}") from None
            elif key in ("data", "out"):
                _set(cfg, key, value)
            else:
                valid = ("data", "out", *SECTIONS)
                raise ValueError(
                    f"{source}: unknown key {key!r}{_did_you_mean(key, valid)}; "
                    f"valid top-level keys: {', '.join(valid)}"
                )
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Load a YAML file with optional ``data``, ``out``, ``model:`` and ``train:`` keys."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        return cls.from_dict(raw or {}, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        atomic_write(path, self.to_yaml())

    def apply_recipe(self, given: set[str] | None = None) -> dict[str, Any]:
        """Resolve ``train.recipe=auto`` by ``train.loss`` (:data:`LOSS_RECIPE`) and set
        every key of the recipe that is not in ``given`` (full keys, ``train.lr``; None:
        the keys whose value differs from the default, for configs built in Python).
        Returns ``{key: value}`` of the recipe as the run uses it; idempotent."""
        if self.train.recipe == "auto":
            self.train.recipe = LOSS_RECIPE.get(self.train.loss, "paper")
        recipe = self._recipe()
        if given is None:
            default = flat_config(RunConfig().to_dict())
            now = flat_config(self.to_dict())
            given = {k for k, v in now.items() if v != default.get(k)}
        for key, value in recipe.items():
            if key not in given:
                section, name = key.split(".")
                setattr(getattr(self, section), name, value)
        return self.recipe_values()

    def _recipe(self) -> dict[str, Any]:
        """The resolved recipe's settings for this config (``auto`` read as by loss)."""
        name = self.train.recipe
        if name == "auto":
            name = LOSS_RECIPE.get(self.train.loss, "paper")
        recipe = dict(RECIPES.get(name, {}))
        if "train.select_metric" in recipe and "sampled" not in protocols_of(
            self.train.eval_protocol
        ):
            recipe["train.select_metric"] = f"full_{recipe['train.select_metric']}"
        return recipe

    def recipe_values(self) -> dict[str, Any]:
        """``{key: value}`` this config has for each key of its recipe (its own value
        where the user set one); changes nothing."""
        return {key: self._value_of(key) for key in self._recipe()}

    def override(self, items: Sequence[str]) -> set[str]:
        """Apply ``section.key=value`` (or bare ``key=value``, searched in model then
        train); returns the full keys set. A key given twice with different values is an
        error naming both."""
        given: dict[str, tuple[str, Any]] = {}  # full key -> (the item, its typed value)
        for item in items:
            if "=" not in item:
                raise ValueError(f"override must be key=value, got {item!r}")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw  # typed (or refused) by _set, which names the key
            full = self._override_one(key, value, item)
            typed = self._value_of(full)
            if full in given and given[full][1] != typed:
                raise ValueError(f"{full} given twice: {given[full][0]!r} and {item!r}; keep one")
            given[full] = (item, typed)
        return set(given)

    def _value_of(self, full: str) -> Any:
        obj: Any = self
        for part in full.split("."):
            obj = getattr(obj, part)
        return obj

    def _override_one(self, key: str, value: Any, item: str) -> str:
        """Set one override; return its full key (``section.key`` or ``data``/``out``)."""
        if "." in key:
            section, k = key.split(".", 1)
            if section not in SECTIONS:
                raise ValueError(
                    f"unknown config section {section!r} in {item!r}"
                    f"{_did_you_mean(section, SECTIONS)}; sections: {', '.join(SECTIONS)}"
                )
            _set(getattr(self, section), k, value, section)
            return f"{section}.{k}"
        for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
            if any(f.name == key for f in fields(cls)):
                _set(getattr(self, section), key, value, section)
                return f"{section}.{key}"
        names = [f.name for f in fields(self) if f.name not in SECTIONS]
        full = {n: n for n in names}
        for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
            full.update({f.name: f"{section}.{f.name}" for f in fields(cls)})
        if key not in names:
            # A bare typo is compared with the bare names: 'taus' suggests model.tau.
            close = difflib.get_close_matches(key, list(full), n=1, cutoff=0.6)
            hint = f" (did you mean {full[close[0]]!r}?)" if close else ""
            raise ValueError(
                f"unknown config key {key!r}{hint}; valid keys: {', '.join(full.values())}"
            )
        _set(self, key, value)
        return key


#: The nested sections of a :class:`RunConfig`.
SECTIONS = ("model", "train")


def parse_device(spec: str, name: str = "device") -> str:
    """Check a device spec (``auto``, ``cpu``, ``cuda``, ``cuda:N``); return it."""
    import torch

    if spec == "auto":
        return spec
    try:
        torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {spec!r}") from e
    return spec


def resolve_device(spec: str) -> torch.device:
    """The torch device a spec means here: ``auto`` is CUDA when available, else CPU;
    asking for CUDA where there is none raises ValueError."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(parse_device(spec))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but torch sees no CUDA device here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {spec!r} asked for, but torch sees {count} CUDA device(s)")
    return device


def _refuse_unknown(d: dict[str, Any], source: str) -> None:
    """Every unknown key of every section of ``d`` in one error, each with its nearest
    valid key (not only the first typo)."""
    unknown, valid = [], []
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        names = [f.name for f in fields(cls)]
        valid += [f"{section}.{n}" for n in names]
        value = d.get(section)
        if isinstance(value, dict):
            unknown += [
                f"'{section}.{k}'{_did_you_mean(str(k), names, section)}"
                for k in value
                if k not in names
            ]
    if unknown:
        raise ValueError(
            f"{source}: unknown config key{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
            f"valid keys: {', '.join(valid)}"
        )


def _did_you_mean(key: str, valid: Sequence[str], section: str = "") -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    where = f"{section}." if section else ""
    return f" (did you mean '{where}{close[0]}'?)" if close else ""


def _check_ranges(
    obj: Any, section: str, positive: Sequence[str] = (), nonnegative: Sequence[str] = ()
) -> None:
    for name in positive:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{section}.{name} must be > 0, got {getattr(obj, name)!r}")
    for name in nonnegative:
        if not getattr(obj, name) >= 0:
            raise ValueError(f"{section}.{name} must be >= 0, got {getattr(obj, name)!r}")


def flat_config(d: dict[str, Any]) -> dict[str, Any]:
    """Nested ``{section: {key: v}}`` as flat ``{"section.key": v}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def resolved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config (a run's config.yaml or checkpoint) as the run computed with, flat:
    fields added since it was written take their defaults (what the run did), and the
    model section goes through :func:`effective_config`."""
    full = {
        **saved,
        "model": {**asdict(ModelConfig()), **(saved.get("model") or {})},
        "train": {**asdict(TrainConfig()), **(saved.get("train") or {})},
    }
    return flat_config(effective_config(full))


def config_differences(saved: dict[str, Any], now: RunConfig) -> dict[str, tuple[Any, Any]]:
    """``{key: (run's value, new value)}`` for every resolved config key that differs.

    A field added after the checkpoint was written takes its default on the saved side:
    the behaviour the run had (e.g. ``item_features="id"``). ``codebook_init`` compares
    as the run computes it (``auto`` resolved by the mode table: :func:`effective_config`).
    """
    a, b = resolved_config(saved), resolved_config(now.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def effective_config(d: dict[str, Any]) -> dict[str, Any]:
    """A :meth:`RunConfig.to_dict` (or a saved run's config) as the run computes it: its
    model section through :func:`solidrec.modes.effective_model`. Resumes compare these."""
    return {**d, "model": effective_model(d.get("model") or {})}


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _set(obj: Any, key: str, value: Any, section: str = "") -> None:
    """Set ``obj.key`` cast to the field's declared type; ValueError names the key, the
    valid keys (with the nearest match) or the expected type."""
    names = [f.name for f in dataclasses.fields(obj) if f.name not in SECTIONS]
    where = f"{section}." if section else ""
    if key not in names:
        shown = ", ".join(f"{where}{n}" for n in names)
        raise ValueError(
            f"unknown config key '{where}{key}'{_did_you_mean(key, names, section)}; "
            f"valid keys: {shown}"
        )
    current = getattr(obj, key)
    kind = type(current).__name__
    bad = ValueError(f"config key {where}{key} expects {kind}, got {value!r}")
    # Cast to the declared field's type so YAML '1e-3' or CLI '5' land typed.
    if isinstance(value, (dict, list)):
        raise bad
    if isinstance(current, bool):
        text = str(value).lower()
        if not isinstance(value, bool) and text not in _TRUE + _FALSE:
            raise bad
        value = value if isinstance(value, bool) else text in _TRUE
    elif isinstance(current, int):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise bad
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise bad from None
    elif isinstance(current, float):
        if isinstance(value, bool):
            raise bad
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise bad from None
    elif isinstance(current, str):
        value = "" if value is None else str(value)
    setattr(obj, key, value)
