"""Sequential backbones (the static layers of the primary model M).

Each backbone maps the embedded history (B, L, D) with its validity mask (B, L) to the
features fed into the dynamic head. Dot backbones (GRU4Rec, SASRec, BERT4Rec) ignore
the target and their head output (B, D) is scored against the target embedding; DIN
attends with the target and its head outputs the logit directly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Backbone(nn.Module):
    """Interface: ``encode(seq (B,L,D), mask (B,L) bool, target (B,D)|None) -> (B, feat_dim)``."""

    feat_dim: int
    out_dim: int  # head output size: D (dot with target) or 1 (logit)
    target_dependent: bool = False

    def encode(self, seq: Tensor, mask: Tensor, target: Tensor | None) -> Tensor:
        raise NotImplementedError


class _Block(nn.Module):
    """Transformer block with a boolean attention mask (True = may attend); LayerNorm
    before each sublayer (``post=False``) or after each residual sum (``post=True``)."""

    def __init__(self, dim: int, heads: int, dropout: float, post: bool = False) -> None:
        super().__init__()
        self.heads, self.post = heads, post
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allow: Tensor) -> Tensor:
        b, n, d = x.shape
        h = x if self.post else self.ln1(x)
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allow.unsqueeze(1))
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        if self.post:
            x = self.ln1(x)
            return self.ln2(x + self.drop(self.ff(x)))
        return x + self.drop(self.ff(self.ln2(x)))


def _allow(mask: Tensor, causal: bool) -> Tensor:
    """(B, L) validity → (B, L, L) attention permission. Every query may see itself, so a
    padded or empty row never has all keys masked (which would give NaN)."""
    n = mask.shape[1]
    allow = mask.unsqueeze(1).expand(-1, n, -1)
    if causal:
        allow = allow & torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
    return allow | torch.eye(n, dtype=torch.bool, device=mask.device)


class SASRec(Backbone):
    """Causal self-attention; the representation is the most recent position's output."""

    def __init__(
        self,
        dim: int,
        max_len: int,
        layers: int,
        heads: int,
        dropout: float,
        block: str = "pre_ln",
        embed: str = "scale",
    ) -> None:
        super().__init__()
        self.feat_dim = self.out_dim = dim
        self.pos = nn.Embedding(max_len, dim)
        post = block == "post_ln"
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout, post) for _ in range(layers))
        # Post-LN blocks end normalised; a pre-LN stack needs a last LayerNorm.
        self.ln = nn.Identity() if post else nn.LayerNorm(dim)
        # embed "norm": LayerNorm + dropout on item + position (see config.EMBEDS).
        self.embed_norm = (
            nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout)) if embed == "norm" else None
        )
        self.causal = True

    def _run(self, x: Tensor, mask: Tensor) -> Tensor:
        pos = self.pos.weight[-x.shape[1] :]
        if self.embed_norm is None:
            x = x * math.sqrt(x.shape[-1]) + pos
        else:
            x = self.embed_norm(x + pos)
        allow = _allow(mask, self.causal)
        for blk in self.blocks:
            x = blk(x, allow)
        return self.ln(x[:, -1])

    def encode(self, seq: Tensor, mask: Tensor, target: Tensor | None) -> Tensor:
        return self._run(seq, mask)


class BERT4Rec(SASRec):
    """Bidirectional self-attention over the history plus an appended [MASK] token whose
    output (BERT4Rec's next-item prediction slot) is the representation."""

    def __init__(self, dim: int, max_len: int, *args: Any, **kwargs: Any) -> None:
        # SASRec's arguments, with one more position: the [MASK] token's.
        super().__init__(dim, max_len + 1, *args, **kwargs)
        self.causal = False
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.1)

    def encode(self, seq: Tensor, mask: Tensor, target: Tensor | None) -> Tensor:
        b = seq.shape[0]
        x = torch.cat([seq, self.mask_token.expand(b, 1, -1)], 1)
        m = torch.cat([mask, mask.new_ones(b, 1)], 1)
        return self._run(x, m)


class GRU4Rec(Backbone):
    """A GRU over the (left-padded) history; the last hidden state is the representation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.feat_dim = self.out_dim = dim
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def encode(self, seq: Tensor, mask: Tensor, target: Tensor | None) -> Tensor:
        # Left padding: zero inputs precede the items, so the last step is the newest item.
        out, _ = self.gru(seq * mask.unsqueeze(-1))
        return out[:, -1]


class DIN(Backbone):
    """Target attention (unnormalised, as in DIN) pooling the history; the classifier
    input is [target, pooled, target*pooled] and the head outputs the logit."""

    target_dependent = True

    def __init__(self, dim: int, att_hidden: int = 36) -> None:
        super().__init__()
        self.feat_dim, self.out_dim = 3 * dim, 1
        self.att = nn.Sequential(
            nn.Linear(4 * dim, att_hidden), nn.Sigmoid(), nn.Linear(att_hidden, 1)
        )

    def encode(self, seq: Tensor, mask: Tensor, target: Tensor | None) -> Tensor:
        assert target is not None
        t = target.unsqueeze(1).expand_as(seq)
        w = self.att(torch.cat([seq, t, seq - t, seq * t], -1)).squeeze(-1)
        pooled = (w * mask).unsqueeze(-1).mul(seq).sum(1)
        return torch.cat([target, pooled, target * pooled], -1)


def make_backbone(
    name: str,
    dim: int,
    max_len: int,
    layers: int,
    heads: int,
    dropout: float,
    block: str = "pre_ln",
    embed: str = "scale",
) -> Backbone:
    """Build a backbone by name (din, gru4rec, sasrec, bert4rec); ``block`` and
    ``embed`` (config.BLOCKS, config.EMBEDS) shape the transformers only."""
    if name == "sasrec":
        return SASRec(dim, max_len, layers, heads, dropout, block, embed)
    if name == "bert4rec":
        return BERT4Rec(dim, max_len, layers, heads, dropout, block, embed)
    if name == "gru4rec":
        return GRU4Rec(dim)
    if name == "din":
        return DIN(dim)
    raise ValueError(f"unknown backbone {name!r}")
