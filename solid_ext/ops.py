"""Public ops: ``dynamic_linear``, ``generated_linear`` and ``codebook_quantize``; for
the item table, ``sparse_row_update`` (a fused row-wise optimizer step) and
``item_softmax_xent`` (softmax cross-entropy over every item without the logits); for
retrieval and full-ranking evaluation, ``topk_scores`` and ``score_ranks``.

Each call validates its arguments, picks a backend (see :mod:`solid_ext._backend`)
and runs it. The compiled ops live under ``torch.ops.solid_ext``; their fake
(meta) kernels and autograd formulas are registered here so that
``torch.compile(fullgraph=True)`` traces through them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backend, _opmeta
from ._validate import (
    check_codebook_quantize,
    check_dynamic_linear,
    check_generated_linear,
    check_item_softmax,
    check_score_ranks,
    check_sparse_row_update,
    check_straight_through,
    check_topk_scores,
)
from .reference import (
    as_rows,
    codebook_quantize_ref,
    dynamic_linear_ref,
    generated_linear_ref,
    item_softmax_xent_ref,
    score_ranks_ref,
    sparse_row_update_ref,
    topk_scores_ref,
)

__all__ = [
    "codebook_quantize",
    "dynamic_linear",
    "generated_linear",
    "item_softmax_xent",
    "score_ranks",
    "sparse_row_update",
    "topk_scores",
]

#: Items per block of ``item_softmax_xent``: the (B, chunk) logits block is the op's
#: only scratch that grows with the batch.
SOFTMAX_CHUNK = 4096


def dynamic_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    branch_weight: Tensor | None = None,
    branch_bias: Tensor | None = None,
    tau: float = 0.01,
) -> Tensor:
    """Per-sample linear map with a clipped branch (SOLID Eq. 12).

    ``y = x @ (weight + clamp(branch_weight, -tau, tau)) + bias
    + clamp(branch_bias, -tau, tau)``.

    Args:
        x: (B, N_in) or (B, L, N_in).
        weight: (B, N_in, N_out) per-sample trunk weights.
        bias: optional (B, N_out) trunk bias.
        branch_weight: optional (B, N_in, N_out) branch weights, clipped to ±tau.
        branch_bias: optional (B, N_out) branch bias, clipped to ±tau.
        tau: clip threshold, a finite float >= 0 (anything else raises, naming tau).
            As in ``torch.clamp``, it is compared in the inputs' dtype; a tau beyond
            that dtype's range clips nothing.

    Returns:
        (B, N_out) or (B, L, N_out). Gradients flow to every tensor argument; the
        branch gradients are zero where ``|branch| > tau`` (as for ``clamp``).
        NaN in any input propagates to the output. float16/bfloat16 inputs are
        computed in float32 and the results rounded back.
    """
    tau = check_dynamic_linear(x, weight, bias, branch_weight, branch_bias, tau)
    backend = _backend.resolve(x.device, x.dtype)
    if backend == "reference":
        return dynamic_linear_ref(x, weight, bias, branch_weight, branch_bias, tau)
    x3 = x.unsqueeze(1) if x.dim() == 2 else x
    if backend == "triton":
        fn = _backend.triton_module().dynamic_linear
    else:
        fn = torch.ops.solid_ext.dynamic_linear
    y = fn(x3, weight, bias, branch_weight, branch_bias, tau)
    return y.squeeze(1) if x.dim() == 2 else y


def generated_linear(
    x: Tensor,
    cond: Tensor,
    gen_weight: Tensor,
    base: Tensor,
    tau: float | None = None,
) -> Tensor:
    """A linear layer whose per-sample weights a full-rank generator makes, fused.

    ``y_b = x_b @ f(reshape(gen_weight @ cond_b, (N_in, N_out)) + base)``, f the clip
    to ±tau or, with ``tau=None``, the identity: DUET's generated layer (trunk) or
    SOLID's clipped branch. The kernels generate each weight tile in registers and use
    it at once; neither the (B, N_in, N_out) weights nor their gradient is written to
    memory. The multiply-adds are those of generating then applying: each tile is
    generated once per sample and serves all L rows of x.

    Args:
        x: (B, N_in) or (B, L, N_in).
        cond: (B, C) condition vectors.
        gen_weight: (N_in*N_out, C), row ``i*N_out + o`` generating weight (i, o): the
            ``weight`` of ``nn.Linear(C, N_in*N_out)``.
        base: (N_in, N_out), added to every generated weight before the clip (a static
            weight, the generator's bias, or both).
        tau: None, or the clip threshold, a finite float >= 0.

    Returns:
        (B, N_out) or (B, L, N_out), differentiable in x, cond, gen_weight and base
        (the clipped weights' gradient is zero where ``|w| > tau``). On CUDA tensors it
        runs the Triton kernels (there is no CUDA C++ kernel for it); float16/bfloat16
        are computed in float32 and rounded back.
    """
    tau = check_generated_linear(x, cond, gen_weight, base, tau)
    backend = _without_cuda_kernel(_backend.resolve(x.device, x.dtype))
    if backend == "reference":
        return generated_linear_ref(x, cond, gen_weight, base, tau)
    x3 = x.unsqueeze(1) if x.dim() == 2 else x
    if backend == "triton":
        fn = _backend.triton_module().generated_linear
    else:
        fn = torch.ops.solid_ext.generated_linear
    y = fn(x3, cond, gen_weight, base, tau)
    return y.squeeze(1) if x.dim() == 2 else y


def codebook_quantize(
    z: Tensor, codebook: Tensor, straight_through_codebook: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest-code search with a straight-through gradient (SOLID Eq. 13).

    Args:
        z: (..., D) vectors to quantise.
        codebook: (K, D), K >= 1. D = 0 is allowed: every distance is then 0 and
            every row takes code 0.
        straight_through_codebook: a bool; also pass ``quantized``'s gradient to the
            chosen codebook rows (summed per row). Off by default: as in VQ-VAE, the
            codebook then learns only from ``sq_dist``.

    Returns:
        ``(quantized, indices, sq_dist)``: quantized (..., D) equals
        ``codebook[indices]`` and passes its gradient straight to ``z``; indices
        (...) int64, ``argmin_k ||z - C_k||^2`` with ties to the lowest k;
        sq_dist (...) the minimum squared distance, differentiable in ``z`` and
        ``codebook`` so ``sq_dist.mean() / D`` is ``MSE(z, quantized)``.
        A row of z containing NaN gets index 0 and NaN sq_dist; a NaN codebook
        row is chosen by every row that compares against it (as ``torch.argmin``
        treats NaN).

        Infinite entries: ``quantized`` is still exactly ``codebook[indices]``, and
        ``sq_dist`` is inf. The gradient to z is ``grad_q + 2 grad_sq (z - C_idx)``
        where a zero ``grad_sq`` contributes exactly zero (not 0 * inf = NaN): with
        only ``quantized`` in the loss an infinite z still receives the upstream
        gradient unchanged; a non-zero ``grad_sq`` gives it an infinite gradient.
        Every backend follows this. float16/bfloat16 inputs are searched and their
        distances computed in float32, the results rounded back.
    """
    check_codebook_quantize(z, codebook)
    straight_through_codebook = check_straight_through(straight_through_codebook)
    backend = _backend.resolve(z.device, z.dtype)
    if backend == "reference":
        return codebook_quantize_ref(z, codebook, straight_through_codebook)
    lead, d = z.shape[:-1], z.shape[-1]
    z2 = as_rows(z)
    if backend == "triton":
        fn = _backend.triton_module().codebook_quantize
    else:
        fn = torch.ops.solid_ext.codebook_quantize
    q, sq, idx = fn(z2, codebook, straight_through_codebook)
    return q.reshape(*lead, d), idx.reshape(lead), sq.reshape(lead)


def sparse_row_update(
    weight: Tensor,
    state1: Tensor,
    state2: Tensor,
    indices: Tensor | None,
    grad: Tensor,
    kind: str,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    step: int = 1,
) -> None:
    """A row-wise optimizer step on the rows of ``weight`` that ``indices`` names, fused.

    Deduplicates ``indices`` (nnz,), sums the gradient rows of each distinct row (in
    the order they come, so the result is deterministic), adds ``weight_decay * w``
    and updates the row and its optimizer state in one pass; rows no index names are
    not read or written. The cost grows with nnz, never with N.

    Args:
        weight: (N, D) float32/float64, contiguous, updated in place.
        state1, state2: ``lazy_adam``: (N, D) first and second moments;
            ``rowwise_adagrad``: state1 (N,) the row's accumulated mean squared
            gradient, state2 a 0-element tensor. Updated in place.
        indices: (nnz,) int64 in [0, N), duplicates allowed; or None: grad is (N, D)
            (a dense gradient, every row updated).
        grad: (nnz, D) gradient rows (or (N, D)).
        kind: ``lazy_adam`` or ``rowwise_adagrad`` (see
            :func:`solid_ext.reference.sparse_row_update_ref` for the formulas).
        lr, beta1, beta2, eps, weight_decay: as ``torch.optim.Adam`` (betas unused by
            Adagrad); step: the optimizer's step count, >= 1 (Adam's bias correction).
    """
    check_sparse_row_update(
        weight, state1, state2, indices, grad, kind, lr, beta1, beta2, eps, weight_decay, step
    )
    backend = _without_cuda_kernel(_backend.resolve(weight.device, weight.dtype))
    args = (weight, state1, state2, indices, grad.contiguous(), kind, float(lr), float(beta1))
    args = (*args, float(beta2), float(eps), float(weight_decay), int(step))
    if backend == "reference":
        sparse_row_update_ref(*args)
    elif backend == "triton":
        _backend.triton_module().sparse_row_update(*args)
    else:
        torch.ops.solid_ext.sparse_row_update(*args)


def item_softmax_xent(
    hidden: Tensor,
    table: Tensor,
    target: Tensor,
    label_smoothing: float = 0.0,
    chunk: int = SOFTMAX_CHUNK,
) -> Tensor:
    """Softmax cross-entropy of each row of ``hidden`` over every row of ``table``,
    never holding the (B, N) logits.

    ``loss_b = logsumexp_j(h_b . t_j) - (1 - s) h_b . t_target - s mean_j h_b . t_j``
    (s = ``label_smoothing``), as ``F.cross_entropy(hidden @ table.T, target,
    reduction="none", label_smoothing=s)``. Items are visited in blocks of ``chunk``
    with an online log-sum-exp; the backward recomputes each block. Peak scratch is
    O(B x chunk), whatever N.

    Args:
        hidden: (B, D) float query rows.
        table: (N, D) item rows, N >= 1 (same dtype and device).
        target: (B,) int64 in [0, N).
        label_smoothing: in [0, 1].
        chunk: items per block.

    Returns:
        (B,) per-row loss, differentiable in hidden and table. The table's gradient is
        dense (every item's logit enters every row's normaliser).
    """
    check_item_softmax(hidden, table, target, label_smoothing, chunk)
    backend = _without_cuda_kernel(_backend.resolve(hidden.device, hidden.dtype))
    if backend == "reference":
        return item_softmax_xent_ref(hidden, table, target, label_smoothing)
    if backend == "triton":
        fn = _backend.triton_module().item_softmax_xent
    else:
        fn = torch.ops.solid_ext.item_softmax_xent
    return fn(hidden, table, target, float(label_smoothing), int(chunk))[0]


def topk_scores(
    queries: Tensor, table: Tensor, k: int, exclude: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` rows of ``table`` with the largest inner product with each query
    (maximum inner-product search), never holding the (B, N) score matrix.

    Args:
        queries: (B, D) float (user vectors).
        table: (N, D) item rows, same dtype and device; 1 <= k <= N.
        k: items per row.
        exclude: optional (B, E) int64 items each row must skip (its history), -1 pads
            a row; entries in [-1, N).

    Returns:
        (values (B, k), indices (B, k) int64), best first; equal scores go to the
        lower index. Where fewer than k items are left after exclusion, the last slots
        hold (-inf, -1). Not differentiable (inputs are detached). Raises ValueError
        if queries or table hold NaN or infinity.
    """
    k = check_topk_scores(queries, table, k, exclude)
    queries, table = queries.detach(), table.detach()
    backend = _without_cuda_kernel(_backend.resolve(queries.device, queries.dtype))
    if backend == "reference":
        return topk_scores_ref(queries, table, k, exclude)
    if backend == "triton":
        return _backend.triton_module().topk_scores(queries, table, k, exclude)
    return _finite_or_value_error(torch.ops.solid_ext.topk_scores, queries, table, k, exclude)


def score_ranks(
    queries: Tensor, table: Tensor, target: Tensor, exclude: Tensor | None = None
) -> Tensor:
    """Each query's target's exact rank among the items by inner product, never holding
    the (B, N) score matrix: full-ranking evaluation.

    ``rank_b = 1 + #{n != target_b, n not in exclude_b : q_b . t_n >= q_b . t_target}``:
    1 is best, and an item tied with the target counts against it (a constant scorer
    ranks every target last, never first).

    Args:
        queries: (B, D) float (user vectors).
        table: (N, D) item rows, same dtype and device.
        target: (B,) int64 in [0, N), each row's held-out item.
        exclude: optional (B, E) int64 items each row leaves out of the ranking (its
            history), -1 pads; excluding the target itself has no effect.

    Returns:
        (B,) int64 ranks in [1, N]. Not differentiable. Raises ValueError if queries or
        table hold NaN or infinity.
    """
    check_score_ranks(queries, table, target, exclude)
    queries, table = queries.detach(), table.detach()
    backend = _without_cuda_kernel(_backend.resolve(queries.device, queries.dtype))
    if backend == "reference":
        return score_ranks_ref(queries, table, target, exclude)
    if backend == "triton":
        return _backend.triton_module().score_ranks(queries, table, target, exclude)
    return _finite_or_value_error(torch.ops.solid_ext.score_ranks, queries, table, target, exclude)


def _without_cuda_kernel(backend: str) -> str:
    """The backend for an op with no CUDA C++ kernel: ``cuda`` becomes Triton (or the
    reference without it)."""
    if backend == "cuda":
        return "triton" if _backend.triton_usable() else "reference"
    return backend


def _finite_or_value_error(op, *args):
    """Run a compiled op; its finiteness check's error as the reference's ValueError."""
    try:
        return op(*args)
    except RuntimeError as exc:
        if "NaN or infinity" in str(exc):
            raise ValueError(str(exc).split("\n")[0]) from None
        raise


# --- registration of fake kernels and autograd for the compiled ops -------------


def _register() -> None:
    if _backend.compiled_extension() is None:
        return
    for name, fake in (
        ("dynamic_linear", _opmeta.dynamic_linear_fake),
        ("dynamic_linear_backward", _opmeta.dynamic_linear_backward_fake),
        ("generated_linear", _opmeta.generated_linear_fake),
        ("generated_linear_backward", _opmeta.generated_linear_backward_fake),
        ("codebook_quantize", _opmeta.codebook_quantize_fake),
        ("codebook_quantize_backward", _opmeta.codebook_quantize_backward_fake),
        ("sparse_row_update", _opmeta.sparse_row_update_fake),
        ("item_softmax_xent", _opmeta.item_softmax_xent_fake),
        ("item_softmax_xent_backward", _opmeta.item_softmax_xent_backward_fake),
        ("topk_scores", _opmeta.topk_scores_fake),
        ("score_ranks", _opmeta.score_ranks_fake),
    ):
        torch.library.register_fake(f"solid_ext::{name}", fake)
    backward, setup = _opmeta.dynamic_linear_autograd(torch.ops.solid_ext.dynamic_linear_backward)
    torch.library.register_autograd("solid_ext::dynamic_linear", backward, setup_context=setup)
    backward, setup = _opmeta.generated_linear_autograd(
        torch.ops.solid_ext.generated_linear_backward
    )
    torch.library.register_autograd("solid_ext::generated_linear", backward, setup_context=setup)
    backward, setup = _opmeta.codebook_quantize_autograd(
        torch.ops.solid_ext.codebook_quantize_backward
    )
    torch.library.register_autograd("solid_ext::codebook_quantize", backward, setup_context=setup)
    backward, setup = _opmeta.item_softmax_xent_autograd(
        torch.ops.solid_ext.item_softmax_xent_backward
    )
    torch.library.register_autograd("solid_ext::item_softmax_xent", backward, setup_context=setup)


_register()
