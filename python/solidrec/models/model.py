"""One recommender class composed from parts: backbone x generator x SOLID switches.

Roles (DESIGN.md §1, paper Eq. 5-13):
- trunk: unclipped generated parameters, from the item sequence (DSR, ``off``), the
  semantic sequence (SPG: ``spg``, ``spg+sml``, ``spg+scl``, ``full``) or the
  codebook-quantised item sequence (``scl``: SCL without semantic information);
- branch: clipped to ±T, from the item sequence (SML: ``spg+sml``, ``full`` stage 1)
  or from codebook-quantised item embeddings (SCL: ``spg+scl``, ``full`` stage 2),
  adding λ·MSE(E_v, E'_v) to the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solid_ext import DynamicLinear, SemanticCodebook
from solidrec.config import ModelConfig
from solidrec.models.backbones import make_backbone
from solidrec.models.generators import LowRankGenerator, SeqEncoder


def _embedding(num: int, dim: int) -> nn.Embedding:
    """An id table drawn from N(0, 0.1^2) whose row 0 (padding) is zero and gets no grad."""
    emb = nn.Embedding(num, dim, padding_idx=0)
    nn.init.normal_(emb.weight, std=0.1)
    with torch.no_grad():
        emb.weight[0].zero_()
    return emb


class SolidModel(nn.Module):
    """CTR model. ``forward(hist (B, L), items (B, C))`` → (logits (B, C), aux loss scalar).

    Args:
        cfg: the model configuration.
        semantic_id: (num_items + 1,) int64 item → semantic id (0 = padding).
        num_semantic: number of semantic ids (ids are 1..num_semantic).
        history_len: L.
    """

    def __init__(
        self, cfg: ModelConfig, semantic_id: Tensor, num_semantic: int, history_len: int
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, c = cfg.dim, cfg.cond_dim
        num_items = int(semantic_id.shape[0]) - 1
        self.register_buffer("semantic_id", semantic_id.long().clone(), persistent=False)
        # Stage of Algorithm 1 (1: Eq. 12, 2: Eq. 13); a buffer so checkpoints carry it.
        self.register_buffer("stage", torch.ones((), dtype=torch.long))
        self.item_emb = _embedding(num_items + 1, d)
        self.backbone = make_backbone(
            cfg.backbone, d, history_len, cfg.layers, cfg.heads, cfg.dropout
        )
        gen, kind = cfg.generator, {"duet": "gru", "apg": "mean"}.get(cfg.generator)
        self.trunk_encoder = SeqEncoder(kind, d, c) if gen != "none" else None
        self.branch_encoder = (
            SeqEncoder(kind, d, c)
            if gen != "none" and cfg.solid in ("spg+sml", "spg+scl", "full")
            else None
        )
        # E_c: the semantic embedding table; after stage 1 it is the metacode.
        self.sem_emb = None
        if cfg.uses_trunk:
            self.sem_emb = _embedding(num_semantic + 1, d)
        # Static category feature of every item for the backbone (not E_c: the semantic
        # table of SPG stays the generator's own, so its metacode keeps its meaning).
        self.cat_feat = None
        if cfg.item_features == "id+category":
            self.cat_feat = _embedding(num_semantic + 1, d)
        self.codebook = None
        if cfg.uses_codebook:
            self.codebook = SemanticCodebook(
                max(num_semantic, 1), d, init="random", init_std=0.1, lam=cfg.lam
            )
        sizes = [(self.backbone.feat_dim, cfg.hidden), (cfg.hidden, self.backbone.out_dim)]
        has_trunk, has_branch = gen != "none", self.branch_encoder is not None
        duet = gen == "duet"
        self.head = nn.ModuleList(
            DynamicLinear(
                i,
                o,
                tau=cfg.tau,
                cond_features=c if duet and has_trunk else None,
                branch_cond_features=c if duet and has_branch else None,
            )
            for i, o in sizes
        )
        apg = gen == "apg"
        r = cfg.apg_rank
        self.trunk_gen = (
            nn.ModuleList(LowRankGenerator(i, o, c, r) for i, o in sizes)
            if apg and has_trunk
            else None
        )
        self.branch_gen = (
            nn.ModuleList(LowRankGenerator(i, o, c, r) for i, o in sizes)
            if apg and has_branch
            else None
        )

    # -- Algorithm 1 plumbing -------------------------------------------------
    @property
    def two_stage(self) -> bool:
        return self.cfg.solid == "full"

    @torch.no_grad()
    def metacode(self) -> Tensor:
        """The semantic encoder's category table without the padding row: (N_c, D)."""
        assert self.sem_emb is not None
        return self.sem_emb.weight[1:].clone()

    @torch.no_grad()
    def init_codebook(self, how: str, seed: int = 0) -> None:
        """Initialise the codebook: ``metacode`` (copy E_c), ``kmeans`` (of item embeddings)
        or ``random`` (leave as drawn)."""
        if self.codebook is None:
            return
        if how == "metacode":
            self.codebook.load_metacode(self.metacode())
        elif how == "kmeans":
            self.codebook.init_kmeans(self.item_emb.weight[1:], seed=seed)
        elif how != "random":
            raise ValueError(f"unknown codebook init {how!r}")

    # -- forward ----------------------------------------------------------------
    def _quantised(self, seq: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Replace each valid item embedding by its nearest code (straight-through)."""
        assert self.codebook is not None
        q, _, loss = self.codebook(seq[mask])
        out = torch.zeros_like(seq).masked_scatter(mask.unsqueeze(-1), q)
        return out, loss

    def conditions(self, hist: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """hist (B, L) → (item seq (B, L, D), trunk cond (B, C)|None, branch cond, aux loss)."""
        mask = hist > 0
        seq = self.item_emb(hist)
        aux = seq.new_zeros(())
        mode = self.cfg.solid
        stage2 = bool(self.stage.item() == 2) if self.two_stage else True
        code_seq = None
        needs_code = mode == "scl" or mode == "spg+scl" or (mode == "full" and stage2)
        if needs_code:
            code_seq, aux = self._quantised(seq, mask)
        trunk = branch = None
        if self.trunk_encoder is not None:
            if self.cfg.uses_trunk:
                assert self.sem_emb is not None
                trunk = self.trunk_encoder(self.sem_emb(self.semantic_id[hist]), mask)
            elif mode == "scl":
                trunk = self.trunk_encoder(code_seq, mask)
            else:
                trunk = self.trunk_encoder(seq, mask)
        if self.branch_encoder is not None:
            branch = self.branch_encoder(code_seq if code_seq is not None else seq, mask)
        return seq, trunk, branch, aux

    def _head(self, x: Tensor, trunk: Tensor | None, branch: Tensor | None) -> Tensor:
        last = len(self.head) - 1
        for i, layer in enumerate(self.head):
            if self.cfg.generator == "duet":
                x = layer(x, cond=trunk, branch_cond=branch)
            elif self.cfg.generator == "apg":
                w = b = bw = bb = None
                if trunk is not None and self.trunk_gen is not None:
                    w, b = self.trunk_gen[i](trunk)
                if branch is not None and self.branch_gen is not None:
                    bw, bb = self.branch_gen[i](branch)
                x = layer(x, w, b, bw, bb)
            else:
                x = layer(x)
            if i < last:
                x = F.relu(x)
        return x

    def forward(self, hist: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """hist (B, L) int64 left-padded; items (B, C) int64 → logits (B, C), aux loss ()."""
        b, c = items.shape
        seq, trunk, branch, aux = self.conditions(hist)
        mask = hist > 0
        tgt = self.item_emb(items)  # (B, C, D)
        if self.cat_feat is not None:
            seq = seq + self.cat_feat(self.semantic_id[hist])
            tgt = tgt + self.cat_feat(self.semantic_id[items])
        if self.backbone.target_dependent:
            # DIN: attention depends on the candidate; repeat the user's side per candidate.
            rep = lambda t: None if t is None else t.repeat_interleave(c, 0)  # noqa: E731
            feats = self.backbone.encode(rep(seq), rep(mask), tgt.reshape(b * c, -1))
            return self._head(feats, rep(trunk), rep(branch)).view(b, c), aux
        feats = self.backbone.encode(seq, mask, None)
        out = self._head(feats, trunk, branch)  # (B, D)
        return torch.einsum("bd,bcd->bc", out, tgt), aux


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
