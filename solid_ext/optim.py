"""Row-wise optimizers for embedding tables: the step costs what the batch touched.

:class:`LazyAdam` and :class:`RowwiseAdagrad` take the sparse gradients of
``nn.Embedding(..., sparse=True)`` (or ``F.embedding(..., sparse=True)``) and update only
the rows a step touched, through the fused op :func:`solid_ext.ops.sparse_row_update`
(indices deduplicated, their gradient rows summed, the row and its state updated in one
pass). A dense gradient (a parameter also used densely, e.g. by a full softmax) updates
every row through the same op. Parameters must be 2-d (rows x dim).

Semantics differ from ``torch.optim.Adam`` on purpose, as in TensorFlow's LazyAdam and
``torch.optim.SparseAdam``: the moments of a row that a step does not touch are not
decayed, and weight decay (L2, added to the gradient) applies to touched rows only.
With a dense gradient every step, :class:`LazyAdam` is ``torch.optim.Adam``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from . import ops

__all__ = ["LazyAdam", "RowwiseAdagrad", "RowOptimizer", "row_gradient"]


def row_gradient(grad: Tensor) -> tuple[Tensor | None, Tensor]:
    """(indices (nnz,) or None, gradient rows (nnz, D) or (N, D)) of a parameter's grad:
    a sparse COO gradient with one sparse dimension (uncoalesced is fine: duplicates
    are summed by the op) or a dense one."""
    if grad.is_sparse:
        if grad.sparse_dim() != 1 or grad.dense_dim() != 1:
            raise ValueError(
                "a row optimizer needs a sparse gradient of one sparse and one dense "
                f"dimension (an embedding table's), got sparse_dim={grad.sparse_dim()}, "
                f"dense_dim={grad.dense_dim()}"
            )
        return grad._indices()[0], grad._values()
    return None, grad


class RowOptimizer(torch.optim.Optimizer):
    """Base of the row-wise optimizers; ``kind`` names the op's update rule."""

    kind = ""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"{type(self).__name__} updates rows of 2-d tables; got a parameter "
                        f"of shape {tuple(p.shape)}"
                    )

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def _states(self, state: dict[str, Any]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(self._init_state(p))
                state["step"] = int(state["step"]) + 1
                indices, rows = row_gradient(p.grad)
                s1, s2 = self._states(state)
                ops.sparse_row_update(
                    p.detach(),
                    s1,
                    s2,
                    indices,
                    rows,
                    self.kind,
                    group["lr"],
                    beta1,
                    beta2,
                    group["eps"],
                    group["weight_decay"],
                    state["step"],
                )
        return loss


class LazyAdam(RowOptimizer):
    """Adam on the rows each step touches (moments of untouched rows not decayed).

    State per parameter: ``exp_avg`` and ``exp_avg_sq`` (N, D), ``step`` (an int, the
    global step count used for bias correction, as ``torch.optim.SparseAdam``).
    """

    kind = "lazy_adam"

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        z = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return {"step": 0, "exp_avg": z, "exp_avg_sq": z.clone()}

    def _states(self, state: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return state["exp_avg"], state["exp_avg_sq"]


class RowwiseAdagrad(RowOptimizer):
    """Adagrad with one accumulator per row (FBGEMM's exact row-wise Adagrad):
    ``s_r += mean(g_r^2)``, ``w_r -= lr g_r / (sqrt(s_r) + eps)``. State: ``sum`` (N,),
    4 bytes a row in float32 instead of Adam's 2 x D x 4. ``betas`` is unused."""

    kind = "rowwise_adagrad"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        return {
            "step": 0,
            "sum": p.new_zeros(p.shape[0]),
            "unused": p.new_zeros(0),
        }

    def _states(self, state: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return state["sum"], state["unused"]
