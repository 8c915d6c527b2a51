"""Triton kernels for the two fused ops (CUDA tensors; CPU tensors under
``TRITON_INTERPRET=1``).

``dynamic_linear(x3, weight, bias, branch_weight, branch_bias, tau) -> y3`` and
``codebook_quantize(z2, codebook, straight_through_codebook) -> (quantized,
sq_dist, indices)`` have exactly the semantics of ``torch.ops.solid_ext.*`` as
called by :mod:`solid_ext.ops` and are differentiable (registered as
``torch.library.custom_op`` ops ``solid_ext_triton::*`` with fake kernels and
autograd formulas, so ``torch.compile`` traces through them). This package imports
without Triton; :func:`is_available` then says False and the ops raise.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton  # noqa: F401

    _HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    _HAS_TRITON = False

__all__ = ["is_available", "dynamic_linear", "codebook_quantize"]


def is_available() -> bool:
    """Triton imports and can run: a CUDA device, or the CPU interpreter."""
    return _HAS_TRITON and (
        torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
    )


if _HAS_TRITON:
    from ._ops import codebook_quantize, dynamic_linear
else:  # pragma: no cover

    def dynamic_linear(
        x3: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        branch_weight: Tensor | None,
        branch_bias: Tensor | None,
        tau: float,
    ) -> Tensor:
        raise RuntimeError("solid_ext.triton_kernels: triton is not installed")

    def codebook_quantize(
        z2: Tensor, codebook: Tensor, straight_through_codebook: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        raise RuntimeError("solid_ext.triton_kernels: triton is not installed")
