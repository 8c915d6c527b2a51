"""Registration of the Triton kernels as differentiable ``solid_ext_triton::*`` ops.

``torch.library.custom_op`` + ``register_fake`` + ``register_autograd`` rather than
``triton_op``: the latter's fake-tensor check fails under the interpreter. The
backward passes are ops too, so a compiled graph keeps them opaque. Schemas and
0-element conventions mirror ``csrc/ops.cpp`` / ``solid_ext.ops._register``.

No ``from __future__ import annotations`` here: ``custom_op`` infers the schema
from the annotations.
"""

import importlib
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["dynamic_linear", "codebook_quantize"]


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
    _check_device(x)
    return _kernels("_dynamic_linear").forward(x, weight, bias, branch_weight, branch_bias, tau)


@dynamic_linear.register_fake
def _(x, weight, bias, branch_weight, branch_bias, tau):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[2]))


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
    _check_device(x)
    return _kernels("_dynamic_linear").backward(
        grad, x, weight, branch_weight, branch_bias, tau, need_dx, need_dw, need_dbw
    )


@dynamic_linear_backward.register_fake
def _(grad, x, weight, branch_weight, branch_bias, tau, need_dx, need_dw, need_dbw):
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    dw = torch.empty_like(weight) if need_dw else weight.new_empty(0)
    has_bw = need_dbw and branch_weight is not None
    dbw = torch.empty_like(weight) if has_bw else weight.new_empty(0)
    db = grad.new_empty((grad.shape[0], grad.shape[2]))
    dbb = torch.empty_like(db) if branch_bias is not None else grad.new_empty(0)
    return dx, dw, dbw, db, dbb


def _dl_setup(ctx, inputs, output) -> None:
    x, weight, bias, branch_weight, branch_bias, tau = inputs
    ctx.save_for_backward(x, weight, branch_weight, branch_bias)
    ctx.tau = tau
    ctx.has_bias = bias is not None


def _dl_backward(ctx, grad):
    x, weight, branch_weight, branch_bias = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dw, dbw, db, dbb = dynamic_linear_backward(
        grad, x, weight, branch_weight, branch_bias, ctx.tau, need[0], need[1], need[3]
    )
    return (
        dx if need[0] else None,
        dw if need[1] else None,
        db if ctx.has_bias and need[2] else None,
        dbw if branch_weight is not None and need[3] else None,
        dbb if branch_bias is not None and need[4] else None,
        None,
    )


dynamic_linear.register_autograd(_dl_backward, setup_context=_dl_setup)


# --- codebook_quantize ------------------------------------------------------------


@torch.library.custom_op("solid_ext_triton::codebook_quantize", mutates_args=())
def codebook_quantize(
    z: Tensor, codebook: Tensor, straight_through_codebook: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """z (M, D), codebook (K, D) -> (quantized (M, D), sq_dist (M,), indices (M,) int64)."""
    _check_device(z)
    return _kernels("_codebook_quantize").forward(z, codebook)


@codebook_quantize.register_fake
def _(z, codebook, straight_through_codebook):
    m = z.shape[0]
    return (
        z.new_empty((m, z.shape[1])),
        z.new_empty((m,)),
        z.new_empty((m,), dtype=torch.long),
    )


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
    _check_device(z)
    return _kernels("_codebook_quantize").backward(
        grad_q, grad_sq, z, codebook, indices, straight_through_codebook
    )


@codebook_quantize_backward.register_fake
def _(grad_q, grad_sq, z, codebook, indices, straight_through_codebook):
    return torch.empty_like(z), torch.empty_like(codebook)


def _cq_setup(ctx, inputs, output) -> None:
    z, codebook, st = inputs
    ctx.mark_non_differentiable(output[2])
    ctx.save_for_backward(z, codebook, output[2])
    ctx.st = st


def _cq_backward(ctx, grad_q, grad_sq, _grad_idx):
    z, codebook, idx = ctx.saved_tensors
    gz, gc = codebook_quantize_backward(grad_q, grad_sq, z, codebook, idx, ctx.st)
    return gz, gc, None


codebook_quantize.register_autograd(_cq_backward, setup_context=_cq_setup)
