"""The model of a run: its config on a prepared dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from solidrec.data.prepared import PreparedDataset, load_prepared
from solidrec.models.model import SolidModel

if TYPE_CHECKING:
    from solidrec.config import RunConfig


def run_dataset(cfg: RunConfig, path: str | Path | None = None) -> PreparedDataset:
    """The prepared dataset a run reads: ``path`` (default ``cfg.data``) with its
    histories cut to ``cfg.model.history_len`` (0: as prepared)."""
    data = load_prepared(cfg.data if path is None else path)
    return data.with_history(cfg.model.history_len, "model.history_len")


def build_model(cfg: RunConfig, data: PreparedDataset) -> SolidModel:
    """The model for ``cfg`` on ``data`` (from :func:`run_dataset`); parameters drawn
    from ``cfg.train.seed``."""
    want = cfg.model.history_len
    if want and data.history_len != want:
        raise ValueError(
            f"model.history_len is {want} but the dataset's histories have "
            f"{data.history_len} items: load it with solidrec.models.build.run_dataset"
        )
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
