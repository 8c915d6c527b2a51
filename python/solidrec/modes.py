"""SOLID's modes: the one table that the config, the model and the trainer read.

A mode (a row of the paper's Table 2, plus ``scl``) says where the parameter
generator's condition comes from, for the *trunk* (unclipped generated parameters) and,
in each stage of Algorithm 1, for the *branch* (clipped to ±T), and how its codebook is
initialised when the config leaves ``codebook_init`` at ``auto``.

Sources:

- ``item``: the item sequence, E_v(s_v) (DSR, Eq. 5-6; SML's branch, Eq. 12);
- ``semantic``: the semantic sequence, E_c(s_c) (SPG, Eq. 7-11);
- ``code``: the item sequence with each embedding replaced by its nearest code, E'_v
  (SCL, Eq. 13); using it adds λ·MSE(E_v, E'_v) to the loss.

The codebook is initialised on entering the first stage that uses it: ``metacode``
copies the semantic encoder's category table, which means something only when an
earlier stage trained that encoder (``full``); ``random`` keeps the N(0, 0.1²) draw;
``kmeans`` clusters the item embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ITEM, SEMANTIC, CODE = "item", "semantic", "code"
SOURCES = (ITEM, SEMANTIC, CODE)
#: ``auto`` is the mode's default (the table's last column).
CODEBOOK_INITS = ("auto", "metacode", "random", "kmeans")


@dataclass(frozen=True)
class SolidMode:
    """One row of :data:`MODES`.

    Attributes:
        name: the ``model.solid`` value.
        trunk: source of the trunk, in every stage.
        branch: source of the branch in each stage (None: no branch); its length is
            the number of stages of Algorithm 1.
        codebook_init: how ``auto`` initialises the codebook; None: the mode has none.
    """

    name: str
    trunk: str
    branch: tuple[str | None, ...]
    codebook_init: str | None

    def __post_init__(self) -> None:
        if not self.branch or not {self.trunk, *self.branch} <= {*SOURCES, None}:
            raise ValueError(f"mode {self.name}: bad sources {self.trunk!r}, {self.branch!r}")
        if (self.codebook_stage is None) != (self.codebook_init is None):
            raise ValueError(f"mode {self.name}: a codebook init iff a stage uses codes")
        if self.codebook_init == "metacode" and not self.metacode_ok:
            raise ValueError(f"mode {self.name}: no trained semantic encoder to copy")

    @property
    def stages(self) -> int:
        return len(self.branch)

    @property
    def has_branch(self) -> bool:
        return any(s is not None for s in self.branch)

    @property
    def has_codebook(self) -> bool:
        return self.codebook_init is not None

    def branch_at(self, stage: int) -> str | None:
        return self.branch[self.check_stage(stage) - 1]

    def uses_codebook(self, stage: int) -> bool:
        return CODE in (self.trunk, self.branch_at(stage))

    @property
    def codebook_stage(self) -> int | None:
        """The first stage that uses the codebook (it is initialised on entering it)."""
        return next((s for s in range(1, self.stages + 1) if self.uses_codebook(s)), None)

    @property
    def metacode_ok(self) -> bool:
        """Whether a trained semantic encoder exists when the codebook is initialised."""
        return self.trunk == SEMANTIC and (self.codebook_stage or 0) > 1

    def check_stage(self, stage: int) -> int:
        if isinstance(stage, bool) or not isinstance(stage, int):
            raise TypeError(f"stage must be an int, got {type(stage).__name__}")
        if not 1 <= stage <= self.stages:
            raise ValueError(f"solid={self.name} has stage(s) 1..{self.stages}, got {stage}")
        return stage

    def resolve_codebook_init(self, value: str) -> str | None:
        """The init a run uses for ``codebook_init=value``; None where there is no codebook.

        ``auto`` is the table's default. ``metacode`` where the mode cannot copy one is
        what versions before the table ran with it (they replaced it by this default);
        :meth:`~solidrec.config.ModelConfig.validate` refuses it in a config.
        """
        if self.codebook_init is None:
            return None
        if value == "auto" or (value == "metacode" and not self.metacode_ok):
            return self.codebook_init
        return value


# fmt: off
#: mode -> trunk source, branch source per stage (len = stages), default codebook init
#: (None: no codebook). Table 2 of the paper; ``scl`` is SCL without semantics.
MODES: dict[str, SolidMode] = {m.name: m for m in (
    #         name       trunk     branch: stage 1, 2   codebook (auto)
    SolidMode("off",     ITEM,     (None,),             None),        # DSR, Eq. 6
    SolidMode("spg",     SEMANTIC, (None,),             None),        # Eq. 11
    SolidMode("spg+sml", SEMANTIC, (ITEM,),             None),        # Eq. 12
    SolidMode("spg+scl", SEMANTIC, (CODE,),             "random"),    # Table 2 row 4
    SolidMode("scl",     CODE,     (None,),             "kmeans"),    # SCL w/o semantics
    SolidMode("full",    SEMANTIC, (ITEM, CODE),        "metacode"),  # Algorithm 1
)}
# fmt: on
SOLID_MODES = tuple(MODES)


def get_mode(name: str) -> SolidMode:
    """The table row of ``model.solid = name``; ValueError naming the choices."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"solid must be one of {SOLID_MODES}, got {name!r}") from None


def effective_model(section: Mapping[str, Any]) -> dict[str, Any]:
    """A model config section (a dict) as the run computes it, for comparing configs.

    ``codebook_init`` becomes :meth:`SolidMode.resolve_codebook_init`'s value: a run
    written with ``kmeans`` and a config saying ``auto`` for ``scl`` are the same run,
    and where the mode has no codebook any value is.
    """
    out = dict(section)
    mode = MODES.get(out.get("solid", ""))
    if mode is not None and "codebook_init" in out:
        out["codebook_init"] = mode.resolve_codebook_init(out["codebook_init"])
    return out
