"""The names of every file a run directory, its model directory and a tuning study
hold: the one place that spells them (``RunDir(out).last`` rather than
``out / "checkpoints" / "last.pt"``).

Run directory (``solidrec train --out RUN``)::

    config.yaml        the resolved config (RunConfig.save)
    checkpoints/       last.pt (+ last.prev.pt), best_stage1.pt, best_stage2.pt
    log.csv            one row per validation; train.log: the printed lines, timed
    metrics.json       test metrics of the selected weights; cost.json: time and memory
    ranks.npz          per-user ranks (train.save_ranks)
    tb/                TensorBoard events
    model/             the self-contained model directory (solidrec.runs.model_dir)
    .lock              held while a process trains into the run

Study directory (``solidrec tune --out STUDY``): study.db, trials/NNNN/ (a run
directory each), trials.csv, best.json.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST_GLOB = "best_stage*.pt"
LOG_CSV = "log.csv"
TEXT_LOG = "train.log"
METRICS = "metrics.json"
COST = "cost.json"
RANKS = "ranks.npz"
TENSORBOARD = "tb"
MODEL_DIR = "model"
LOCK = ".lock"

# model directory (format: solidrec.runs.model_dir)
MODEL_MANIFEST = "manifest.json"
MODEL_CONFIG = CONFIG
MODEL_WEIGHTS = "weights.pt"
MODEL_ITEMS = "items.json"

# study directory (solidrec.tune)
STUDY_DB = "study.db"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_JSON = "best.json"


def best_name(stage: int) -> str:
    """The file of stage ``stage``'s selected weights (stage 2 sorts after stage 1)."""
    return f"best_stage{stage}.pt"


def _below(*parts: str) -> property:
    """A :class:`RunDir` attribute: the path ``parts`` below the run's root."""
    return property(lambda self: self.root.joinpath(*parts))


class RunDir:
    """The paths of one run directory (nothing is created or checked here)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = _below(CONFIG)
    checkpoints = _below(CHECKPOINTS)
    last = _below(CHECKPOINTS, LAST)
    log_csv = _below(LOG_CSV)
    text_log = _below(TEXT_LOG)
    metrics = _below(METRICS)
    cost = _below(COST)
    ranks = _below(RANKS)
    tensorboard = _below(TENSORBOARD)
    model = _below(MODEL_DIR)
    lock = _below(LOCK)

    def best(self, stage: int) -> Path:
        return self.checkpoints / best_name(stage)

    def bests(self) -> list[Path]:
        """The best-weights files present, in stage order."""
        return sorted(self.checkpoints.glob(BEST_GLOB))
