"""SOLID models: backbones, parameter generators and the composed :class:`SolidModel`."""

from solidrec.models.backbones import DIN, BERT4Rec, GRU4Rec, SASRec, make_backbone
from solidrec.models.build import build_model, run_dataset
from solidrec.models.generators import LowRankGenerator, SeqEncoder
from solidrec.models.model import SolidModel, count_parameters

__all__ = [
    "BERT4Rec",
    "DIN",
    "GRU4Rec",
    "LowRankGenerator",
    "SASRec",
    "SeqEncoder",
    "SolidModel",
    "build_model",
    "count_parameters",
    "make_backbone",
    "run_dataset",
]
