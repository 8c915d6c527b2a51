"""A short tour of the ops and modules: ``python -m solid_ext.demo``."""

from __future__ import annotations

import time

import torch

import solid_ext
from solid_ext import DynamicLinear, SemanticCodebook, ops, reference


def _time(fn, reps: int = 10) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    torch.manual_seed(0)
    print(
        f"solid_ext {solid_ext.__version__}: backends available here: "
        f"{solid_ext.available_backends()}"
    )
    if solid_ext.cpu_isa() is not None:
        print(
            f"CPU kernels: {solid_ext.cpu_isa()} (this CPU runs: {', '.join(solid_ext.cpu_isas())};"
            " choose with SOLID_EXT_CPU_ISA)"
        )

    b, n_in, n_out, n_cond = 1024, 32, 64, 32
    layer = DynamicLinear(n_in, n_out, cond_features=n_cond, branch_cond_features=n_cond)
    codebook = SemanticCodebook(256, n_out, lam=0.1)
    opt = torch.optim.Adam([*layer.parameters(), *codebook.parameters()], 1e-3)
    x, cond, bcond = torch.randn(b, 10, n_in), torch.randn(b, n_cond), torch.randn(b, n_cond)
    target = torch.randn(b, 10, n_out)
    for step in range(3):
        h = layer(x, cond=cond, branch_cond=bcond)
        q, idx, vq_loss = codebook(h)
        loss = (q - target).square().mean() + vq_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step}: loss {loss.item():.4f}  codes used {idx.unique().numel()}/256")

    w = torch.randn(b, n_in, n_out, requires_grad=True)
    bw = (0.02 * torch.randn(b, n_in, n_out)).requires_grad_()
    xs = torch.randn(b, 10, n_in, requires_grad=True)

    def fwd_bwd(fn):
        return lambda: fn(xs, w, None, bw, None, 0.01).sum().backward()

    fused = _time(fwd_bwd(ops.dynamic_linear))
    eager = _time(fwd_bwd(reference.dynamic_linear_ref))
    print(
        f"dynamic_linear fwd+bwd B={b} L=10 {n_in}x{n_out}: fused [{solid_ext.cpu_isa()}] "
        f"{fused:.2f} ms, "
        f"eager {eager:.2f} ms ({eager / fused:.1f}x)"
    )
    z, c = torch.randn(10240, 32), torch.randn(1024, 32)
    fused = _time(lambda: ops.codebook_quantize(z, c))
    eager = _time(lambda: reference.codebook_quantize_ref(z, c))
    print(
        f"codebook_quantize M=10240 K=1024 D=32: fused [{solid_ext.cpu_isa()}] {fused:.2f} ms, "
        f"eager {eager:.2f} ms ({eager / fused:.1f}x)"
    )
    print("Full benchmarks: `make bench` (see BENCHMARKS.md).")


if __name__ == "__main__":
    main()
