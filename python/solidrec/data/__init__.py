"""Data preparation: readers, the paper's protocol, semantic ids, prepared datasets."""

from solidrec.data.errors import DataFormatError
from solidrec.data.pipeline import PrepareConfig, PrepareResult, prepare
from solidrec.data.prepared import (
    EvalSplit,
    PreparedDataset,
    TrainSplit,
    dataset_stats,
    load_prepared,
)
from solidrec.data.semantic import SemanticConfig

__all__ = [
    "DataFormatError",
    "EvalSplit",
    "PrepareConfig",
    "PrepareResult",
    "PreparedDataset",
    "SemanticConfig",
    "TrainSplit",
    "dataset_stats",
    "load_prepared",
    "prepare",
]
