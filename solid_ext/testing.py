"""Random inputs for the fused ops: one factory per op.

Shared by the test suite, the benchmarks, ``python -m solid_ext.selfcheck`` and the
Triton compile check (:func:`solid_ext.triton_kernels.kernel_launches`), so a problem
"B=1024 L=10 32x64" means the same tensors everywhere.

Values are drawn in float64 on the CPU from a seeded generator, scaled, then cast to
``dtype`` and moved to ``device``: one seed gives the same values (up to rounding) in
every dtype and on every device, so a float32 or bf16 result can be compared with a
float64 truth computed from the same draw. ``seed`` may also be a CPU
``torch.Generator``, which the factory draws from (and advances), for a caller that
keeps drawing from the same stream afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "codebook_quantize_inputs",
    "dynamic_linear_inputs",
    "generated_linear_inputs",
    "non_contiguous",
]

Seed = int | torch.Generator
Device = torch.device | str


def _generator(seed: Seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device="cpu").manual_seed(seed)


def non_contiguous(t: Tensor) -> Tensor:
    """The same values in a dense layout with the first and last dims swapped in memory:
    not contiguous (when both are larger than 1), and kept so by ``clone()``."""
    if t.dim() < 2:
        return t
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def _finish(tensors: list, contiguous: bool, requires_grad: bool) -> list:
    """Non-contiguous layouts and leaves that require grad, on request (None stays None)."""
    out = []
    for t in tensors:
        if t is not None and not contiguous:
            t = non_contiguous(t)
        if t is not None and requires_grad:
            t = t.requires_grad_(True)
        out.append(t)
    return out


def dynamic_linear_inputs(
    batch: int,
    seq_len: int | None,
    in_features: int,
    out_features: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: Device = "cpu",
    seed: Seed = 0,
    bias: bool = True,
    branch: bool = True,
    tau: float = 0.01,
    weight_scale: float = 1.0,
    branch_scale: float | None = None,
    pin_tau: bool = False,
    contiguous: bool = True,
    requires_grad: bool = False,
) -> list[Tensor | None]:
    """``[x, weight, bias, branch_weight, branch_bias]`` for ``ops.dynamic_linear``.

    Shapes: x (B, L, N_in), or (B, N_in) with ``seq_len=None``; weight and
    branch_weight (B, N_in, N_out); bias and branch_bias (B, N_out). ``bias=False`` /
    ``branch=False`` give None in those places (and draw nothing for them).

    Draw order x, weight, bias, branch_weight, branch_bias from standard normals:
    x unscaled, weight times ``weight_scale``, bias unscaled, the branch times
    ``branch_scale`` (default ``2 * tau``, so the branch straddles ±tau and the clip
    is exercised). ``pin_tau`` then sets, in ``dtype``, every 7th branch_weight entry
    to +tau, every 11th from the 4th to -tau and every 5th branch_bias entry to +tau,
    so the inclusive clip boundary is hit exactly. ``contiguous=False`` gives the
    same values in non-contiguous layouts (:func:`non_contiguous`); ``requires_grad``
    makes every tensor a leaf that requires grad.
    """
    g = _generator(seed)
    b, n_in, n_out = batch, in_features, out_features
    branch_scale = 2 * tau if branch_scale is None else branch_scale

    def draw(*shape: int, scale: float = 1.0) -> Tensor:
        t = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
        return t.to(device=device, dtype=dtype)

    x = draw(b, n_in) if seq_len is None else draw(b, seq_len, n_in)
    weight = draw(b, n_in, n_out, scale=weight_scale)
    bias_ = draw(b, n_out) if bias else None
    branch_weight = draw(b, n_in, n_out, scale=branch_scale) if branch else None
    branch_bias = draw(b, n_out, scale=branch_scale) if branch else None
    if branch and pin_tau:
        branch_weight.view(-1)[::7] = tau
        branch_weight.view(-1)[3::11] = -tau
        branch_bias.view(-1)[::5] = tau
    return _finish([x, weight, bias_, branch_weight, branch_bias], contiguous, requires_grad)


def generated_linear_inputs(
    batch: int,
    seq_len: int | None,
    in_features: int,
    out_features: int,
    cond_features: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: Device = "cpu",
    seed: Seed = 0,
    tau: float = 0.01,
    contiguous: bool = True,
    requires_grad: bool = False,
) -> list[Tensor]:
    """``[x, cond, gen_weight, base]`` for ``ops.generated_linear``.

    Shapes: x (B, L, N_in), or (B, N_in) with ``seq_len=None``; cond (B, C);
    gen_weight (N_in*N_out, C); base (N_in, N_out). Drawn in that order from standard
    normals: x and cond unscaled, gen_weight times ``tau / sqrt(C)``, base times
    ``tau``: each generated weight is then about N(0, 2 tau^2), so about half of
    them fall inside ±tau and the clip is exercised. ``contiguous`` and
    ``requires_grad`` as for :func:`dynamic_linear_inputs`.
    """
    g = _generator(seed)
    b, n_in, n_out, c = batch, in_features, out_features, cond_features

    def draw(*shape: int, scale: float = 1.0) -> Tensor:
        t = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
        return t.to(device=device, dtype=dtype)

    x = draw(b, n_in) if seq_len is None else draw(b, seq_len, n_in)
    cond = draw(b, c)
    gen_weight = draw(n_in * n_out, c, scale=tau / max(c, 1) ** 0.5)
    base = draw(n_in, n_out, scale=tau)
    return _finish([x, cond, gen_weight, base], contiguous, requires_grad)


def codebook_quantize_inputs(
    lead: int | Sequence[int],
    num_codes: int,
    dim: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: Device = "cpu",
    seed: Seed = 0,
    scale: float = 1.0,
    contiguous: bool = True,
    requires_grad: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(z, codebook)`` for ``ops.codebook_quantize``.

    z is (*lead, D) (``lead`` an int M or a tuple of leading dims), codebook (K, D):
    standard normals times ``scale``, z drawn first. ``contiguous=False`` gives the
    same values in non-contiguous layouts (:func:`non_contiguous`); ``requires_grad``
    makes both leaves that require grad.
    """
    g = _generator(seed)
    lead = (lead,) if isinstance(lead, int) else tuple(lead)
    z, c = (
        (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)
        for shape in ((*lead, dim), (num_codes, dim))
    )
    z, c = _finish([z, c], contiguous, requires_grad)
    return z, c
