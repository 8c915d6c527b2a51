"""Registration of the Triton kernels as differentiable ``solid_ext_triton::*`` ops.

``torch.library.custom_op`` + ``register_fake`` + ``register_autograd`` rather than
``triton_op``: the latter's fake-tensor check fails under the interpreter. The
backward passes are ops too, so a compiled graph keeps them opaque. Schemas and
0-element conventions mirror ``csrc/ops.cpp``; the fake kernels and autograd
formulas are the ones the compiled ops use (:mod:`solid_ext._opmeta`). Like the
compiled ops, each checks its own arguments (shapes, dtypes, devices, tau, code
indices) before a kernel launches: a kernel given an undersized tensor or an
out-of-range index would read or write out of bounds.

No ``from __future__ import annotations`` here: ``custom_op`` infers the schema
from the annotations.
"""

import importlib
from types import ModuleType

import torch
from torch import Tensor

from .. import _opmeta, _validate

__all__ = ["dynamic_linear", "generated_linear", "codebook_quantize"]


def _kernels(name: str) -> ModuleType:
    """Kernel module ``name``, imported (with triton) at the first launch."""
    return importlib.import_module(f"{__package__}.{name}")


def _check_device(t: Tensor) -> None:
    if t.device.type == "cuda":
        return
    from . import interpreter_usable

    if not interpreter_usable():
        raise RuntimeError(
            f"solid_ext triton kernels need CUDA tensors (got {t.device}); to run them "
            "on CPU tensors set TRITON_INTERPRET=1 before triton is first imported"
        )


# --- dynamic_linear ---------------------------------------------------------------


@torch.library.custom_op("solid_ext_triton::dynamic_linear", mutates_args=())
def dynamic_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    branch_weight: Tensor | None,
    branch_bias: Tensor | None,
    tau: float,
) -> Tensor:
    """x (B, L, N_in), weight/branch (B, N_in, N_out), biases (B, N_out) -> (B, L, N_out)."""
    tau = _validate.check_dynamic_linear_op(x, weight, bias, branch_weight, branch_bias, tau)
    _check_device(x)
    return _kernels("_dynamic_linear").forward(x, weight, bias, branch_weight, branch_bias, tau)


dynamic_linear.register_fake(_opmeta.dynamic_linear_fake)


@torch.library.custom_op("solid_ext_triton::dynamic_linear_backward", mutates_args=())
def dynamic_linear_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    branch_weight: Tensor | None,
    branch_bias: Tensor | None,
    tau: float,
    need_dx: bool,
    need_dw: bool,
    need_dbw: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbranch_weight, dbias, dbranch_bias)``; unneeded ones are empty."""
    tau = _validate.check_dynamic_linear_op(
        x, weight, None, branch_weight, branch_bias, tau, grad=grad
    )
    _check_device(x)
    return _kernels("_dynamic_linear").backward(
        grad, x, weight, branch_weight, branch_bias, tau, need_dx, need_dw, need_dbw
    )


dynamic_linear_backward.register_fake(_opmeta.dynamic_linear_backward_fake)
_backward, _setup = _opmeta.dynamic_linear_autograd(dynamic_linear_backward)
dynamic_linear.register_autograd(_backward, setup_context=_setup)


# --- generated_linear -------------------------------------------------------------


@torch.library.custom_op("solid_ext_triton::generated_linear", mutates_args=())
def generated_linear(
    x: Tensor,
    cond: Tensor,
    gen_weight: Tensor,
    base: Tensor,
    tau: float | None,
) -> Tensor:
    """x (B, L, N_in), cond (B, C), gen_weight (N_in*N_out, C), base (N_in, N_out)
    -> (B, L, N_out)."""
    tau = _validate.check_generated_linear_op(x, cond, gen_weight, base, tau)
    _check_device(x)
    return _kernels("_generated_linear").forward(x, cond, gen_weight, base, tau)


generated_linear.register_fake(_opmeta.generated_linear_fake)


@torch.library.custom_op("solid_ext_triton::generated_linear_backward", mutates_args=())
def generated_linear_backward(
    grad: Tensor,
    x: Tensor,
    cond: Tensor,
    gen_weight: Tensor,
    base: Tensor,
    tau: float | None,
    need_dx: bool,
    need_dcond: bool,
    need_dgen: bool,
    need_dbase: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dcond, dgen_weight, dbase)``; unneeded ones are empty."""
    tau = _validate.check_generated_linear_op(x, cond, gen_weight, base, tau, grad=grad)
    _check_device(x)
    return _kernels("_generated_linear").backward(
        grad, x, cond, gen_weight, base, tau, need_dx, need_dcond, need_dgen, need_dbase
    )


generated_linear_backward.register_fake(_opmeta.generated_linear_backward_fake)
_backward, _setup = _opmeta.generated_linear_autograd(generated_linear_backward)
generated_linear.register_autograd(_backward, setup_context=_setup)


# --- codebook_quantize ------------------------------------------------------------


@torch.library.custom_op("solid_ext_triton::codebook_quantize", mutates_args=())
def codebook_quantize(
    z: Tensor, codebook: Tensor, straight_through_codebook: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """z (M, D), codebook (K, D) -> (quantized (M, D), sq_dist (M,), indices (M,) int64)."""
    _validate.check_codebook_quantize_op(z, codebook)
    _check_device(z)
    return _kernels("_codebook_quantize").forward(z, codebook)


codebook_quantize.register_fake(_opmeta.codebook_quantize_fake)


@torch.library.custom_op("solid_ext_triton::codebook_quantize_backward", mutates_args=())
def codebook_quantize_backward(
    grad_q: Tensor | None,
    grad_sq: Tensor | None,
    z: Tensor,
    codebook: Tensor,
    indices: Tensor,
    straight_through_codebook: bool,
) -> tuple[Tensor, Tensor]:
    """``(dz (M, D), dcodebook (K, D))``; a None output grad counts as zero."""
    _validate.check_codebook_quantize_backward_op(grad_q, grad_sq, z, codebook, indices)
    _check_device(z)
    return _kernels("_codebook_quantize").backward(
        grad_q, grad_sq, z, codebook, indices, straight_through_codebook
    )


codebook_quantize_backward.register_fake(_opmeta.codebook_quantize_backward_fake)
_backward, _setup = _opmeta.codebook_quantize_autograd(codebook_quantize_backward)
codebook_quantize.register_autograd(_backward, setup_context=_setup)


# --- sparse_row_update ------------------------------------------------------------

__all__ += ["sparse_row_update"]


@torch.library.custom_op(
    "solid_ext_triton::sparse_row_update", mutates_args=("weight", "state1", "state2")
)
def sparse_row_update(
    weight: Tensor,
    state1: Tensor,
    state2: Tensor,
    indices: Tensor | None,
    grad: Tensor,
    kind: str,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
) -> None:
    """Row-wise optimizer step in place on weight (N, D), state1 and state2 at the rows
    indices (nnz,) names (duplicates summed), or every row when indices is None."""
    args = (weight, state1, state2, indices, grad, kind, lr, beta1, beta2, eps, weight_decay)
    _validate.check_sparse_row_update(*args, step)
    _check_device(weight)
    _kernels("_sparse_row_update").forward(*args, step)


sparse_row_update.register_fake(_opmeta.sparse_row_update_fake)


# --- item_softmax_xent ------------------------------------------------------------

__all__ += ["item_softmax_xent", "item_softmax_xent_backward"]


@torch.library.custom_op("solid_ext_triton::item_softmax_xent", mutates_args=())
def item_softmax_xent(
    hidden: Tensor, table: Tensor, target: Tensor, label_smoothing: float, chunk: int
) -> tuple[Tensor, Tensor]:
    """hidden (B, D), table (N, D), target (B,) int64 -> (loss (B,), lse (B,))."""
    _validate.check_item_softmax(hidden, table, target, label_smoothing, chunk)
    _check_device(hidden)
    return _kernels("_item_softmax").forward(hidden, table, target, label_smoothing, chunk)


item_softmax_xent.register_fake(_opmeta.item_softmax_xent_fake)


def _check_item_softmax_backward(grad_loss: Tensor, hidden: Tensor, lse: Tensor) -> None:
    b = hidden.shape[0]
    for name, t in (("grad_loss", grad_loss), ("lse", lse)):
        _validate._check_float(name, t)
        _validate._check_same("hidden", hidden, name, t)
        if tuple(t.shape) != (b,):
            raise ValueError(f"{name} must be ({b},) to match hidden, got {_validate._desc(t)}")


@torch.library.custom_op("solid_ext_triton::item_softmax_xent_backward", mutates_args=())
def item_softmax_xent_backward(
    grad_loss: Tensor,
    hidden: Tensor,
    table: Tensor,
    target: Tensor,
    lse: Tensor,
    label_smoothing: float,
    chunk: int,
    need_dhidden: bool,
    need_dtable: bool,
) -> tuple[Tensor, Tensor]:
    """``(dhidden (B, D), dtable (N, D))``; an unneeded one is 0-element."""
    _validate.check_item_softmax(hidden, table, target, label_smoothing, chunk)
    _check_item_softmax_backward(grad_loss, hidden, lse)
    _check_device(hidden)
    return _kernels("_item_softmax").backward(
        grad_loss, hidden, table, target, lse, label_smoothing, chunk, need_dhidden, need_dtable
    )


item_softmax_xent_backward.register_fake(_opmeta.item_softmax_xent_backward_fake)
_backward, _setup = _opmeta.item_softmax_xent_autograd(item_softmax_xent_backward)
item_softmax_xent.register_autograd(_backward, setup_context=_setup)


# --- topk_scores / score_ranks ----------------------------------------------------

__all__ += ["score_ranks", "topk_scores"]


@torch.library.custom_op("solid_ext_triton::topk_scores", mutates_args=())
def topk_scores(
    queries: Tensor, table: Tensor, k: int, exclude: Tensor | None
) -> tuple[Tensor, Tensor]:
    """queries (B, D), table (N, D), exclude (B, E) int64 or None -> (values (B, k),
    indices (B, k) int64), best first, ties to the lower index (not differentiable)."""
    k = _validate.check_topk_scores(queries, table, k, exclude)
    _check_device(queries)
    return _kernels("_item_scores").topk_scores(queries, table, k, exclude)


topk_scores.register_fake(_opmeta.topk_scores_fake)


@torch.library.custom_op("solid_ext_triton::score_ranks", mutates_args=())
def score_ranks(queries: Tensor, table: Tensor, target: Tensor, exclude: Tensor | None) -> Tensor:
    """queries (B, D), table (N, D), target (B,) int64, exclude (B, E) int64 or None ->
    ranks (B,) int64, ties counted against the target (not differentiable)."""
    _validate.check_score_ranks(queries, table, target, exclude)
    _check_device(queries)
    return _kernels("_item_scores").score_ranks(queries, table, target, exclude)


score_ranks.register_fake(_opmeta.score_ranks_fake)
