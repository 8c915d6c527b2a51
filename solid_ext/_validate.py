"""Argument checks shared by every backend: errors name the tensor and what was seen."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _desc(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _check_float(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT:
        raise TypeError(f"{name} must be a floating-point tensor, got {_desc(t)}")
    return t


def _check_same(ref_name: str, ref: Tensor, name: str, t: Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
            "all tensors must share one dtype"
        )
    if t.device != ref.device:
        raise ValueError(
            f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
            "all tensors must be on one device"
        )


def check_tau(tau: float) -> float:
    if isinstance(tau, Tensor):
        raise TypeError("tau must be a Python float, not a tensor")
    tau = float(tau)
    if math.isnan(tau) or tau < 0:
        raise ValueError(f"tau must be a non-negative number, got {tau}")
    return tau


def check_dynamic_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    branch_weight: Tensor | None,
    branch_bias: Tensor | None,
    tau: float,
) -> float:
    """Validate ``dynamic_linear`` arguments; return tau as a float."""
    _check_float("x", x)
    _check_float("weight", weight)
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (B, N_in) or (B, L, N_in), got {_desc(x)}")
    if weight.dim() != 3:
        raise ValueError(f"weight must be (B, N_in, N_out), got {_desc(weight)}")
    _check_same("x", x, "weight", weight)
    b, n_in, n_out = weight.shape
    if x.shape[0] != b:
        raise ValueError(
            f"batch mismatch: x has B={x.shape[0]} ({_desc(x)}) but weight has "
            f"B={b} ({_desc(weight)})"
        )
    if x.shape[-1] != n_in:
        raise ValueError(
            f"N_in mismatch: x has N_in={x.shape[-1]} ({_desc(x)}) but weight has "
            f"N_in={n_in} ({_desc(weight)})"
        )
    if branch_weight is not None:
        _check_float("branch_weight", branch_weight)
        _check_same("weight", weight, "branch_weight", branch_weight)
        if branch_weight.shape != weight.shape:
            raise ValueError(
                f"branch_weight must match weight {tuple(weight.shape)}, got {_desc(branch_weight)}"
            )
    for name, t in (("bias", bias), ("branch_bias", branch_bias)):
        if t is None:
            continue
        _check_float(name, t)
        _check_same("weight", weight, name, t)
        if tuple(t.shape) != (b, n_out):
            raise ValueError(
                f"{name} must be (B, N_out) = {(b, n_out)} to match weight, got {_desc(t)}"
            )
    return check_tau(tau)


def check_codebook_quantize(z: Tensor, codebook: Tensor) -> None:
    """Validate ``codebook_quantize`` arguments."""
    _check_float("z", z)
    _check_float("codebook", codebook)
    if z.dim() < 1:
        raise ValueError(f"z must have a trailing feature dim (..., D), got {_desc(z)}")
    if codebook.dim() != 2:
        raise ValueError(f"codebook must be (K, D), got {_desc(codebook)}")
    _check_same("z", z, "codebook", codebook)
    if codebook.shape[0] == 0:
        raise ValueError(f"codebook is empty (K=0): {_desc(codebook)}")
    if codebook.shape[1] != z.shape[-1]:
        raise ValueError(
            f"D mismatch: z has D={z.shape[-1]} ({_desc(z)}) but codebook has "
            f"D={codebook.shape[1]} ({_desc(codebook)})"
        )
