"""Training (Algorithm 1) into a run directory (its files, checkpoints and lock:
:mod:`solidrec.runs`; evaluation: :mod:`solidrec.evaluate`)."""

from solidrec.runs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from solidrec.runs.lock import RunLock, RunLockedError
from solidrec.train.loop import Trainer, TrainingDivergedError, TrainingInterrupted, train

__all__ = [
    "CheckpointError",
    "RunLock",
    "RunLockedError",
    "Trainer",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
