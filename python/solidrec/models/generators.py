"""Parameter generators: sequence encoders (E_v / E_c) and APG's low-rank mapper (M).

DUET: a GRU over the sequence → MLP → condition vector, mapped to full per-sample
weights by the generator heads inside :class:`solid_ext.DynamicLinear`.
APG: masked mean → MLP → condition vector, mapped to a low-rank weight
``U (N_in×k) · S(c) (k×k) · V (k×N_out)`` by :class:`LowRankGenerator`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


class LowRankGenerator(nn.Module):
    """APG's low-rank generation for one (N_in → N_out) layer.

    ``forward(c (B, C))`` → (weight delta (B, N_in, N_out), bias delta (B, N_out)).
    """

    def __init__(self, n_in: int, n_out: int, cond_dim: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.u = nn.Parameter(torch.randn(n_in, rank) / n_in**0.5)
        self.v = nn.Parameter(torch.randn(rank, n_out) / rank**0.5)
        self.s_head = nn.Linear(cond_dim, rank * rank)
        self.b_head = nn.Linear(cond_dim, n_out)
        # Small S at start: the generated delta begins near zero (the static layer rules)
        # but every factor still receives a gradient on the first step.
        nn.init.normal_(self.s_head.weight, std=0.01)
        nn.init.zeros_(self.s_head.bias)
        nn.init.zeros_(self.b_head.weight)
        nn.init.zeros_(self.b_head.bias)

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        s = self.s_head(c).view(-1, self.rank, self.rank)
        w = torch.matmul(torch.matmul(self.u, s), self.v)  # (B, N_in, N_out)
        return w, self.b_head(c)
