"""Triton kernels for the fused ops (CUDA tensors; CPU tensors under
``TRITON_INTERPRET=1``).

``dynamic_linear(x3, weight, bias, branch_weight, branch_bias, tau) -> y3``,
``generated_linear(x3, cond, gen_weight, base, tau) -> y3`` and
``codebook_quantize(z2, codebook, straight_through_codebook) -> (quantized,
sq_dist, indices)`` have exactly the semantics of ``torch.ops.solid_ext.*`` as
called by :mod:`solid_ext.ops` and are differentiable (registered as
``torch.library.custom_op`` ops ``solid_ext_triton::*`` with fake kernels and
autograd formulas, so ``torch.compile`` traces through them).
``item_softmax_xent(hidden, table, target, label_smoothing, chunk) -> (loss,
lse)`` likewise (softmax cross-entropy over every item, no (B, N) logits).
``sparse_row_update(weight, state1, state2, indices, grad, kind, lr, beta1, beta2,
eps, weight_decay, step)`` updates weight and state in place (an optimizer step, not
differentiable). ``topk_scores(queries, table, k, exclude) -> (values, indices)`` and
``score_ranks(queries, table, target, exclude) -> ranks`` (maximum inner-product top-k
and a target's exact rank, no (B, N) scores) are not differentiable either; all three
are ``custom_op`` ops with fake kernels too.

Importing this package does not import Triton (it is imported at the first
kernel launch), so ``TRITON_INTERPRET`` may still be set after ``import solid_ext``;
it must be set before anything imports ``triton`` itself, because ``triton.jit``
(Triton's own ``tl.zeros``/``tl.sum`` included) picks compiled or interpreted code
when decorating. Without Triton, :func:`is_available` says False and the ops raise.

For tools: :func:`kernel_launches` and :func:`compile_kernels` (from
:mod:`solid_ext.triton_kernels.aot`, imported with Triton on first use) list every
distinct launch the ops make and compile each for a given ``sm_<arch>`` without a
GPU (``tools/check_triton.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

_HAS_TRITON = importlib.util.find_spec("triton") is not None

__all__ = [
    "codebook_quantize",
    "compile_kernels",
    "dynamic_linear",
    "generated_linear",
    "interpreter_usable",
    "is_available",
    "item_softmax_xent",
    "kernel_launches",
    "score_ranks",
    "sparse_row_update",
    "topk_scores",
]
_AOT = ("compile_kernels", "kernel_launches")


def interpreter_usable() -> bool:
    """TRITON_INTERPRET=1 is set and Triton is (or will be) imported in that mode."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    tl = sys.modules.get("triton.language")
    # Imported before the variable was set: its jit functions are compiled-mode ones.
    return tl is None or type(tl.zeros).__name__ == "InterpretedFunction"


def is_available() -> bool:
    """Triton is installed and can run: a CUDA device, or the CPU interpreter."""
    return _HAS_TRITON and (torch.cuda.is_available() or interpreter_usable())


if _HAS_TRITON:
    from ._ops import (
        codebook_quantize,
        dynamic_linear,
        generated_linear,
        item_softmax_xent,
        score_ranks,
        sparse_row_update,
        topk_scores,
    )
else:  # pragma: no cover

    def _no_triton(*args: object, **kwargs: object):
        raise RuntimeError("solid_ext.triton_kernels: triton is not installed")

    dynamic_linear = generated_linear = codebook_quantize = _no_triton
    item_softmax_xent = sparse_row_update = _no_triton
    topk_scores = score_ranks = _no_triton


def __getattr__(name: str):
    """The ahead-of-time hook, imported (with Triton) on first use."""
    if name in _AOT:
        from . import aot

        return getattr(aot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
