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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created or checked here)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    def best(self, stage: int) -> Path:
        return self.checkpoints / best_name(stage)

    def bests(self) -> list[Path]:
        """The best-weights files present, in stage order."""
        return sorted(self.checkpoints.glob(BEST_GLOB))

    @property
    def log_csv(self) -> Path:
        return self.root / LOG_CSV

    @property
    def text_log(self) -> Path:
        return self.root / TEXT_LOG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def cost(self) -> Path:
        return self.root / COST

    @property
    def ranks(self) -> Path:
        return self.root / RANKS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def lock(self) -> Path:
        return self.root / LOCK
