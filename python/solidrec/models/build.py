"""The model of a run: its config on a prepared dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from solidrec.models.model import SolidModel

if TYPE_CHECKING:
    from solidrec.config import RunConfig
    from solidrec.data.prepared import PreparedDataset


def build_model(cfg: RunConfig, data: PreparedDataset) -> SolidModel:
    """The model for ``cfg`` on ``data``; parameters drawn from ``cfg.train.seed``."""
    torch.manual_seed(cfg.train.seed)
    return SolidModel(
        cfg.model, torch.from_numpy(data.semantic_id), data.num_semantic, data.history_len
    )
