"""Training (Algorithm 1), evaluation and checkpoints."""

from solidrec.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from solidrec.train.loop import METRIC_KEYS, Trainer, build_model, evaluate_split, predict, train

__all__ = [
    "METRIC_KEYS",
    "CheckpointError",
    "Trainer",
    "build_model",
    "evaluate_split",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "train",
]
