"""Training (Algorithm 1), checkpoints and the run-directory lock (evaluation:
:mod:`solidrec.evaluate`)."""

from solidrec.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from solidrec.train.lock import RunLock, RunLockedError
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
