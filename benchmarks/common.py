"""Shared pieces of the benchmark suite: sizes, machine ceilings, roofline floors.

Every figure is reported as a ratio to a baseline measured in the same run, with
the roofline floor (from ceilings measured at the start of that run) beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

# smoke: tiny sizes, one call each (run by the test command so the suite never rots);
# quick: the paper's sizes (under 5 minutes); full: paper sizes plus the size sweep.
MODE = os.environ.get("SOLID_BENCH_MODE", "smoke")
# Threads for the op cases (torch.set_num_threads in conftest); 0: PyTorch's default.
THREADS = int(os.environ.get("SOLID_BENCH_THREADS", "0") or 0)


@dataclass(frozen=True)
class Ceilings:
    """Machine ceilings measured at the start of a run."""

    sgemm_gflops: float  # float32 GEMM rate, GFLOP/s
    dram_gbs: float  # read+write bandwidth of a copy much larger than the caches
    cache_gbs: float  # read+write bandwidth of a copy that fits in the last-level cache
    threads: int
    # float32 multiply-add peak of each CPU kernel variant's own FMA loop at `threads`
    # threads, GFLOP/s (a compute floor each variant can actually reach)
    fma_gflops: dict[str, float] = field(default_factory=dict)

    def fma_floor_ms(self, isa: str, flops: float) -> float | None:
        """Compute floor of ``flops`` at variant ``isa``'s measured FMA peak, in ms."""
        peak = self.fma_gflops.get(isa)
        return flops / (peak * 1e9) * 1e3 if peak else None

    def floor_ms(self, flops: float, bytes_: float, cache: bool = False) -> float:
        """Roofline floor: the slower of compute and memory, in milliseconds."""
        bw = self.cache_gbs if cache else self.dram_gbs
        return max(flops / (self.sgemm_gflops * 1e9), bytes_ / (bw * 1e9)) * 1e3


def _times(fn: Callable[[], object], reps: int, warmup: int) -> list[float]:
    """Wall times of ``reps`` calls of ``fn`` after ``warmup`` untimed ones, in s."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _best_rate(fn: Callable[[], None], work: float, reps: int) -> float:
    return work / min(_times(fn, reps, warmup=1))


def fma_peaks(reps: int = 5) -> dict[str, float]:
    """GFLOP/s of each CPU kernel variant's FMA loop on torch.get_num_threads() threads."""
    import solid_ext

    ext = solid_ext._backend.compiled_extension()
    if ext is None:
        return {}
    threads = torch.get_num_threads()
    out = {}
    for isa in solid_ext.cpu_isas():
        iters = 2_000_000
        ext.fma_flops(isa, iters // 10, threads)  # warm up (clock ramp, thread pool)
        best = 0.0
        for _ in range(reps):
            t = time.perf_counter()
            flops = ext.fma_flops(isa, iters, threads)
            best = max(best, flops / (time.perf_counter() - t))
        out[isa] = best / 1e9
    return out


def measure_ceilings(quick: bool = False) -> Ceilings:
    """sgemm rate, copy bandwidths and the variants' FMA peaks, best of several
    repetitions, at torch.get_num_threads() threads."""
    reps = 5 if quick else 15
    n = 2048
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    sgemm = _best_rate(lambda: torch.mm(a, b, out=c), 2 * n**3, reps) / 1e9
    big = torch.empty(64 * 2**20 // 4).normal_()  # 256 MiB: far beyond L3
    big_out = torch.empty_like(big)
    dram = _best_rate(lambda: big_out.copy_(big), 2 * big.numel() * 4, reps) / 1e9
    small = torch.empty(4 * 2**20 // 4).normal_()  # 4 MiB in, 4 MiB out: L3-resident
    small_out = torch.empty_like(small)
    cache = _best_rate(lambda: small_out.copy_(small), 2 * small.numel() * 4, reps * 4) / 1e9
    return Ceilings(sgemm, dram, cache, torch.get_num_threads(), fma_peaks(3 if quick else 5))


def load_or_measure_ceilings(path: str | None) -> Ceilings:
    if path and os.path.exists(path):
        with open(path) as f:
            return Ceilings(**json.load(f))
    ceil = measure_ceilings(quick=MODE == "smoke")
    if path:
        with open(path, "w") as f:
            json.dump(asdict(ceil), f, indent=1)
    return ceil


def median_ms(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in ms (used outside pytest-benchmark)."""
    return statistics.median(_times(fn, reps, warmup)) * 1e3


def pedantic(benchmark, target: Callable, setup: Callable | None = None) -> None:
    """Time ``target`` with pytest-benchmark: one call in smoke mode; otherwise 5-15
    rounds after warmup, fewer for slow cases (about 2 s of timed work per case), so the
    quick suite stays within minutes."""
    if MODE == "smoke":
        benchmark.pedantic(target, setup=setup, rounds=1, iterations=1, warmup_rounds=0)
        return
    once = float("inf")
    for _ in range(2):  # the first call may compile or fault pages in: keep the faster
        args = setup() if setup else ((), {})
        t = time.perf_counter()
        target(*args[0], **args[1])
        once = min(once, time.perf_counter() - t)
    rounds = int(min(15, max(5, 2.0 / max(once, 1e-9))))
    benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)


def peak_mib(fn: Callable[[], object]) -> float | None:
    """Peak MiB of tensor storage allocated while ``fn`` runs (its inputs excluded).

    Counted by PyTorch's ``MemTracker`` dispatch mode: every storage an ATen op (or a
    custom op) returns, live or saved for backward, until it is freed. Scratch memory
    a kernel allocates and frees inside one op is not seen, for any provider alike.
    None where it cannot be measured (a peer outside PyTorch, or a tracker failure).
    """
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:  # torch built without distributed
        return None
    tracker = MemTracker()
    try:
        with tracker:
            fn()
        snap = tracker.get_tracker_snapshot("peak")
    except Exception:  # a measurement aid: never fail the benchmark over it
        return None
    return max((d["Total"] for d in snap.values()), default=0.0) / 2**20


def write_report(out, part: str, rows: list, md: str) -> None:
    """Print a part's markdown and, with ``out`` (a path prefix), write OUT-<part>.json
    (its rows) and OUT-<part>.md beside it."""
    from pathlib import Path

    print(md)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}-{part}.json").write_text(json.dumps(rows, indent=1) + "\n")
        Path(f"{out}-{part}.md").write_text(md)
