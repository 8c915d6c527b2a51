"""Regression guard: at the paper's sizes, every CPU kernel variant this machine runs
must beat the eager PyTorch reference measured in the same process (for the item
table's sparse update: torch.optim.SparseAdam; for top-k: torch's matmul + topk).

This is a collapse detector, not a benchmark (benchmarks/ measures): a variant whose
register tiles spill, or that is built for the wrong ISA, runs 10-50x slower and
fails here on any machine. Noise margin: fused and eager are timed interleaved (so a
busy neighbour slows both) and compared by their medians over 7 rounds; a case that
loses is measured again, up to ATTEMPTS times, and fails only if it loses every time.
On this 2-core VM either median moves by 10% or more between runs (a second process
on the other core moves it by far more), while the slimmest true margin (baseline
codebook_quantize, SSE2 kernels against eager's AVX2/AVX-512 BLAS) is about 1.1x at
2 threads; one attempt lost 0.97x in a CI run, and all three lost once in a session's
`make test`. So the 16-byte baseline kernels may be up to BASELINE_SLACK x eager's time
(still 10x short of a collapse); the vector variants must win outright (they are 2-4x).
Top-k's baseline kernel is bound by its own SSE2 FMA rate while eager's matmul uses the
machine's widest BLAS kernels: about 1.7x faster than eager on an AVX2-only EPYC, but
0.75x on an AVX-512 Xeon (CI, 2026-12-07), so its slack is TOPK_BASELINE_SLACK.
A collapse (a spilling tile, a wrong-ISA build: 10-50x) loses every attempt.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
import torch

import solid_ext
from solid_ext import ops
from solid_ext.reference import codebook_quantize_ref, dynamic_linear_ref
from solid_ext.testing import codebook_quantize_inputs, dynamic_linear_inputs

pytestmark = pytest.mark.skipif(
    "cpu" not in solid_ext.available_backends(),
    reason="compiled extension not built (the build itself fails `make test` first)",
)
ROUNDS = 7
ATTEMPTS = 3
TAU = 0.01
BASELINE_SLACK = 1.25  # allowed fused/eager time ratio for the baseline variant only
TOPK_BASELINE_SLACK = 2.0  # SSE2 kernel vs AVX-512 BLAS: 4x the FMA width, ~1.3x the time


def _interleaved_medians(fused: Callable, eager: Callable) -> tuple[float, float]:
    fused(), eager()  # warm up: first-touch page faults, lazy init
    tf, te = [], []
    for _ in range(ROUNDS):
        for fn, out in ((fused, tf), (eager, te)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(tf) * 1e3, statistics.median(te) * 1e3


def _dynamic_linear_case():
    b, l, n_in, n_out = 1024, 10, 32, 64
    leaves = dynamic_linear_inputs(
        b, l, n_in, n_out, dtype=torch.float32, tau=TAU, requires_grad=True
    )
    gy = torch.randn(b, l, n_out, generator=torch.Generator().manual_seed(1))

    def run(fn):
        return lambda: torch.autograd.grad(fn(*leaves, tau=TAU), leaves, gy)

    return run(ops.dynamic_linear), run(dynamic_linear_ref)


def _codebook_case(backward: bool):
    z, c = codebook_quantize_inputs(10240, 1024, 32, dtype=torch.float32, requires_grad=backward)
    gq = torch.randn(10240, 32, generator=torch.Generator().manual_seed(1))

    def run(fn):
        if not backward:
            return lambda: fn(z, c)

        def step():
            q, _, sq = fn(z, c)
            torch.autograd.grad((q * gq).sum() + sq.sum(), (z, c))

        return step

    return run(ops.codebook_quantize), run(codebook_quantize_ref)


def _sparse_update_case():
    """One lazy-Adam step of a 200k-row table after 15,360 lookups: the fused op against
    torch.optim.SparseAdam (the eager peer; the fused op is about 6x faster)."""
    g = torch.Generator().manual_seed(0)
    n, d, lookups = 200_000, 32, 15_360
    idx = torch.randint(1, n, (lookups,), generator=g)
    rows = torch.randn(lookups, d, generator=g)
    grad = torch.sparse_coo_tensor(idx[None], rows, (n, d), check_invariants=False)

    def run(cls):
        p = torch.nn.Parameter(torch.randn(n, d, generator=g))
        opt = cls([p], lr=1e-3)

        def step():
            p.grad = grad
            opt.step()

        return step

    return run(solid_ext.LazyAdam), run(torch.optim.SparseAdam)


def _topk_case():
    """Top-10 of 512 queries over 20k items: the fused op against torch's matmul + topk
    (about 4x; the baseline kernels about 1.7x)."""
    g = torch.Generator().manual_seed(0)
    q, t = torch.randn(512, 32, generator=g), torch.randn(20_000, 32, generator=g)
    return lambda: ops.topk_scores(q, t, 10), lambda: torch.topk(q @ t.T, 10, dim=1)


CASES = {
    "dynamic_linear fwd+bwd B=1024 L=10 32x64": _dynamic_linear_case,
    "codebook_quantize fwd M=10240 K=1024 D=32": lambda: _codebook_case(False),
    "codebook_quantize fwd+bwd M=10240 K=1024 D=32": lambda: _codebook_case(True),
    "sparse_row_update lazy_adam N=200k lookups=15360 D=32": _sparse_update_case,
    "topk_scores B=512 N=20k D=32 k=10": _topk_case,
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("isa", solid_ext.cpu_isas())
def test_fused_beats_eager(isa, case):
    fused, eager = CASES[case]()
    slack = 1.0
    if isa == "baseline":
        slack = TOPK_BASELINE_SLACK if case.startswith("topk_scores") else BASELINE_SLACK
    tries = []
    with solid_ext.use_backend("cpu"), solid_ext.use_cpu_isa(isa):
        for _ in range(ATTEMPTS):
            tf, te = _interleaved_medians(fused, eager)
            tries.append(f"fused {tf:.2f} ms vs eager {te:.2f} ms ({te / tf:.2f}x)")
            if tf < te * slack:
                break
    print(f"{case} [{isa}, {torch.get_num_threads()} threads]: " + "; ".join(tries))
    assert tf < te * slack, (
        f"{case} [{isa}]: fused slower than {slack} x eager in every attempt: {tries}"
    )
