"""Training objectives (``train.loss``): the paper's BCE over each history's candidates,
softmax cross-entropy over all items, and sampled softmax with the logQ correction.

At catalog scale: the full softmax runs through ``solid_ext.ops.item_softmax_xent``
(items in blocks, never the (B, N) logits); sampled softmax with
``train.shared_negatives`` scores one set of negatives drawn per step against every
history (and with ``train.in_batch_negatives`` the step's other positives too), so its
cost is O(batch x negatives) whatever the catalog.

Every objective scores a candidate as the model does (the dynamic head's output with the
candidate's embedding), so each works with every backbone x generator x SOLID mode;
``softmax`` needs a backbone whose user side does not depend on the candidate (not DIN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solid_ext import ops
from solidrec.config import LOSSES, NEGATIVE_SAMPLERS, TrainConfig

__all__ = [
    "BCE",
    "LOSSES",
    "LOSS_TYPES",
    "NEGATIVE_SAMPLERS",
    "Loss",
    "LossTerms",
    "NegativeSampler",
    "SampledSoftmax",
    "Softmax",
    "full_softmax",
    "make_loss",
    "shared_candidates",
    "shared_layout",
    "softmax_cross_entropy",
]


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


def full_softmax(user: Tensor, table: Tensor, pos: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Summed softmax cross-entropy of user vectors (B, D) over every item: ``table``
    (N, D) holds items 1..N, ``pos`` (B,) the positives (1..N). Fused: peak memory is
    O(B x block), not O(B x N); the table's gradient is dense."""
    # float16/bfloat16 user vectors in float32, as softmax_cross_entropy does.
    work = torch.promote_types(user.dtype, torch.float32)
    loss = ops.item_softmax_xent(user.to(work), table.to(work), pos - 1, label_smoothing)
    return loss.sum()


def shared_layout(
    pos: Tensor, neg: Tensor, log_q: Tensor, in_batch: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The columns of a sampled softmax over negatives shared by a step's histories.

    Args:
        pos: (B,) the histories' positives; neg (n,) the negatives drawn for the step.
        log_q: (B + n,) log sampling probability of ``[pos, neg]``.
        in_batch: the other histories' positives are negatives too.

    Returns:
        ``(cand, log_q, valid, target)``: cand (B, C) the item of each column, C = B + n
        (in batch: ``[pos, neg]`` for every row) or 1 + n (each row's own positive, then
        ``neg``); log_q (B, C) to subtract from the logits; valid (B, C) False where a
        column is the row's own positive outside its target column (an accidental hit
        is no negative); target (B,) the target column.
    """
    b, n = len(pos), len(neg)
    rows = torch.arange(b, device=pos.device)
    if in_batch:
        cand = torch.cat([pos, neg]).expand(b, -1)
        q = log_q.expand(b, -1)
        target = rows
    else:
        cand = torch.cat([pos[:, None], neg.expand(b, -1)], 1)
        q = torch.cat([log_q[:b, None], log_q[b:].expand(b, n)], 1)
        target = torch.zeros(b, dtype=torch.long, device=pos.device)
    valid = cand != pos.unsqueeze(1)
    valid[rows, target] = True
    return cand, q, valid, target


def shared_candidates(
    user: Tensor,
    pos: Tensor,
    pos_vec: Tensor,
    neg: Tensor,
    neg_vec: Tensor,
    log_q: Tensor,
    in_batch: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits (B, C), valid, target)`` of user vectors (B, D) against the columns of
    :func:`shared_layout`, logQ-corrected: pos_vec (B, D) and neg_vec (n, D) are the
    positives' and negatives' vectors. One (B, D) x (D, n) product for the negatives,
    no (B, C, D) gather."""
    _, q, valid, target = shared_layout(pos, neg, log_q, in_batch)
    # In batch: (B, B), row b's target on the diagonal; else each row's own (B, 1).
    first = user @ pos_vec.T if in_batch else (user * pos_vec).sum(1, keepdim=True)
    logits = torch.cat([first, user @ neg_vec.T], 1) - q
    return logits, valid, target


class LossTerms(NamedTuple):
    """What a loss gives the trainer for one local batch."""

    value: Tensor  # the objective summed over the batch's terms
    per_history: int  # terms it sums per history: candidates (BCE) or 1 (softmax losses)
    aux: Tensor  # the model's auxiliary loss (SOLID's codebook loss; 0 without one)


#: Called once, if the loss draws negatives: the step's generator (seeded by the step's
#: place in the schedule, so a resumed run draws the same negatives).
StepGenerator = Callable[[], torch.Generator]


class Loss:
    """One ``train.loss``: the interface the trainer (and the benchmarks) call. A new
    loss is a subclass with its ``name`` (in :data:`~solidrec.config.LOSSES`) in
    :data:`LOSS_TYPES`; nothing in the trainer changes.

    Args:
        t: the training config (negatives, label smoothing).
        num_items: N; items are 1..N.
        positives: item ids of the training positives (popularity sampling and the
            in-batch negatives' proposal).
    """

    name: ClassVar[str]

    def __init__(self, t: TrainConfig, num_items: int, positives: np.ndarray | None) -> None:
        self.t = t

    def __call__(
        self,
        net: nn.Module,
        model: nn.Module,
        hist: Tensor,
        item: Tensor,
        label: Tensor,
        generator: StepGenerator,
    ) -> LossTerms:
        """The loss of one batch.

        Args:
            net: what runs the forward (the model, or its DDP wrapper).
            model: the :class:`~solidrec.models.SolidModel` itself (item vectors).
            hist: (B, L) histories; item (B, C) their prepared candidates, positive
                first; label (B, C).
            generator: called once if the loss draws negatives.
        """
        raise NotImplementedError


class BCE(Loss):
    """The paper's objective: each history once, scored against all of its prepared
    candidates (B, C), binary cross-entropy on their labels."""

    name = "bce"

    def __call__(
        self,
        net: nn.Module,
        model: nn.Module,
        hist: Tensor,
        item: Tensor,
        label: Tensor,
        generator: StepGenerator,
    ) -> LossTerms:
        logits, aux = net(hist, item)
        bce = F.binary_cross_entropy_with_logits(logits, label, reduction="sum")
        return LossTerms(bce, logits.shape[1], aux)


class Softmax(Loss):
    """Cross-entropy over every item, through the fused op (no (B, N) logits)."""

    name = "softmax"

    def __call__(
        self,
        net: nn.Module,
        model: nn.Module,
        hist: Tensor,
        item: Tensor,
        label: Tensor,
        generator: StepGenerator,
    ) -> LossTerms:
        user, aux = net(hist, None, return_user=True)
        loss = full_softmax(user, model.item_table(), item[:, 0], self.t.label_smoothing)
        return LossTerms(loss, 1, aux)


class SampledSoftmax(Loss):
    """Cross-entropy over the positive and sampled negatives, logQ-corrected: per
    history (``train.num_negatives``, else the prepared candidates), or shared by the
    step's histories (``train.shared_negatives``, ``train.in_batch_negatives``)."""

    name = "sampled_softmax"

    def __init__(self, t: TrainConfig, num_items: int, positives: np.ndarray | None) -> None:
        super().__init__(t, num_items, positives)
        self.sampler = NegativeSampler(num_items, t.negative_sampling, positives)
        # In-batch negatives arrive as often as items are positives: their proposal.
        self.batch_sampler = (
            NegativeSampler(num_items, "popularity", positives) if t.in_batch_negatives else None
        )

    def __call__(
        self,
        net: nn.Module,
        model: nn.Module,
        hist: Tensor,
        item: Tensor,
        label: Tensor,
        generator: StepGenerator,
    ) -> LossTerms:
        t = self.t
        pos = item[:, 0]
        if t.shared_negatives or t.in_batch_negatives:
            loss, aux = self._shared(net, model, hist, pos, generator())
            return LossTerms(loss, 1, aux)
        if t.num_negatives > 0:
            neg = self.sampler.draw(len(hist), t.num_negatives, generator()).to(hist.device)
        else:
            neg = item[:, 1:]
        cand = torch.cat([pos.unsqueeze(1), neg], 1)
        logits, aux = net(hist, cand)
        logits = logits - self.sampler.log_q(cand)  # logQ: unbiased under the sampler
        valid = torch.ones_like(cand, dtype=torch.bool)
        valid[:, 1:] = neg != pos.unsqueeze(1)  # an accidental hit is no negative
        target = torch.zeros(len(hist), dtype=torch.long, device=hist.device)
        return LossTerms(softmax_cross_entropy(logits, target, valid, t.label_smoothing), 1, aux)

    def _shared(
        self, net: nn.Module, model: nn.Module, hist: Tensor, pos: Tensor, g: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Sampled softmax over negatives shared by the batch's histories (and the other
        histories' positives with in_batch_negatives): (summed loss, aux)."""
        t = self.t
        neg = self.sampler.draw(1, t.num_negatives, g)[0].to(hist.device)
        cols = torch.cat([pos, neg])
        if t.in_batch_negatives:
            # A mixture proposal: column item j is drawn as a shared negative with
            # probability n q(j) and arrives in the batch with B q_pop(j).
            shared = self.sampler.prob.to(pos.device)[cols]
            assert self.batch_sampler is not None
            in_batch = self.batch_sampler.prob.to(pos.device)[cols]
            log_q = (len(neg) * shared + len(pos) * in_batch).clamp_min(1e-30).log().float()
        else:
            log_q = self.sampler.log_q(cols)
        if model.backbone.target_dependent:
            # DIN scores each (history, candidate) pair: the shared columns go through the
            # model as a (B, C) candidate matrix (O(B x C) attention either way).
            cand, q, valid, target = shared_layout(pos, neg, log_q, t.in_batch_negatives)
            logits, aux = net(hist, cand)
            logits = logits - q
        else:
            user, aux = net(hist, None, return_user=True)
            vec = model.item_vectors(cols)
            b = len(pos)
            logits, valid, target = shared_candidates(
                user, pos, vec[:b], neg, vec[b:], log_q, t.in_batch_negatives
            )
        return softmax_cross_entropy(logits, target, valid, t.label_smoothing), aux


#: Every ``train.loss`` by name (the names: :data:`~solidrec.config.LOSSES`).
LOSS_TYPES: dict[str, type[Loss]] = {c.name: c for c in (BCE, Softmax, SampledSoftmax)}


def make_loss(t: TrainConfig, num_items: int, positives: np.ndarray | None) -> Loss:
    """The :class:`Loss` ``t.loss`` names (arguments: :class:`Loss`)."""
    try:
        kind = LOSS_TYPES[t.loss]
    except KeyError:
        raise ValueError(
            f"train.loss must be one of {sorted(LOSS_TYPES)}, got {t.loss!r}"
        ) from None
    return kind(t, num_items, positives)
