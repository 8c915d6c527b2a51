"""Modules built on the fused ops: :class:`DynamicLinear` with its parameter generators
(:class:`FullRankGenerator`, DUET's and the default; :class:`LowRankGenerator`, APG's)
and :class:`SemanticCodebook`."""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _backend, ops
from ._validate import _desc, check_straight_through, check_tau
from .reference import clip_bound

__all__ = ["DynamicLinear", "SemanticCodebook"]
# ... and the generators DynamicLinear takes: the protocol, DUET's (the default), APG's.
__all__ += ["ParameterGenerator", "FullRankGenerator", "LowRankGenerator"]

# Where DynamicLinear (fused_generation="auto") computes a full-rank generator's layer
# with ops.generated_linear: where benchmarks/bench_generated_linear.py measured it
# faster (forward + backward) than generating the weights and applying them. On the
# cpu backend with the avx512 or avx2 kernels, for x with one row per sample and a
# batch of at least FUSED_MIN_BATCH: 0.62-0.80x the time at 1024-4096 samples (one
# thread); at 204 samples it is 1.0-1.35x, with ten rows per sample 1.1-1.45x, and the
# 16-byte baseline kernels are slower almost everywhere.
FUSED_BACKENDS: frozenset[str] = frozenset({"cpu"})
FUSED_CPU_ISAS: frozenset[str] = frozenset({"avx512", "avx2"})
FUSED_MIN_BATCH = 1024
FUSED_MAX_ROWS = 1


@torch.compiler.assume_constant_result
def _fused_by_default(device: torch.device, dtype: torch.dtype) -> bool:
    """The backend (and CPU kernel variant) that runs here is one FUSED_* names."""
    backend = _backend.resolve(device, dtype)
    return backend in FUSED_BACKENDS and (backend != "cpu" or _backend.cpu_isa() in FUSED_CPU_ISAS)


@runtime_checkable
class ParameterGenerator(Protocol):
    """What :class:`DynamicLinear` accepts as a generator (an ``nn.Module`` with these).

    ``generator(cond, static_weight=None, static_bias=None)`` maps a condition
    ``cond`` (B, cond_features) to per-sample parameters ``(weight (B, n_in, n_out),
    bias (B, n_out) or None)``. Given the layer's static ``static_weight`` (n_in, n_out)
    (``W^T``) and ``static_bias`` (n_out,), the result includes them: it is the trunk's
    whole per-sample weight and bias. Without them it is a delta (the branch).
    """

    n_in: int
    n_out: int
    cond_features: int

    def __call__(
        self, cond: Tensor, static_weight: Tensor | None = None, static_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]: ...


class FullRankGenerator(nn.Linear):
    """DUET's generator: one linear map from the condition to every parameter of the layer,
    ``Linear(cond_features, n_in*n_out [+ n_out])``, zero-initialised (the generated
    parameters start at zero). The default generator of :class:`DynamicLinear`.

    ``bias``: whether it generates a bias (n_out) too. As an ``nn.Linear`` its
    ``weight`` is (n_in*n_out [+ n_out], cond_features) and its ``bias`` that long.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        cond_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        n_gen = n_in * n_out + (n_out if bias else 0)
        super().__init__(cond_features, n_gen, device=device, dtype=dtype)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        self.n_in, self.n_out, self.cond_features = n_in, n_out, cond_features
        self.generates_bias = bias

    def forward(
        self, cond: Tensor, static_weight: Tensor | None = None, static_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        _check_cond(self, cond)
        n = self.n_in * self.n_out
        # Two matmuls over row blocks of the map rather than slicing one (B, n + n_out)
        # output: the weight comes out contiguous (a view, no copy), and the backward
        # has no (B, n + n_out) zero-fill and scatter from slicing.
        w = F.linear(cond, self.weight[:n], self._base(static_weight).reshape(-1))
        # The batch size given explicitly: view(-1, 0, n_out) is ambiguous (n_in=0).
        w = w.view(cond.shape[0], self.n_in, self.n_out)
        return w, self._bias(cond, static_bias)

    def _base(self, static_weight: Tensor | None) -> Tensor:
        """The map's bias for the weights (n_in, n_out), plus the static weight if given:
        folding it in costs n_in*n_out, not B*n_in*n_out (the weight comes out whole)."""
        base = self.bias[: self.n_in * self.n_out].view(self.n_in, self.n_out)
        return base if static_weight is None else base + static_weight

    def _bias(self, cond: Tensor, static_bias: Tensor | None) -> Tensor | None:
        """The bias ``forward`` returns: (B, n_out), or None."""
        if not self.generates_bias:
            return _static_bias(static_bias, cond)
        n = self.n_in * self.n_out
        hb_b = self.bias[n:] if static_bias is None else self.bias[n:] + static_bias
        return F.linear(cond, self.weight[n:], hb_b)

    def apply_to(
        self,
        x: Tensor,
        cond: Tensor,
        static_weight: Tensor | None = None,
        static_bias: Tensor | None = None,
        tau: float | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``(x @ w, b)`` for ``(w, b) = forward(cond, static_weight, static_bias)``, w
        clipped to ±tau if given, through ``ops.generated_linear``: w is never formed.
        x (B, N_in) or (B, L, N_in); b unclipped, as ``forward`` returns it."""
        _check_cond(self, cond)
        n = self.n_in * self.n_out
        y = ops.generated_linear(x, cond, self.weight[:n], self._base(static_weight), tau)
        return y, self._bias(cond, static_bias)

    def extra_repr(self) -> str:
        return (
            f"n_in={self.n_in}, n_out={self.n_out}, cond_features={self.cond_features}, "
            f"bias={self.generates_bias}"
        )


class LowRankGenerator(nn.Module):
    """APG's generator: a low-rank weight ``U (n_in×k) · S(c) (k×k) · V (k×n_out)``
    whose core S is generated from the condition, and a bias ``Linear(cond, n_out)``.

    S starts small and the bias map at zero: the generated parameters begin near zero
    (the static layer rules) while every factor receives a gradient on the first step.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        cond_features: int,
        rank: int = 8,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.n_in, self.n_out, self.cond_features, self.rank = n_in, n_out, cond_features, rank
        self.u = nn.Parameter(torch.randn(n_in, rank, **factory) / n_in**0.5)
        self.v = nn.Parameter(torch.randn(rank, n_out, **factory) / rank**0.5)
        self.s_head = nn.Linear(cond_features, rank * rank, **factory)
        self.b_head = nn.Linear(cond_features, n_out, **factory) if bias else None
        nn.init.normal_(self.s_head.weight, std=0.01)
        nn.init.zeros_(self.s_head.bias)
        if self.b_head is not None:
            nn.init.zeros_(self.b_head.weight)
            nn.init.zeros_(self.b_head.bias)

    def forward(
        self, cond: Tensor, static_weight: Tensor | None = None, static_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        _check_cond(self, cond)
        s = self.s_head(cond).view(-1, self.rank, self.rank)
        w = torch.matmul(torch.matmul(self.u, s), self.v)  # (B, n_in, n_out)
        if static_weight is not None:
            w = w + static_weight
        if self.b_head is None:
            return w, _static_bias(static_bias, cond)
        b = self.b_head(cond)
        return w, b if static_bias is None else b + static_bias

    def extra_repr(self) -> str:
        return (
            f"n_in={self.n_in}, n_out={self.n_out}, cond_features={self.cond_features}, "
            f"rank={self.rank}, bias={self.b_head is not None}"
        )


def _check_cond(gen: nn.Module, cond: object) -> None:
    """``cond`` must be (B, cond_features): a 3-D one would otherwise pass through the
    maps' matmuls and come out as weights of the wrong rank, or fail inside them."""
    if not isinstance(cond, Tensor):
        raise TypeError(f"cond must be a torch.Tensor, got {type(cond).__name__}")
    if cond.dim() != 2 or cond.shape[1] != gen.cond_features:
        raise ValueError(
            f"cond must be (B, cond_features={gen.cond_features}) for this "
            f"{type(gen).__name__}, got {_desc(cond)}"
        )


def _static_bias(static_bias: Tensor | None, cond: Tensor) -> Tensor | None:
    """The static bias per sample (B, n_out), for a generator that generates no bias."""
    return None if static_bias is None else static_bias.expand(cond.shape[0], -1)


class DynamicLinear(nn.Module):
    """A drop-in ``nn.Linear`` whose weights can be generated per sample.

    ``forward(x)`` alone is exactly ``nn.Linear``. Given per-sample deltas (or
    condition vectors from which the layer's own generators produce them) it
    computes, for each sample b,

        y_b = x_b @ (W^T + ΔW_b + clamp(ΔB_b, ±tau)) + (b + Δb_b + clamp(Δbb_b, ±tau))

    where W, b are the static parameters, ΔW/Δb the *trunk* (SOLID's semantic
    generator) and ΔB/Δbb the clipped *branch* (the item generator), Eq. 12.
    Generated weights are residual on the static ones, so a model converted with
    :meth:`from_linear` (whose full-rank generators start at zero) computes what it did
    before.

    Generators (:class:`ParameterGenerator`) live in ``weight_head`` (the trunk, fed
    ``cond``) and ``branch_head`` (the branch, fed ``branch_cond``).

    Args:
        in_features, out_features, bias, device, dtype: as ``nn.Linear``.
        tau: clip threshold of the branch, a finite float >= 0.
        cond_features: if set, the trunk generator is a :class:`FullRankGenerator`
            ``Linear(cond_features, N_in*N_out [+N_out])`` (DUET's).
        branch_cond_features: the same for the branch.
        generator, branch_generator: any other generator for the trunk / branch (e.g. a
            :class:`LowRankGenerator`, APG's), instead of ``cond_features`` /
            ``branch_cond_features``; see also :meth:`set_generator`.

    Shapes: alone, x (*, N_in) → (*, N_out) as ``nn.Linear``. With per-sample deltas
    or conditions, x (B, *, N_in) → (B, *, N_out): row b of every delta and condition
    serves all of x[b] (e.g. (B, L, N_in) for L positions of sample b);
    ``weight``/``branch_weight`` deltas (B, N_in, N_out) (W^T's layout);
    ``bias``/``branch_bias`` deltas (B, N_out); ``cond`` (B, cond_features);
    ``branch_cond`` (B, branch_cond_features); all of the layer's dtype and device.
    These are exact: a delta is never broadcast over the batch, and a wrong shape,
    dtype or device raises (ValueError, or TypeError for a dtype) naming the argument
    and what was seen. ``in_features=0`` works as for ``nn.Linear``: the output is the
    bias.
    """

    #: How a full-rank generator's condition becomes the output: ``"auto"`` (fused
    #: where it was measured faster: see :data:`FUSED_BACKENDS` and the limits beside
    #: it), ``"always"`` (the
    #: ``generated_linear`` op: the (B, N_in, N_out) weights are never formed) or
    #: ``"never"`` (generate the weights, then ``dynamic_linear``). Either way the same
    #: result; set per layer or on the class.
    fused_generation: str = "auto"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        tau: float = 0.01,
        cond_features: int | None = None,
        branch_cond_features: int | None = None,
        generator: nn.Module | None = None,
        branch_generator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        tau = check_tau(tau)
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.tau = in_features, out_features, tau
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()
        self.register_module("weight_head", None)
        self.register_module("branch_head", None)
        for branch, n_cond, gen in (
            (False, cond_features, generator),
            (True, branch_cond_features, branch_generator),
        ):
            if n_cond is not None and gen is not None:
                which = "branch_" if branch else ""
                raise ValueError(f"pass {which}cond_features or {which}generator, not both")
            if n_cond is not None:
                gen = FullRankGenerator(in_features, out_features, n_cond, bias, **factory)
            if gen is not None:
                self.set_generator(gen, branch=branch)

    def set_generator(self, generator: nn.Module | None, *, branch: bool = False) -> None:
        """Install ``generator`` (a :class:`ParameterGenerator` for this layer's
        N_in x N_out, or None to remove it) as the trunk's or, with ``branch``, the
        branch's generator."""
        name = "branch_head" if branch else "weight_head"
        if generator is not None:
            if not isinstance(generator, nn.Module) or not isinstance(
                generator, ParameterGenerator
            ):
                raise TypeError(
                    f"{name}: a generator is an nn.Module with n_in, n_out, cond_features "
                    f"(solid_ext.ParameterGenerator), got {type(generator).__name__}"
                )
            got, want = (generator.n_in, generator.n_out), (self.in_features, self.out_features)
            if got != want:
                raise ValueError(f"{name}: generator makes {got} weights, the layer has {want}")
        setattr(self, name, generator)

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Linear``."""
        if self.weight.numel():  # in_features or out_features 0: nothing to draw
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> DynamicLinear:
        """A DynamicLinear computing exactly what ``linear`` does until its generators
        train (the full-rank ones start at zero). ``kwargs``: the constructor's keyword
        arguments (``tau``, ``cond_features``, ``generator``, ...)."""
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=w.device,
            dtype=w.dtype,
            **kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def _head(self, branch: bool) -> nn.Module:
        gen, name = (self.branch_head, "branch_") if branch else (self.weight_head, "")
        if gen is None:
            raise ValueError(
                f"{name}cond was given but this DynamicLinear has no {name}cond generator; "
                f"construct it with {name}cond_features (or a {name}generator)"
            )
        return gen

    def _generate(self, cond: Tensor, branch: bool) -> tuple[Tensor, Tensor | None]:
        gen = self._head(branch)
        if branch:  # a delta, clipped by the op
            w, b = gen(cond)
        else:  # the trunk comes out whole (static + generated): no (B, N_in, N_out) add
            w, b = gen(cond, self.weight.t(), self.bias)
        # A custom generator's mistake would otherwise surface in the op as a bad
        # "weight", an argument the caller never passed.
        n, n_in, n_out = cond.shape[0], self.in_features, self.out_features
        for what, t, want in (("weight", w, (n, n_in, n_out)), ("bias", b, (n, n_out))):
            if t is None and what == "bias":  # none generated and no static one to pass on
                continue
            if not isinstance(t, Tensor) or tuple(t.shape) != want:
                got = _desc(t) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"{'branch_head' if branch else 'weight_head'} ({type(gen).__name__}) "
                    f"returned a {what} of {got} for cond of shape {tuple(cond.shape)}; "
                    f"a generator returns {what} {want}"
                )
        return w, b

    def forward(
        self,
        x: Tensor,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        branch_weight: Tensor | None = None,
        branch_bias: Tensor | None = None,
        *,
        cond: Tensor | None = None,
        branch_cond: Tensor | None = None,
    ) -> Tensor:
        """x (B, *, N_in) → (B, *, N_out) given deltas or conditions, else x (*, N_in)
        → (*, N_out); see the class docstring for shapes and semantics."""
        if cond is not None and (weight is not None or bias is not None):
            raise ValueError("pass either cond or explicit weight/bias deltas, not both")
        if branch_cond is not None and (branch_weight is not None or branch_bias is not None):
            raise ValueError("pass either branch_cond or explicit branch deltas, not both")
        deltas = (weight, bias, branch_weight, branch_bias, cond, branch_cond)
        if any(t is not None for t in deltas):
            self._check_per_sample(x, weight, bias, branch_weight, branch_bias, cond, branch_cond)
        if (cond is not None or branch_cond is not None) and self._fuses(x, cond, branch_cond):
            return self._generated_forward(x, cond, branch_cond)
        trunk_is_total = False
        if cond is not None:
            weight, bias = self._generate(cond, branch=False)
            trunk_is_total = True
        if branch_cond is not None:
            branch_weight, branch_bias = self._generate(branch_cond, branch=True)
        if weight is None and branch_weight is None:
            y = F.linear(x, self.weight, self.bias)
            extra = bias
            if branch_bias is not None:
                bound = clip_bound(self.tau, branch_bias.dtype)  # no clamp overflow in fp16
                cb = branch_bias.clamp(-bound, bound)
                extra = cb if extra is None else extra + cb
            if extra is not None:  # (B, N_out) over x's middle dims
                y = y + extra.reshape(extra.shape[0], *(1,) * (x.dim() - 2), extra.shape[1])
            return y
        if not trunk_is_total:
            static_w = self.weight.t()
            weight = static_w.expand(x.shape[0], -1, -1) if weight is None else weight + static_w
            if self.bias is not None:
                bias = self.bias.expand(x.shape[0], -1) if bias is None else bias + self.bias
        if x.dim() <= 3:
            return ops.dynamic_linear(x, weight, bias, branch_weight, branch_bias, self.tau)
        # The op takes (B, L, N_in): the middle dims become L. flatten, not
        # reshape(B, -1, N_in), which is ambiguous when a dim is 0.
        y = ops.dynamic_linear(x.flatten(1, -2), weight, bias, branch_weight, branch_bias, self.tau)
        return y.view(*x.shape[:-1], self.out_features)

    def _fuses(self, x: Tensor, cond: Tensor | None, branch_cond: Tensor | None) -> bool:
        """Whether the conditions go through ``ops.generated_linear`` (see
        ``fused_generation``): only full-rank generators have its form."""
        mode = self.fused_generation
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"fused_generation must be 'auto', 'always' or 'never', got {mode!r}")
        if mode == "never":
            return False
        for c, gen in ((cond, self.weight_head), (branch_cond, self.branch_head)):
            if c is not None and type(gen) is not FullRankGenerator:
                return False
        if mode == "always":
            return True
        rows, batch = math.prod(x.shape[1:-1]), x.shape[0]
        if not isinstance(rows, int) or not isinstance(batch, int):
            return False  # a dynamic dim (export): no guard on its size
        if rows > FUSED_MAX_ROWS or batch < FUSED_MIN_BATCH:
            return False
        return _fused_by_default(x.device, x.dtype)

    def _generated_forward(
        self, x: Tensor, cond: Tensor | None, branch_cond: Tensor | None
    ) -> Tensor:
        """forward from conditions with ``ops.generated_linear``: the per-sample weights
        are never formed. The same parameters and result as generating them."""
        xs = x.flatten(1, -2) if x.dim() > 3 else x
        if cond is not None:
            y, bias = self.weight_head.apply_to(xs, cond, self.weight.t(), self.bias)
        else:
            y, bias = F.linear(xs, self.weight), self.bias
        if branch_cond is not None:
            yb, bb = self.branch_head.apply_to(xs, branch_cond, tau=self.tau)
            y = y + yb
            if bb is not None:
                bound = clip_bound(self.tau, x.dtype)  # no clamp overflow in fp16
                bb = bb.clamp(-bound, bound)
                bias = bb if bias is None else bias + bb
        if bias is not None:  # (N_out) static, or (B, N_out) over y's middle dims
            y = y + (
                bias if bias.dim() == 1 else bias.view(bias.shape[0], *(1,) * (y.dim() - 2), -1)
            )
        return y.view(*x.shape[:-1], self.out_features)

    def _check_per_sample(
        self,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        branch_weight: Tensor | None,
        branch_bias: Tensor | None,
        cond: Tensor | None,
        branch_cond: Tensor | None,
    ) -> None:
        """Deltas and conditions are per sample, exactly (B, ...): a (N_out,) bias delta
        or a (1, N_in, N_out) weight delta would otherwise broadcast over the batch, and
        other mistakes fail later inside a matmul or the op, naming tensors the caller
        never passed (the generated weights, or the sums with the static ones)."""
        n_in, n_out = self.in_features, self.out_features
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[-1] != n_in:
            raise ValueError(
                f"x must be (B, *, in_features={n_in}), B one row per sample of the "
                f"per-sample deltas or conditions, got {_desc(x)}"
            )
        self._check_like_layer("x", x)
        b = x.shape[0]
        for name, t in (
            ("weight", weight),
            ("bias", bias),
            ("branch_weight", branch_weight),
            ("branch_bias", branch_bias),
            ("cond", cond),
            ("branch_cond", branch_cond),
        ):
            if t is None:
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
            if name.endswith("cond"):  # (B, the width its generator takes)
                width = self._head(branch=name == "branch_cond").cond_features
                what, layout, want = "condition", f"(B, {name}_features={width})", (b, width)
            elif name.endswith("weight"):
                what, layout, want = "delta", "(B, N_in, N_out)", (b, n_in, n_out)
            else:
                what, layout, want = "delta", "(B, N_out)", (b, n_out)
            self._check_like_layer(name, t)
            got = tuple(t.shape)
            if got == want:
                continue
            if len(got) == len(want) and got[1:] == want[1:]:
                raise ValueError(
                    f"batch mismatch: {name} has B={got[0]} ({_desc(t)}) but x has B={b} "
                    f"({_desc(x)}); a {what} has one row per sample of x, it is not broadcast"
                )
            hint = ""
            if len(want) == 3 and got == (b, n_out, n_in):
                hint = " (that is (B, N_out, N_in): a weight delta is laid out as W^T)"
            raise ValueError(
                f"{name} must be {layout} = {want} for x of shape {tuple(x.shape)}, got "
                f"{_desc(t)}{hint}; a {what} is not broadcast"
            )

    def _check_like_layer(self, name: str, t: Tensor) -> None:
        """The ops compute in one dtype on one device: the layer's."""
        w = self.weight
        if t.dtype != w.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but the layer's parameters are {w.dtype}; "
                f"x, deltas and conditions must have the layer's dtype"
            )
        if t.device != w.device:
            raise ValueError(
                f"{name} is on {t.device} but the layer's parameters are on {w.device}; "
                f"x, deltas and conditions must be on the layer's device"
            )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, tau={self.tau}, "
            f"cond={self.weight_head is not None}, branch={self.branch_head is not None}"
        )


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.scale, None


class SemanticCodebook(nn.Module):
    """A learnable codebook with nearest-code quantisation (SOLID's SCL, Eq. 13).

    ``forward(z)`` returns ``(quantized, indices, loss)``: quantized (..., D) with a
    straight-through gradient to ``z``; indices (...) int64; and the scalar

        loss = lam * MSE(z, codebook[indices])

    whose gradient reaches both ``z`` and the codebook, as in the paper's Eq. 13.
    VQ-VAE's split is available through two gradient weights: the codebook side
    receives ``codebook_weight`` times its gradient and ``z`` receives
    ``commitment_weight`` times its own (both 1 by default; the value is unchanged).

    Args:
        num_codes: K. dim: D.
        init: ``"random"`` (N(0, init_std^2)), or a (K, D) tensor to copy (the
            metacode: SOLID initialises from the semantic encoder's category table).
            Use :meth:`init_kmeans` for k-means of sample data.
        lam: weight of the quantisation loss (λ = 0.1 in the paper).
        straight_through_codebook: a bool; also pass quantized's gradient to the
            chosen rows.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        init: str | Tensor = "random",
        init_std: float = 1.0,
        lam: float = 0.1,
        codebook_weight: float = 1.0,
        commitment_weight: float = 1.0,
        straight_through_codebook: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_codes <= 0 or dim <= 0:
            raise ValueError(f"num_codes and dim must be positive, got {num_codes}, {dim}")
        self.num_codes, self.dim = num_codes, dim
        self.lam, self.codebook_weight, self.commitment_weight = (
            lam,
            codebook_weight,
            commitment_weight,
        )
        self.straight_through_codebook = check_straight_through(straight_through_codebook)
        self.codebook = nn.Parameter(torch.empty(num_codes, dim, device=device, dtype=dtype))
        if isinstance(init, Tensor):
            self.load_metacode(init)
        elif init == "random":
            with torch.no_grad():
                self.codebook.normal_(0.0, init_std)
        else:
            raise ValueError(f"init must be 'random' or a (K, D) tensor, got {init!r}")

    @classmethod
    def from_metacode(cls, weight: Tensor, **kwargs) -> SemanticCodebook:
        """A codebook initialised from a (K, D) table, e.g. a category embedding."""
        if weight.dim() != 2:
            raise ValueError(f"metacode must be (K, D), got shape {tuple(weight.shape)}")
        kwargs.setdefault("device", weight.device)
        kwargs.setdefault("dtype", weight.dtype)
        return cls(weight.shape[0], weight.shape[1], init=weight, **kwargs)

    @torch.no_grad()
    def load_metacode(self, weight: Tensor) -> None:
        """Copy a (K, D) table into the codebook."""
        if tuple(weight.shape) != (self.num_codes, self.dim):
            raise ValueError(
                f"metacode must be (K, D) = {(self.num_codes, self.dim)}, "
                f"got shape {tuple(weight.shape)}"
            )
        self.codebook.copy_(weight)

    @torch.no_grad()
    def init_kmeans(self, data: Tensor, iters: int = 20, seed: int = 0) -> Tensor:
        """Set the codebook to k-means centroids of ``data`` (N, D); return assignments.

        ``data`` may have more leading dims, (..., D); its last dim must be the
        codebook's D. Lloyd's algorithm with the fused search for assignment; an empty
        cluster is re-seeded with the point currently farthest from its centroid.
        """
        if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[-1] != self.dim:
            got = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            # (N, 2D) data has as many values as (2N, D): never reshape it into rows of D.
            raise ValueError(
                f"init_kmeans: data must be (N, D) with D={self.dim} (the codebook's dim), "
                f"got shape {got}"
            )
        data = data.reshape(-1, self.dim).to(self.codebook)
        n = data.shape[0]
        if n < self.num_codes:
            raise ValueError(f"k-means needs at least K={self.num_codes} points, got {n}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        start = torch.randperm(n, generator=gen)[: self.num_codes].to(data.device)
        cent = data[start].clone()
        idx = torch.zeros(n, dtype=torch.long, device=data.device)
        for _ in range(iters):
            _, idx, sq = ops.codebook_quantize(data, cent)
            counts = torch.bincount(idx, minlength=self.num_codes)
            sums = torch.zeros_like(cent).index_add_(0, idx, data)
            filled = counts > 0
            cent[filled] = sums[filled] / counts[filled].unsqueeze(1).to(data.dtype)
            empty = (~filled).nonzero().flatten()
            if empty.numel():
                far = sq.topk(empty.numel()).indices
                cent[empty] = data[far]
        self.codebook.copy_(cent)
        return ops.codebook_quantize(data, cent)[1]

    def forward(self, z: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """z (..., D), mask (...) bool or None → (quantized (..., D), indices (...), loss).

        With ``mask`` the loss averages only the positions where it is True (padding
        left out) while every position is quantized: no data-dependent shapes, so the
        module traces and exports as it runs.
        """
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise TypeError(f"mask must be a bool tensor, got {got}")
            if mask.shape != z.shape[:-1]:
                raise ValueError(
                    f"mask must have z's shape without its last dim, {tuple(z.shape[:-1])}, "
                    f"got {tuple(mask.shape)}"
                )
        q, idx, sq = ops.codebook_quantize(z, self.codebook, self.straight_through_codebook)
        if mask is None and sq.numel() == 0:
            return q, idx, z.new_zeros(())
        cw, kw = self.codebook_weight, self.commitment_weight
        if cw == 1.0 and kw == 1.0:
            per = sq / self.dim
        else:
            chosen = self.codebook.index_select(0, idx.reshape(-1)).reshape(z.shape)
            diff = _ScaleGrad.apply(z, kw) - _ScaleGrad.apply(chosen, cw)
            if mask is not None:  # before squaring: no 0 * inf in the backward
                diff = torch.where(mask.unsqueeze(-1), diff, diff.new_zeros(()))
            per = (diff * diff).mean(-1)
        if mask is None:
            mse = per.mean()
        else:
            # where, not a product: a non-finite masked-out position must not leak in.
            total = torch.where(mask, per, per.new_zeros(())).sum()
            mse = total / mask.sum().clamp_min(1).to(per.dtype)
        loss = self.lam * mse
        return q, idx, loss

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, lam={self.lam}"
