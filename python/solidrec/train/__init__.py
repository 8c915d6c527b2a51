"""Training (Algorithm 1), evaluation and checkpoints."""

from solidrec.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from solidrec.train.lock import RunLock, RunLockedError
from solidrec.train.loop import (
    METRIC_KEYS,
    Trainer,
    TrainingDivergedError,
    build_model,
    evaluate_split,
    predict,
    train,
)

__all__ = [
    "METRIC_KEYS",
    "CheckpointError",
    "RunLock",
    "RunLockedError",
    "Trainer",
    "TrainingDivergedError",
    "build_model",
    "evaluate_split",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "train",
]
