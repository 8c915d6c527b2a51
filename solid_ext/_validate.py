"""Argument checks shared by every backend: errors name the argument and what was seen.

The compiled ops check their own arguments too (``csrc/validate.h``): they can be
called directly, as ``torch.ops.solid_ext.*``, without these wrappers.
"""

from __future__ import annotations

import math
import numbers

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


def check_tau(tau: object) -> float:
    """tau as a float; it must be a real number, finite and >= 0 (the clip bound)."""
    if isinstance(tau, Tensor):
        raise TypeError("tau must be a Python float, not a tensor")
    # bool is an int subclass, and float() would also parse a string: both are mistakes.
    if isinstance(tau, bool) or not isinstance(tau, (numbers.Real, torch.SymFloat, torch.SymInt)):
        raise TypeError(f"tau must be a real number (a Python float), got {type(tau).__name__}")
    tau = float(tau)
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a non-negative finite number, got {tau}")
    return tau


def check_straight_through(flag: object) -> bool:
    """The ``straight_through_codebook`` flag: a bool (a truthy string or tensor is a bug)."""
    if not isinstance(flag, bool):
        raise TypeError(
            f"straight_through_codebook must be a bool, got {type(flag).__name__} {flag!r}"
        )
    return flag


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


def check_generated_linear(
    x: Tensor, cond: Tensor, gen_weight: Tensor, base: Tensor, tau: float | None
) -> float | None:
    """Validate ``generated_linear`` arguments; return tau as a float (or None)."""
    for name, t in (("x", x), ("cond", cond), ("gen_weight", gen_weight), ("base", base)):
        _check_float(name, t)
        if name != "x":
            _check_same("x", x, name, t)
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (B, N_in) or (B, L, N_in), got {_desc(x)}")
    if base.dim() != 2:
        raise ValueError(f"base must be (N_in, N_out), got {_desc(base)}")
    n_in, n_out = base.shape
    if x.shape[-1] != n_in:
        raise ValueError(
            f"N_in mismatch: x has N_in={x.shape[-1]} ({_desc(x)}) but base has "
            f"N_in={n_in} ({_desc(base)})"
        )
    if cond.dim() != 2 or cond.shape[0] != x.shape[0]:
        raise ValueError(f"cond must be (B, C) with B={x.shape[0]} as x, got {_desc(cond)}")
    want = (n_in * n_out, cond.shape[1])
    if tuple(gen_weight.shape) != want:
        raise ValueError(
            f"gen_weight must be (N_in*N_out, C) = {want} for base {tuple(base.shape)} and "
            f"cond {tuple(cond.shape)}, got {_desc(gen_weight)}"
        )
    return None if tau is None else check_tau(tau)


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


# --- the raw ops' layout (3-D x, 2-D z), for the Triton ops, which take it directly ----


def check_dynamic_linear_op(
    x3: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    branch_weight: Tensor | None,
    branch_bias: Tensor | None,
    tau: float,
    grad: Tensor | None = None,
) -> float:
    """Validate the arguments of a ``dynamic_linear`` op (x is (B, L, N_in)) or, given
    ``grad``, of its backward; return tau as a float."""
    if isinstance(x3, Tensor) and x3.dim() != 3:
        raise ValueError(f"x must be (B, L, N_in), got {_desc(x3)}")
    tau = check_dynamic_linear(x3, weight, bias, branch_weight, branch_bias, tau)
    if grad is not None:
        _check_float("grad", grad)
        _check_same("x", x3, "grad", grad)
        want = (x3.shape[0], x3.shape[1], weight.shape[2])
        if tuple(grad.shape) != want:
            raise ValueError(
                f"grad must be (B, L, N_out) = {want} to match x and weight, got {_desc(grad)}"
            )
    return tau


def check_generated_linear_op(
    x3: Tensor,
    cond: Tensor,
    gen_weight: Tensor,
    base: Tensor,
    tau: float | None,
    grad: Tensor | None = None,
) -> float | None:
    """Validate the arguments of a ``generated_linear`` op (x is (B, L, N_in)) or, given
    ``grad``, of its backward; return tau as a float (or None)."""
    if isinstance(x3, Tensor) and x3.dim() != 3:
        raise ValueError(f"x must be (B, L, N_in), got {_desc(x3)}")
    tau = check_generated_linear(x3, cond, gen_weight, base, tau)
    if grad is not None:
        _check_float("grad", grad)
        _check_same("x", x3, "grad", grad)
        want = (x3.shape[0], x3.shape[1], base.shape[1])
        if tuple(grad.shape) != want:
            raise ValueError(
                f"grad must be (B, L, N_out) = {want} to match x and base, got {_desc(grad)}"
            )
    return tau


def check_codebook_quantize_op(z2: Tensor, codebook: Tensor) -> None:
    """Validate the arguments of a ``codebook_quantize`` op (z is (M, D))."""
    if isinstance(z2, Tensor) and z2.dim() != 2:
        raise ValueError(f"z must be (M, D), got {_desc(z2)}")
    check_codebook_quantize(z2, codebook)


def check_codebook_quantize_backward_op(
    grad_q: Tensor | None, grad_sq: Tensor | None, z2: Tensor, codebook: Tensor, indices: Tensor
) -> None:
    """Validate the arguments of a ``codebook_quantize_backward`` op, including that every
    index lies in [0, K): the backward gathers and scatters codebook rows through them."""
    check_codebook_quantize_op(z2, codebook)
    m, d = z2.shape
    for name, t, want in (("grad_q", grad_q, (m, d)), ("grad_sq", grad_sq, (m,))):
        if t is None:
            continue
        _check_float(name, t)
        _check_same("z", z2, name, t)
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must be {want} to match z, got {_desc(t)}")
    if not isinstance(indices, Tensor) or indices.dtype != torch.long:
        got = _desc(indices) if isinstance(indices, Tensor) else type(indices).__name__
        raise TypeError(f"indices must be an int64 tensor, got {got}")
    if indices.device != z2.device:
        raise ValueError(f"indices is on {indices.device} but z is on {z2.device}")
    if tuple(indices.shape) != (m,):
        raise ValueError(f"indices must be ({m},) to match z, got {_desc(indices)}")
    if m and indices.device.type == "cpu":
        # On a GPU this would be a device sync per backward; the Triton kernel masks
        # out-of-range indices instead, so they never touch memory.
        lo, hi = torch.stack(torch.aminmax(indices)).tolist()
        k = codebook.shape[0]
        if lo < 0 or hi >= k:
            raise IndexError(f"indices must lie in [0, K) = [0, {k}), got values in [{lo}, {hi}]")


# --- the item table: sparse row updates and the softmax over every item -----------

#: ``sparse_row_update`` kinds: per-element lazy Adam, one accumulator per row Adagrad.
ROW_OPTIMIZERS = ("lazy_adam", "rowwise_adagrad")


def _check_real(name: str, v: object, *, positive: bool = False, unit: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (positive and v == 0) or (unit and v >= 1):
        want = "in [0, 1)" if unit else ("> 0" if positive else ">= 0")
        raise ValueError(f"{name} must be a finite number {want}, got {v}")
    return v


def check_sparse_row_update(
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
    """Validate ``sparse_row_update`` (the compiled op checks the same in C++)."""
    if kind not in ROW_OPTIMIZERS:
        raise ValueError(f"kind must be one of {ROW_OPTIMIZERS}, got {kind!r}")
    _check_float("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must be (N, D), got {_desc(weight)}")
    if not weight.is_contiguous():
        raise ValueError("weight must be contiguous (it is updated in place)")
    n, d = weight.shape
    _check_float("grad", grad)
    _check_same("weight", weight, "grad", grad)
    for name, t in (("state1", state1), ("state2", state2)):
        _check_float(name, t)
        _check_same("weight", weight, name, t)
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is updated in place)")
    want1 = (n, d) if kind == "lazy_adam" else (n,)
    want2 = (n, d) if kind == "lazy_adam" else (0,)
    for name, t, want in (("state1", state1, want1), ("state2", state2, want2)):
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want} for kind={kind!r}, got {_desc(t)}")
    if indices is None:
        if tuple(grad.shape) != (n, d):
            raise ValueError(
                f"grad must be (N, D) = {(n, d)} when indices is None, got {_desc(grad)}"
            )
    else:
        if not isinstance(indices, Tensor) or indices.dtype != torch.int64 or indices.dim() != 1:
            got = _desc(indices) if isinstance(indices, Tensor) else type(indices).__name__
            raise ValueError(f"indices must be a 1-d int64 tensor, got {got}")
        if indices.device != weight.device:
            raise ValueError(f"indices is on {indices.device} but weight is on {weight.device}")
        if tuple(grad.shape) != (indices.shape[0], d):
            raise ValueError(
                f"grad must be (nnz, D) = {(indices.shape[0], d)} to match indices and weight, "
                f"got {_desc(grad)}"
            )
        if indices.numel() and not torch.compiler.is_compiling():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= n:
                raise IndexError(f"indices must lie in [0, {n}) (weight's rows), got [{lo}, {hi}]")
    _check_real("lr", lr)
    _check_real("beta1", beta1, unit=True)
    _check_real("beta2", beta2, unit=True)
    _check_real("eps", eps, positive=True)
    _check_real("weight_decay", weight_decay)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (Adam's bias correction), got {step!r}")


def _check_target(target: object, lead_name: str, lead: Tensor, n: int) -> None:
    """target: (B,) int64 on ``lead``'s device, B = ``lead``'s rows, entries in [0, n)."""
    if not isinstance(target, Tensor) or target.dtype != torch.int64 or target.dim() != 1:
        got = _desc(target) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must be a 1-d int64 tensor, got {got}")
    whose = f"{lead_name}'" if lead_name.endswith("s") else f"{lead_name}'s"
    if target.shape[0] != lead.shape[0]:
        raise ValueError(
            f"target must have B = {lead.shape[0]} entries ({whose} rows), got {target.shape[0]}"
        )
    if target.device != lead.device:
        raise ValueError(f"target is on {target.device} but {lead_name} is on {lead.device}")
    if target.numel() and not torch.compiler.is_compiling():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"target must lie in [0, {n}) (table's rows), got [{lo}, {hi}]")


def check_item_softmax(
    hidden: Tensor, table: Tensor, target: Tensor, label_smoothing: float, chunk: int
) -> None:
    """Validate ``item_softmax_xent`` arguments."""
    _check_float("hidden", hidden)
    _check_float("table", table)
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be (B, D), got {_desc(hidden)}")
    if table.dim() != 2 or table.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"table must be (N, D) with D = {hidden.shape[1]} (hidden's), got {_desc(table)}"
        )
    if table.shape[0] == 0:
        raise ValueError("table must have at least one row (item)")
    _check_same("hidden", hidden, "table", table)
    _check_target(target, "hidden", hidden, table.shape[0])
    ls = _check_real("label_smoothing", label_smoothing)
    if ls > 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {ls}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1 (items per block), got {chunk!r}")


def check_topk_scores(queries: Tensor, table: Tensor, k: object, exclude: Tensor | None) -> int:
    """Validate ``topk_scores`` arguments; returns k as an int."""
    _check_float("queries", queries)
    _check_float("table", table)
    if queries.dim() != 2:
        raise ValueError(f"queries must be (B, D), got {_desc(queries)}")
    if table.dim() != 2 or table.shape[1] != queries.shape[1]:
        raise ValueError(
            f"table must be (N, D) with D = {queries.shape[1]} (queries'), got {_desc(table)}"
        )
    _check_same("queries", queries, "table", table)
    n = table.shape[0]
    if n == 0:
        raise ValueError("table must have at least one row (item)")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {type(k).__name__} {k!r}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N] = [1, {n}] (table's rows), got {k}")
    if exclude is not None:
        if not isinstance(exclude, Tensor) or exclude.dtype != torch.int64 or exclude.dim() != 2:
            got = _desc(exclude) if isinstance(exclude, Tensor) else type(exclude).__name__
            raise ValueError(f"exclude must be a (B, E) int64 tensor (-1 pads a row), got {got}")
        if exclude.shape[0] != queries.shape[0]:
            raise ValueError(
                f"exclude must have B = {queries.shape[0]} rows (queries'), got {exclude.shape[0]}"
            )
        if exclude.device != queries.device:
            raise ValueError(f"exclude is on {exclude.device} but queries is on {queries.device}")
        if exclude.numel() and not torch.compiler.is_compiling():
            lo, hi = int(exclude.min()), int(exclude.max())
            if lo < -1 or hi >= n:
                raise IndexError(
                    f"exclude must lie in [-1, {n}) (-1 pads a row; table has {n} rows), "
                    f"got [{lo}, {hi}]"
                )
    return k


def check_score_ranks(
    queries: Tensor, table: Tensor, target: Tensor, exclude: Tensor | None
) -> None:
    """Validate ``score_ranks`` arguments (those of ``topk_scores`` with k = 1, and
    target (B,) int64 in [0, N))."""
    check_topk_scores(queries, table, 1, exclude)
    _check_target(target, "queries", queries, table.shape[0])
