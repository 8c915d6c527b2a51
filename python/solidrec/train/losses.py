"""Training objectives (``train.loss``): the paper's BCE over each history's candidates,
softmax cross-entropy over all items, and sampled softmax with the logQ correction.

Every objective scores a candidate as the model does (the dynamic head's output with the
candidate's embedding), so each works with every backbone x generator x SOLID mode;
``softmax`` needs a backbone whose user side does not depend on the candidate (not DIN).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from solidrec.config import LOSSES, NEGATIVE_SAMPLERS

__all__ = ["LOSSES", "NEGATIVE_SAMPLERS", "NegativeSampler", "softmax_cross_entropy"]


def softmax_cross_entropy(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, label_smoothing: float = 0.0
) -> Tensor:
    """Summed cross-entropy of logits (B, K) against target (B,) over the ``valid`` (B, K)
    columns (all if None); label smoothing spreads ``label_smoothing`` evenly over the
    valid columns, as ``F.cross_entropy`` does over all of them."""
    if valid is not None:
        logits = logits.masked_fill(~valid, -torch.inf)
    # float16/bfloat16 in float32; float64 stays float64.
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
    if label_smoothing == 0.0:
        return nll.sum()
    if valid is None:
        smooth = -logp.mean(1)
    else:  # -inf columns must not enter the mean (0 * inf)
        smooth = -torch.where(valid, logp, 0.0).sum(1) / valid.sum(1)
    return ((1.0 - label_smoothing) * nll + label_smoothing * smooth).sum()


class NegativeSampler:
    """Draws negatives for sampled softmax and gives their log-probability (logQ).

    Args:
        num_items: N; items are 1..N.
        kind: ``uniform``, or ``popularity`` (proportional to 1 + the item's count among
            ``positives``).
        positives: item ids of the training positives (for ``popularity``).
    """

    def __init__(self, num_items: int, kind: str, positives: np.ndarray | None = None) -> None:
        if kind not in NEGATIVE_SAMPLERS:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLERS}, got {kind!r}")
        weight = torch.ones(num_items + 1, dtype=torch.float64)
        if kind == "popularity" and positives is not None:
            weight += torch.from_numpy(
                np.bincount(positives, minlength=num_items + 1)[: num_items + 1]
            )
        weight[0] = 0.0  # padding is never drawn
        self.kind = kind
        self.prob = weight / weight.sum()
        self.log_prob = self.prob.clamp_min(1e-30).log().float()

    def draw(self, rows: int, n: int, generator: torch.Generator) -> Tensor:
        """(rows, n) item ids drawn with replacement."""
        if self.kind == "uniform":
            return torch.randint(1, len(self.prob), (rows, n), generator=generator)
        return torch.multinomial(self.prob, rows * n, replacement=True, generator=generator).view(
            rows, n
        )

    def log_q(self, items: Tensor) -> Tensor:
        """log Q(item), same shape as ``items``."""
        return self.log_prob.to(items.device)[items]
