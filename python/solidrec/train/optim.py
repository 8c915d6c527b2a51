"""The run's optimizer: Adam over the model, the item id table apart when
``train.item_optimizer`` asks for a row-wise one (``solid_ext.optim``).

With ``dense`` (the paper's setting) one ``torch.optim.Adam`` updates every parameter,
the whole item table included, every step: its cost grows with the catalog. With
``lazy_adam`` or ``rowwise_adagrad`` the table's lookups give sparse gradients
(``nn.Embedding(sparse=True)``) and only the rows a step touched are updated, by the
fused ``solid_ext.ops.sparse_row_update``; a full softmax still gives the table a dense
gradient (every item is in every row's normaliser), which the same op applies to every
row.
"""

from __future__ import annotations

from typing import Any

import torch

from solid_ext.optim import LazyAdam, RowwiseAdagrad
from solidrec.config import TrainConfig, resolve_item_optimizer

#: ``train.item_optimizer`` -> the row-wise optimizer class (``dense``: none).
ROW_OPTIMIZERS = {"lazy_adam": LazyAdam, "rowwise_adagrad": RowwiseAdagrad}


class RunOptimizer:
    """Adam over ``model``'s parameters, ``model.item_emb.weight`` excluded and given to
    a row-wise optimizer unless the item optimizer is ``dense``.

    ``kind``: the item optimizer to use (default: ``t.item_optimizer``, ``auto`` resolved
    by the catalog size). ``state_dict()`` is ``{"optimizer": Adam's, "item_optimizer":
    the row optimizer's or None}``, the two checkpoint keys.
    """

    def __init__(self, model: torch.nn.Module, t: TrainConfig, kind: str | None = None) -> None:
        table = model.item_emb.weight
        self.kind = kind or resolve_item_optimizer(t.item_optimizer, table.shape[0] - 1)
        row_cls = ROW_OPTIMIZERS.get(self.kind)
        model.item_emb.sparse = row_cls is not None
        params = [p for p in model.parameters() if row_cls is None or p is not table]
        # The fused kernel updates every parameter in one pass instead of a dozen ops per
        # parameter list: about 1-2 ms of a 12-25 ms Scientific step (BENCHMARKS.md).
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
        self.main = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused)
        self.item = None
        if row_cls is not None:
            self.item = row_cls([table], lr=t.item_lr or t.lr, weight_decay=t.weight_decay)

    def zero_grad(self) -> None:
        self.main.zero_grad(set_to_none=True)
        if self.item is not None:
            self.item.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.main.step()
        if self.item is not None:
            self.item.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.main.state_dict(),
            "item_optimizer": None if self.item is None else self.item.state_dict(),
        }

    def load_state_dict(self, main: dict[str, Any], item: dict[str, Any] | None) -> None:
        """Adam's state and the row optimizer's (None for a run without one)."""
        self.main.load_state_dict(main)
        if (item is None) != (self.item is None):
            raise ValueError(
                "the checkpoint's item-table optimizer state does not match "
                "train.item_optimizer (a run keeps its item optimizer)"
            )
        if self.item is not None:
            self.item.load_state_dict(item)
