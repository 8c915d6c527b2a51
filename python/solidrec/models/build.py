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
    emb = None
    if "embedding" in cfg.model.item_features:
        if data.item_embedding is None:
            raise ValueError(
                f"model.item_features={cfg.model.item_features} needs item embeddings stored "
                f"in the prepared dataset; {data.path} has none: prepare it with "
                "--item-embeddings PATH --embedding-feature"
            )
        emb = torch.from_numpy(data.item_embedding)
    torch.manual_seed(cfg.train.seed)
    return SolidModel(
        cfg.model,
        torch.from_numpy(data.semantic_id),
        data.num_semantic,
        data.history_len,
        item_embedding=emb,
    )
