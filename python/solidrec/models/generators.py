"""Parameter generators: sequence encoders (E_v / E_c) and the dynamic head they drive.

A generator = a sequence encoder (here) that turns a sequence into a condition vector,
and a map from that vector to each dynamic layer's parameters (in ``solid_ext``):
- DUET: a GRU over the sequence → MLP → condition, mapped to full per-sample weights by
  :class:`solid_ext.FullRankGenerator` (DynamicLinear's default generator);
- APG: masked mean → MLP → condition, mapped to a low-rank weight
  ``U (N_in×k) · S(c) (k×k) · V (k×N_out)`` by :class:`solid_ext.LowRankGenerator`.
"""

from __future__ import annotations

from torch import Tensor, nn

from solid_ext import DynamicLinear, LowRankGenerator

__all__ = ["ENCODER_KINDS", "LowRankGenerator", "SeqEncoder", "dynamic_head"]

#: generator (``model.generator``) → kind of its sequence encoder; "none" has neither.
ENCODER_KINDS = {"duet": "gru", "apg": "mean"}


class SeqEncoder(nn.Module):
    """(B, L, D) sequence + (B, L) mask → (B, C) condition vector."""

    def __init__(self, kind: str, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "gru":
            self.gru = nn.GRU(dim, cond_dim, batch_first=True)
            n_in = cond_dim
        elif kind == "mean":
            n_in = dim
        else:
            raise ValueError(f"unknown encoder kind {kind!r}")
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cond_dim), nn.ReLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, seq: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(-1).to(seq.dtype)
        if self.kind == "gru":
            h = self.gru(seq * m)[0][:, -1]  # left-padded: last step is the newest item
        else:
            h = (seq * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.mlp(h)


def dynamic_head(
    generator: str,
    sizes: list[tuple[int, int]],
    *,
    cond_dim: int,
    branch: bool,
    tau: float,
    apg_rank: int,
) -> nn.ModuleList:
    """The dynamic layers (N_in → N_out for each of ``sizes``), each with the trunk
    generator of ``generator`` and, if ``branch``, a branch generator; static layers
    for ``generator="none"``. Call each as ``layer(x, cond=trunk, branch_cond=branch)``."""
    if generator == "duet":
        return nn.ModuleList(
            DynamicLinear(
                i,
                o,
                tau=tau,
                cond_features=cond_dim,
                branch_cond_features=cond_dim if branch else None,
            )
            for i, o in sizes
        )
    layers = nn.ModuleList(DynamicLinear(i, o, tau=tau) for i, o in sizes)
    if generator == "apg":
        # Drawn after every static layer, the trunk's before the branch's: the order of
        # earlier versions, so that a seed still gives the same model.
        for is_branch in (False, True) if branch else (False,):
            for layer, (i, o) in zip(layers, sizes, strict=True):
                layer.set_generator(LowRankGenerator(i, o, cond_dim, apg_rank), branch=is_branch)
    return layers
