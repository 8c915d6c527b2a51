"""Data preparation: readers, the paper's protocol, semantic ids, prepared datasets."""

from solidrec.data.errors import DataFormatError
from solidrec.data.pipeline import PrepareConfig, PrepareResult, prepare
from solidrec.data.prepared import (
    FORMAT_VERSION,
    EvalSplit,
    PreparedDataset,
    PreparedFormatError,
    TrainSplit,
    dataset_stats,
    load_prepared,
    write_prepared,
)
from solidrec.data.readers import GenericColumns
from solidrec.data.semantic import SemanticConfig

__all__ = [
    "FORMAT_VERSION",
    "DataFormatError",
    "EvalSplit",
    "GenericColumns",
    "PrepareConfig",
    "PrepareResult",
    "PreparedDataset",
    "PreparedFormatError",
    "SemanticConfig",
    "TrainSplit",
    "dataset_stats",
    "load_prepared",
    "prepare",
    "write_prepared",
]
