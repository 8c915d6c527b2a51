"""Modules built on the fused ops: :class:`DynamicLinear` and :class:`SemanticCodebook`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from ._validate import check_straight_through, check_tau
from .reference import clip_bound

__all__ = ["DynamicLinear", "SemanticCodebook"]


class DynamicLinear(nn.Module):
    """A drop-in ``nn.Linear`` whose weights can be generated per sample.

    ``forward(x)`` alone is exactly ``nn.Linear``. Given per-sample deltas (or
    condition vectors from which the layer's own generator heads produce them) it
    computes, for each sample b,

        y_b = x_b @ (W^T + ΔW_b + clamp(ΔB_b, ±tau)) + (b + Δb_b + clamp(Δbb_b, ±tau))

    where W, b are the static parameters, ΔW/Δb the *trunk* (SOLID's semantic
    generator) and ΔB/Δbb the clipped *branch* (the item generator), Eq. 12.
    Generated weights are residual on the static ones, so a model converted with
    :meth:`from_linear` (whose heads start at zero) computes what it did before.

    Args:
        in_features, out_features, bias, device, dtype: as ``nn.Linear``.
        tau: clip threshold of the branch, a finite float >= 0.
        cond_features: if set, a trunk head ``Linear(cond_features, N_in*N_out [+N_out])``
            turns a condition vector (B, cond_features) into trunk deltas.
        branch_cond_features: the same for the branch.

    Shapes: x (B, N_in) or (B, L, N_in) → (B, N_out) or (B, L, N_out);
    ``weight``/``branch_weight`` deltas (B, N_in, N_out); ``bias``/``branch_bias``
    deltas (B, N_out); ``cond`` (B, cond_features); ``branch_cond``
    (B, branch_cond_features). These shapes are exact: a delta is never broadcast over
    the batch (a wrong shape raises ValueError naming it). ``in_features=0`` works as
    for ``nn.Linear``: the output is the bias.
    """

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
    ) -> None:
        super().__init__()
        tau = check_tau(tau)
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.tau = in_features, out_features, tau
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()
        n_gen = in_features * out_features + (out_features if bias else 0)
        self.weight_head = self._head(cond_features, n_gen, factory)
        self.branch_head = self._head(branch_cond_features, n_gen, factory)

    @staticmethod
    def _head(n_cond: int | None, n_gen: int, factory: dict) -> nn.Linear | None:
        if n_cond is None:
            return None
        head = nn.Linear(n_cond, n_gen, **factory)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return head

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Linear``."""
        if self.weight.numel():  # in_features or out_features 0: nothing to draw
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        tau: float = 0.01,
        cond_features: int | None = None,
        branch_cond_features: int | None = None,
    ) -> DynamicLinear:
        """A DynamicLinear computing exactly what ``linear`` does until its heads train."""
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=w.device,
            dtype=w.dtype,
            tau=tau,
            cond_features=cond_features,
            branch_cond_features=branch_cond_features,
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def _from_head(
        self, head: nn.Linear | None, cond: Tensor, name: str, fold_static: bool
    ) -> tuple[Tensor, Tensor | None]:
        if head is None:
            raise ValueError(
                f"{name} was given but this DynamicLinear has no {name} head; "
                f"construct it with {'cond' if name == 'cond' else 'branch_cond'}_features"
            )
        hb = head.bias
        if fold_static:
            # Adding the static weight to the head's bias costs N_in*N_out, not
            # B*N_in*N_out: the trunk comes out of one addmm already residual.
            static = [self.weight.t().reshape(-1)]
            if self.bias is not None:
                static.append(self.bias)
            hb = hb + torch.cat(static)
        # Two matmuls over row blocks of the head rather than slicing one (B, n + N_out)
        # output: the weight comes out contiguous (a view, no copy), and the backward
        # has no (B, n + N_out) zero-fill and scatter from slicing.
        n = self.in_features * self.out_features
        # The batch size given explicitly: view(-1, 0, N_out) is ambiguous (in_features=0).
        w = F.linear(cond, head.weight[:n], hb[:n])
        w = w.view(cond.shape[0], self.in_features, self.out_features)
        b = F.linear(cond, head.weight[n:], hb[n:]) if self.bias is not None else None
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
        """Apply the layer; see the class docstring for shapes and semantics."""
        if cond is not None and (weight is not None or bias is not None):
            raise ValueError("pass either cond or explicit weight/bias deltas, not both")
        if branch_cond is not None and (branch_weight is not None or branch_bias is not None):
            raise ValueError("pass either branch_cond or explicit branch deltas, not both")
        deltas = (weight, bias, branch_weight, branch_bias, cond, branch_cond)
        if any(t is not None for t in deltas):
            self._check_per_sample(x, weight, bias, branch_weight, branch_bias, cond, branch_cond)
        trunk_is_total = False
        if cond is not None:
            weight, bias = self._from_head(self.weight_head, cond, "cond", fold_static=True)
            trunk_is_total = True
        if branch_cond is not None:
            branch_weight, branch_bias = self._from_head(
                self.branch_head, branch_cond, "branch_cond", fold_static=False
            )
        if weight is None and branch_weight is None:
            y = F.linear(x, self.weight, self.bias)
            extra = bias
            if branch_bias is not None:
                bound = clip_bound(self.tau, branch_bias.dtype)  # no clamp overflow in fp16
                cb = branch_bias.clamp(-bound, bound)
                extra = cb if extra is None else extra + cb
            if extra is not None:
                y = y + (extra.unsqueeze(1) if x.dim() == 3 else extra)
            return y
        if not trunk_is_total:
            static_w = self.weight.t()
            weight = static_w.expand(x.shape[0], -1, -1) if weight is None else weight + static_w
            if self.bias is not None:
                bias = self.bias.expand(x.shape[0], -1) if bias is None else bias + self.bias
        return ops.dynamic_linear(x, weight, bias, branch_weight, branch_bias, self.tau)

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
        or a (1, N_in, N_out) weight delta would otherwise broadcast over the batch (or
        fail later, with the shapes after the static weights were added)."""
        n_in, n_out = self.in_features, self.out_features
        if x.dim() not in (2, 3) or x.shape[-1] != n_in:
            raise ValueError(
                f"x must be (B, in_features={n_in}) or (B, L, in_features={n_in}) when "
                f"per-sample deltas or conditions are given, got shape {tuple(x.shape)}"
            )
        b = x.shape[0]
        heads = {"cond": self.weight_head, "branch_cond": self.branch_head}
        for name, t, want in (
            ("weight", weight, (b, n_in, n_out)),
            ("bias", bias, (b, n_out)),
            ("branch_weight", branch_weight, (b, n_in, n_out)),
            ("branch_bias", branch_bias, (b, n_out)),
            ("cond", cond, None),
            ("branch_cond", branch_cond, None),
        ):
            if t is None:
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a tensor or None, got {type(t).__name__}")
            if want is None:  # a condition: (B, features of its head)
                head = heads[name]
                want = (b, head.in_features) if head is not None else (b, t.shape[-1])
            if tuple(t.shape) != want:
                raise ValueError(
                    f"{name} must have shape {want} (one row per sample of x, shape "
                    f"{tuple(x.shape)}), got shape {tuple(t.shape)}; it is not broadcast"
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

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z (..., D) → (quantized (..., D), indices (...), scalar loss)."""
        q, idx, sq = ops.codebook_quantize(z, self.codebook, self.straight_through_codebook)
        if sq.numel() == 0:
            return q, idx, z.new_zeros(())
        cw, kw = self.codebook_weight, self.commitment_weight
        if cw == 1.0 and kw == 1.0:
            mse = sq.mean() / self.dim
        else:
            chosen = self.codebook.index_select(0, idx.reshape(-1)).reshape(z.shape)
            diff = _ScaleGrad.apply(z, kw) - _ScaleGrad.apply(chosen, cw)
            mse = (diff * diff).mean()
        loss = self.lam * mse
        return q, idx, loss

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, lam={self.lam}"
