"""The Triton backend's launches, compiled ahead of time for GPUs that are not there.

The interpreter (``TRITON_INTERPRET=1``) proves the kernels' numerics but accepts code
the GPU compiler rejects (layouts, dot shapes, dtype rules). This module is the public
hook that lets a tool check the real compiler's verdict on a machine without a GPU
(``tools/check_triton.py``):

- :func:`kernel_launches` runs the ops' host code on CPU tensors built by
  :mod:`solid_ext.testing`, over problems that reach every code path of the block
  heuristics (:data:`DYNAMIC_LINEAR_PROBLEMS`, :data:`GENERATED_LINEAR_PROBLEMS`,
  :data:`CODEBOOK_QUANTIZE_PROBLEMS`, :data:`SPARSE_ROW_UPDATE_PROBLEMS`, each dtype of
  :data:`DTYPES`, branch on and off, tau set and None, straight-through on and off, both
  row optimizers sparse and dense; :data:`ITEM_SOFTMAX_PROBLEMS` with and without label
  smoothing; :data:`TOPK_SCORES_PROBLEMS` and :data:`SCORE_RANKS_PROBLEMS` with and
  without exclusions), with every kernel launch recorded instead of run, and returns
  each distinct one.
- :func:`compile_kernels` compiles those launches for ``sm_<arch>`` and returns, per
  launch, the PTX, the shared memory and the register and spill report of the ptxas run
  that built its cubin, or the compiler's error.

Importing this module imports Triton, which must then be in compiled mode:
``TRITON_INTERPRET`` unset when ``triton`` is first imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
import triton.language as tl

from .. import testing
from . import (
    _codebook_quantize,
    _dynamic_linear,
    _generated_linear,
    _item_scores,
    _item_softmax,
    _launch,
    _sparse_row_update,
)

__all__ = [
    "CODEBOOK_QUANTIZE_PROBLEMS",
    "DTYPES",
    "DYNAMIC_LINEAR_PROBLEMS",
    "GENERATED_LINEAR_PROBLEMS",
    "ITEM_SOFTMAX_PROBLEMS",
    "SCORE_RANKS_PROBLEMS",
    "SPARSE_ROW_UPDATE_PROBLEMS",
    "TOPK_SCORES_PROBLEMS",
    "CompiledKernel",
    "KernelLaunch",
    "compile_kernels",
    "kernel_launches",
]

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# (B, L, N_in, N_out): L < 8 (broadcast tiles), one dot tile, several L tiles (the
# separate dx kernel) with N_in and N_out just past a block.
DYNAMIC_LINEAR_PROBLEMS = ((3, 1, 5, 7), (2, 10, 32, 64), (2, 70, 33, 65))
# (B, L, N_in, N_out, C): everything below the dot minimum; the paper's head (L = 1,
# generation by tl.dot); and dots everywhere with every dimension just past a block.
GENERATED_LINEAR_PROBLEMS = ((3, 1, 5, 7, 3), (64, 1, 32, 64, 32), (40, 20, 33, 65, 40))
# (M, K, D): D below the dot minimum, and the paper's D = 32 and 64 over several K tiles.
CODEBOOK_QUANTIZE_PROBLEMS = ((37, 70, 5), (64, 256, 32), (64, 1024, 64))
# (N, nnz, D): small D (64 rows per program), the paper's D = 64, a single row in one
# widest float32 tile (two float64 tiles), and D past the widest tile in every dtype (the
# D loop; rowwise_adagrad's two sweeps).
SPARSE_ROW_UPDATE_PROBLEMS = ((40, 37, 5), (300, 200, 64), (20, 7, 1500), (20, 7, 3000))
# (B, N, D) of item_softmax_xent: D below the dot minimum (broadcast tiles), the dot
# path with D resident at 32 and 64 (the two forward item tiles), and D = 130 past
# one chunk (the D loop and the backward's D slices; float64 takes it from D = 32).
ITEM_SOFTMAX_PROBLEMS = ((37, 70, 5), (64, 300, 32), (64, 1000, 64), (17, 100, 130))
# (B, N, D, k) of topk_scores: D below the dot minimum with the 32-row tile (k <= 32);
# the 16-row tiles with k = 64 and 100 (the largest, 128-item tiles), D at 32 (resident
# for float16/bfloat16) and 64; few rows over many items (item splits and the merge
# kernel) for k = 128 and for k = 1 with D = 130. float64 runs the reference (no launch).
TOPK_SCORES_PROBLEMS = (
    (37, 70, 5, 10),
    (64, 300, 64, 64),
    (64, 1000, 32, 100),
    (3, 20000, 64, 128),
    (5, 5000, 130, 1),
)
# (B, N, D) of score_ranks: D below the dot minimum, resident at 32 and 64 (64- and
# 32-item tiles) for float16/bfloat16, and D = 130 over many items (item splits).
SCORE_RANKS_PROBLEMS = ((37, 70, 5), (64, 1000, 32), (64, 1000, 64), (3, 20000, 130))
_TAU = 0.01

_TYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
}
_OPTIONS = ("num_warps", "num_stages", "num_ctas")


@dataclass
class KernelLaunch:
    """One distinct launch: what ``triton.compile`` needs to build it."""

    kernel: str  # the kernel's name, e.g. "_dl_fwd_kernel"
    signature: dict[str, str]  # every parameter -> Triton type ("*fp32", "i32", "constexpr")
    constexprs: dict[str, Any]
    options: dict[str, int]  # num_warps, ...
    fn: Any = field(repr=False)  # the triton.jit function

    @property
    def dtypes(self) -> str:
        """The floating-point pointer types it takes, e.g. "*bf16/*fp32"."""
        floats = {t for t in self.signature.values() if t.startswith(("*fp", "*bf"))}
        return "/".join(sorted(floats))


@dataclass
class CompiledKernel:
    """One launch compiled for ``sm_<arch>`` (``error`` set if it did not compile)."""

    launch: KernelLaunch
    arch: int
    ptx: str | None = None
    shared: int | None = None  # bytes of shared memory per program
    error: str | None = None
    # What ptxas printed with -v when Triton built the cubin (registers, spills); None
    # where Triton's cache already held the kernel (nothing was built).
    ptxas_log: str | None = None

    @property
    def gpu_name(self) -> str:
        """The PTX's target, e.g. "sm_90a" (Triton targets the arch-specific variant)."""
        found = re.search(r"^\.target\s+(sm_\w+)", self.ptx or "", re.M)
        return found.group(1) if found else f"sm_{self.arch}"


def _arg_type(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unsupported kernel argument {value!r}")


def _describe(rec: _launch.Recorded) -> KernelLaunch:
    # JITFunction.arg_names / .params (which parameters are constexpr) are Triton's own
    # description of a kernel; nothing else from inside Triton is read here.
    fn = rec.kernel
    bound = dict(zip(fn.arg_names, rec.args, strict=False))
    bound.update({k: v for k, v in rec.kwargs.items() if k in fn.arg_names})
    sig, const = {}, {}
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
            const[p.name] = bound[p.name]
        else:
            sig[p.name] = _arg_type(bound[p.name])
    options = {k: v for k, v in rec.kwargs.items() if k in _OPTIONS}
    return KernelLaunch(fn.__name__, sig, const, options, fn)


def _run_problems(
    dtypes: Sequence[torch.dtype],
    dl_problems: Sequence[tuple],
    cq_problems: Sequence[tuple],
    gl_problems: Sequence[tuple] = (),
    sru_problems: Sequence[tuple] = (),
) -> None:
    """The ops' host code over every problem (under :func:`_launch.recording`)."""
    for dtype in dtypes:
        for B, L, I, O in dl_problems:  # noqa: E741
            for branch in (False, True):
                x, w, b, bw, bb = testing.dynamic_linear_inputs(
                    B, L, I, O, dtype=dtype, branch=branch
                )
                _dynamic_linear.forward(x, w, b, bw, bb, _TAU)
                grad = torch.ones(B, L, O, dtype=dtype)
                _dynamic_linear.backward(grad, x, w, bw, bb, _TAU, True, True, True)
        for B, L, I, O, C in gl_problems:  # noqa: E741
            x, cond, gen, base = testing.generated_linear_inputs(B, L, I, O, C, dtype=dtype)
            grad = torch.ones(B, L, O, dtype=dtype)
            for tau in (None, _TAU):
                _generated_linear.forward(x, cond, gen, base, tau)
                _generated_linear.backward(grad, x, cond, gen, base, tau, True, True, True, True)
        for M, K, D in cq_problems:
            z, c = testing.codebook_quantize_inputs(M, K, D, dtype=dtype)
            _codebook_quantize.forward(z, c)
            idx = torch.zeros(M, dtype=torch.long)
            for st in (False, True):
                _codebook_quantize.backward(torch.ones_like(z), z.new_ones(M), z, c, idx, st)
        for N, nnz, D in sru_problems:
            _sparse_row_update_launches(N, nnz, D, dtype)


def _sparse_row_update_launches(N: int, nnz: int, D: int, dtype: torch.dtype) -> None:
    """sparse_row_update's host code: both kinds, sparse with weight decay and dense
    without (each a superset or the other branch of the kernel's HAS_WD/DENSE code)."""
    g = torch.Generator().manual_seed(N + nnz + D)
    w = torch.randn(N, D, generator=g).to(dtype)
    idx = torch.randint(0, N, (nnz,), generator=g)
    for kind in _sparse_row_update.KINDS:
        adam = kind == "lazy_adam"
        s1 = torch.ones((N, D) if adam else (N,), dtype=dtype)
        s2 = torch.ones((N, D) if adam else (0,), dtype=dtype)
        for rows, wd in ((idx, 0.01), (None, 0.0)):
            grad = torch.ones(N if rows is None else nnz, D, dtype=dtype)
            _sparse_row_update.forward(w, s1, s2, rows, grad, kind, 1e-3, 0.9, 0.999, 1e-8, wd, 1)


def _item_softmax_launches(dtypes: Sequence[torch.dtype], problems: Sequence[tuple]) -> None:
    """item_softmax_xent's host code: forward and backward (both gradients) with and
    without label smoothing (the SMOOTH constexpr)."""
    for dtype in dtypes:
        for B, N, D in problems:
            g = torch.Generator().manual_seed(B + N + D)
            hidden = torch.randn(B, D, generator=g).to(dtype)
            table = torch.randn(N, D, generator=g).to(dtype)
            target = torch.randint(0, N, (B,), generator=g)
            grad = torch.ones(B, dtype=dtype)
            for ls in (0.0, 0.1):
                _, lse = _item_softmax.forward(hidden, table, target, ls, 4096)
                _item_softmax.backward(grad, hidden, table, target, lse, ls, 4096, True, True)


def _item_scores_launches(
    dtypes: Sequence[torch.dtype], topk_problems: Sequence[tuple], rank_problems: Sequence[tuple]
) -> None:
    """topk_scores' and score_ranks' host code, each with and without exclusions (the
    HAS_EX constexpr; -1 padding included)."""
    for dtype in dtypes:
        if dtype == torch.float64:
            continue  # the reference: no launch
        for problem in (*topk_problems, *rank_problems):
            B, N, D = problem[:3]
            g = torch.Generator().manual_seed(B + N + D)
            queries = torch.randn(B, D, generator=g).to(dtype)
            table = torch.randn(N, D, generator=g).to(dtype)
            exclude = torch.randint(-1, N, (B, 5), generator=g)
            target = torch.randint(0, N, (B,), generator=g)
            for ex in (None, exclude):
                if len(problem) == 4:
                    _item_scores.topk_scores(queries, table, problem[3], ex)
                else:
                    _item_scores.score_ranks(queries, table, target, ex)


def kernel_launches(
    dtypes: Sequence[torch.dtype] = DTYPES,
    dynamic_linear_problems: Sequence[tuple[int, int, int, int]] = DYNAMIC_LINEAR_PROBLEMS,
    codebook_quantize_problems: Sequence[tuple[int, int, int]] = CODEBOOK_QUANTIZE_PROBLEMS,
    generated_linear_problems: Sequence[tuple[int, int, int, int, int]] = (
        GENERATED_LINEAR_PROBLEMS
    ),
    sparse_row_update_problems: Sequence[tuple[int, int, int]] = SPARSE_ROW_UPDATE_PROBLEMS,
    item_softmax_problems: Sequence[tuple[int, int, int]] = ITEM_SOFTMAX_PROBLEMS,
    topk_scores_problems: Sequence[tuple[int, int, int, int]] = TOPK_SCORES_PROBLEMS,
    score_ranks_problems: Sequence[tuple[int, int, int]] = SCORE_RANKS_PROBLEMS,
) -> list[KernelLaunch]:
    """Every distinct launch (kernel, argument types, constexprs, options) the ops make
    for these problems, found by running their host code on CPU tensors with the
    launches recorded instead of run (no GPU, no kernel runs)."""
    if type(tl.zeros).__name__ == "InterpretedFunction":
        raise RuntimeError(
            "triton was imported with TRITON_INTERPRET=1: its kernels are interpreted "
            "and cannot be compiled; run without TRITON_INTERPRET"
        )
    with _launch.recording() as recorded:
        _run_problems(
            dtypes,
            dynamic_linear_problems,
            codebook_quantize_problems,
            generated_linear_problems,
            sparse_row_update_problems,
        )
        _item_softmax_launches(dtypes, item_softmax_problems)
        _item_scores_launches(dtypes, topk_scores_problems, score_ranks_problems)
    unique: dict[str, KernelLaunch] = {}
    for rec in recorded:
        la = _describe(rec)
        key = json.dumps(
            [la.kernel, la.signature, {k: str(v) for k, v in la.constexprs.items()}, la.options],
            sort_keys=True,
        )
        unique.setdefault(key, la)
    return list(unique.values())


def compile_kernels(arch: int, launches: list[KernelLaunch] | None = None) -> list[CompiledKernel]:
    """Compile each launch (default: :func:`kernel_launches`) for ``sm_<arch>``.

    Triton lowers to PTX and its bundled ptxas builds the cubin; no GPU or driver is
    involved. A launch that fails to compile comes back with ``error`` set.
    """
    # triton.compile(ASTSource, target=GPUTarget) is what a launch calls once the
    # driver has named the target; given the target here, it needs no GPU.
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    out = []
    for la in kernel_launches() if launches is None else launches:
        log = io.StringIO()
        try:
            src = ASTSource(la.fn, la.signature, constexprs=la.constexprs)
            # Triton runs ptxas -v for the cubin; its log, printed on request, carries the
            # register and spill report (no second ptxas run). A cached kernel prints none.
            with triton.knobs.nvidia.scope(), contextlib.redirect_stdout(log):
                triton.knobs.nvidia.dump_ptxas_log = True
                kernel = triton.compile(src, target=target, options=la.options)
        except Exception as exc:  # reported per launch; the caller decides
            out.append(CompiledKernel(la, arch, error=f"{type(exc).__name__}: {str(exc)[:300]}"))
            continue
        ptx = kernel.asm["ptx"]
        shared = int(kernel.metadata.shared)
        out.append(CompiledKernel(la, arch, ptx, shared, ptxas_log=log.getvalue() or None))
    return out
