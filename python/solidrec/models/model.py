"""One recommender class composed from parts: backbone x generator x SOLID mode.

Roles (docs/METHOD.md §1-§4, paper Eq. 5-13), and where each mode takes them from, are the
mode table :data:`solidrec.modes.MODES`:
- trunk: unclipped generated parameters, from the item sequence (DSR, ``off``), the
  semantic sequence (SPG) or the codebook-quantised item sequence (``scl``);
- branch: clipped to ±T, from the item sequence (SML) or the codebook-quantised item
  sequence (SCL), which adds λ·MSE(E_v, E'_v) to the loss.

Algorithm 1's stage is the model's state, set by :meth:`SolidModel.set_stage` and
carried by its state_dict (key ``stage``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solid_ext import SemanticCodebook
from solidrec.config import ModelConfig
from solidrec.models.backbones import make_backbone
from solidrec.models.generators import ENCODER_KINDS, SeqEncoder, dynamic_head
from solidrec.modes import CODE, ITEM, SEMANTIC

#: state_dict prefixes of APG's generators before they moved into the head's layers.
_LEGACY_GENERATORS = {"trunk_gen": "weight_head", "branch_gen": "branch_head"}


def _embedding(num: int, dim: int, std: float = 0.1) -> nn.Embedding:
    """An id table drawn from N(0, std^2) whose row 0 (padding) is zero and gets no grad."""
    emb = nn.Embedding(num, dim, padding_idx=0)
    nn.init.normal_(emb.weight, std=std)
    with torch.no_grad():
        emb.weight[0].zero_()
    return emb


def _current_name(key: str) -> str:
    """A parameter's name today for its name in a checkpoint (``trunk_gen.0.u`` was
    ``head.0.weight_head.u``'s)."""
    slot, _, rest = key.partition(".")
    if slot in _LEGACY_GENERATORS and rest:
        layer, _, name = rest.partition(".")
        return f"head.{layer}.{_LEGACY_GENERATORS[slot]}.{name}"
    return key


class SolidModel(nn.Module):
    """CTR model. ``forward(hist (B, L), items (B, C))`` → (logits (B, C), aux loss scalar).

    Args:
        cfg: the model configuration.
        semantic_id: (num_items + 1,) int64 item → semantic id (0 = padding).
        num_semantic: number of semantic ids (ids are 1..num_semantic).
        history_len: L.
    """

    #: On a CPU, quantise only the valid history positions (eager mode); False: every
    #: position, as under torch.compile and export (the same result; for benchmarks).
    valid_only_search: bool = True

    def __init__(
        self,
        cfg: ModelConfig,
        semantic_id: Tensor,
        num_semantic: int,
        history_len: int,
        item_embedding: Tensor | None = None,
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.mode = mode = cfg.mode
        self._stage = 1  # of Algorithm 1; see set_stage
        d, c = cfg.dim, cfg.cond_dim
        num_items = int(semantic_id.shape[0]) - 1
        # Persistent: a checkpoint alone can serve (older ones without it load too).
        self.register_buffer("semantic_id", semantic_id.long().clone())
        std = cfg.init_std
        self.item_emb = _embedding(num_items + 1, d, std)
        self.backbone = make_backbone(
            cfg.backbone, d, history_len, cfg.layers, cfg.heads, cfg.dropout, cfg.block, cfg.embed
        )
        kind = ENCODER_KINDS.get(cfg.generator)
        self.trunk_encoder = SeqEncoder(kind, d, c) if kind else None
        self.branch_encoder = SeqEncoder(kind, d, c) if kind and mode.has_branch else None
        # E_c: the semantic embedding table; after stage 1 it is the metacode.
        self.sem_emb = _embedding(num_semantic + 1, d, std) if mode.trunk == SEMANTIC else None
        # Static category feature of every item for the backbone (not E_c: the semantic
        # table of SPG stays the generator's own, so its metacode keeps its meaning).
        self.cat_feat = None
        if "category" in cfg.item_features:
            self.cat_feat = _embedding(num_semantic + 1, d, std)
        # Pretrained item embeddings (N + 1, E), frozen, through a learned projection.
        self.pretrained_proj = None
        if "embedding" in cfg.item_features:
            if item_embedding is None or item_embedding.shape[0] != num_items + 1:
                got = None if item_embedding is None else tuple(item_embedding.shape)
                raise ValueError(
                    f"item_features={cfg.item_features} needs item_embedding of shape "
                    f"({num_items + 1}, E), got {got}"
                )
            self.register_buffer("pretrained", item_embedding.float().clone())
            self.pretrained_proj = nn.Linear(item_embedding.shape[1], d, bias=False)
            nn.init.normal_(self.pretrained_proj.weight, std=0.1 / item_embedding.shape[1] ** 0.5)
        self.codebook = None
        if mode.has_codebook:
            self.codebook = SemanticCodebook(
                max(num_semantic, 1), d, init="random", init_std=0.1, lam=cfg.lam
            )
        h = cfg.head_layers
        dims = [self.backbone.feat_dim, *[cfg.hidden] * (h - 1), self.backbone.out_dim]
        sizes = list(itertools.pairwise(dims)) if h else []
        self.head = dynamic_head(
            cfg.generator,
            sizes,
            cond_dim=c,
            branch=self.branch_encoder is not None,
            tau=cfg.tau,
            apg_rank=cfg.apg_rank,
        )

    # -- Algorithm 1 --------------------------------------------------------------
    @property
    def stage(self) -> int:
        """The stage of Algorithm 1 the model computes (1 .. ``mode.stages``)."""
        return self._stage

    def set_stage(self, stage: int, *, seed: int = 0) -> None:
        """Enter ``stage`` of Algorithm 1, from the weights the stage starts with.

        Entering the first stage that uses the codebook initialises it
        (``cfg.codebook_init``, ``auto`` resolved by the mode table; ``seed`` for
        k-means). Loading a state_dict restores the stage without this.
        """
        self._stage = self.mode.check_stage(stage)
        if stage == self.mode.codebook_stage:
            self.init_codebook(self.cfg.resolved_codebook_init, seed=seed)

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

    # -- checkpoints ----------------------------------------------------------------
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # The stage travels with the weights, under the key of the buffer it once was.
        destination[prefix + "stage"] = torch.tensor(self._stage)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = prefix + _current_name(key[len(prefix) :])
            if new != key:
                state_dict[new] = state_dict.pop(key)
        key = prefix + "stage"
        if key in state_dict:
            try:
                self._stage = self.mode.check_stage(int(state_dict.pop(key)))
            except (TypeError, ValueError) as e:
                error_msgs.append(f"{key}: {e}")
        else:
            missing_keys.append(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # Checkpoints written while the semantic map was not saved: keep the one this
        # model was built with (from the same prepared dataset).
        key = prefix + "semantic_id"
        if key in missing_keys:
            missing_keys.remove(key)

    def optimizer_state_for(
        self, model_state: Mapping[str, Any], optimizer_state: dict[str, Any]
    ) -> dict[str, Any]:
        """``optimizer_state``, saved beside ``model_state``, indexed in this model's
        parameter order. Checkpoints written before APG's generators moved into the
        head list them after all head layers (``trunk_gen``, ``branch_gen``); any other
        state is returned as it is."""
        saved = [_current_name(k) for k in model_state]
        groups = optimizer_state.get("param_groups", [])
        if saved == list(model_state) or len(groups) != 1:
            return optimizer_state
        index = {name: i for i, (name, _) in enumerate(self.named_parameters())}
        order = [index[n] for n in saved if n in index]  # saved position -> index now
        ids = groups[0]["params"]
        if sorted(order) != list(range(len(index))) or len(ids) != len(order):
            return optimizer_state  # not this model's: load_state_dict will say so
        now = dict(zip(ids, order, strict=True))
        state = {now[i]: v for i, v in optimizer_state["state"].items()}
        group = {**groups[0], "params": list(range(len(order)))}
        return {**optimizer_state, "state": state, "param_groups": [group]}

    # -- forward ----------------------------------------------------------------
    def _quantised(self, seq: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Replace each valid item embedding by its nearest code (straight-through)."""
        assert self.codebook is not None
        if (
            self.valid_only_search
            and seq.device.type == "cpu"
            and not torch.compiler.is_compiling()
        ):
            # Only the valid positions are searched (about a third of them on
            # Scientific's training histories; the search is most of what stage 2 adds
            # on a CPU). The boolean gather syncs with the host: free on a CPU.
            q, _, loss = self.codebook(seq[mask])
            return seq.new_zeros(seq.shape).index_put((mask,), q), loss
        # Every position is quantized (padding too, then zeroed), the loss counting the
        # valid ones only: no data-dependent shapes, so the model compiles and exports.
        q, _, loss = self.codebook(seq, mask)
        return torch.where(mask.unsqueeze(-1), q, q.new_zeros(())), loss

    def conditions(self, hist: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """hist (B, L) → (item seq (B, L, D), trunk cond (B, C)|None, branch cond, aux loss)."""
        mask = hist > 0
        seq = self.item_emb(hist)
        aux = seq.new_zeros(())
        if self.trunk_encoder is None:  # generator "none": a static head
            return seq, None, None, aux
        mode, stage = self.mode, self._stage
        source = {ITEM: seq}
        if mode.uses_codebook(stage):
            source[CODE], aux = self._quantised(seq, mask)
        if self.sem_emb is not None:
            source[SEMANTIC] = self.sem_emb(self.semantic_id[hist])
        trunk = self.trunk_encoder(source[mode.trunk], mask)
        branch, branch_source = None, mode.branch_at(stage)
        if self.branch_encoder is not None and branch_source is not None:
            branch = self.branch_encoder(source[branch_source], mask)
        return seq, trunk, branch, aux

    def _head(self, x: Tensor, trunk: Tensor | None, branch: Tensor | None) -> Tensor:
        last = len(self.head) - 1
        for i, layer in enumerate(self.head):
            x = layer(x, cond=trunk, branch_cond=branch)
            if i < last:
                x = F.relu(x)
        return x

    def item_vectors(self, items: Tensor) -> Tensor:
        """items (...) int64 → what the backbone sees of each item (..., D)."""
        v = self.item_emb(items)
        return v + self._side_features(items)

    def _side_features(self, items: Tensor) -> Tensor | int:
        """What ``item_features`` adds to each item's id embedding (..., D), or 0."""
        out: Tensor | int = 0
        if self.cat_feat is not None:
            out = out + self.cat_feat(self.semantic_id[items])
        if self.pretrained_proj is not None:
            out = out + self.pretrained_proj(self.pretrained[items])
        return out

    def _user(self, hist: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
        """hist (B, L) → (backbone sequence (B, L, D), mask, trunk, branch, aux loss)."""
        seq, trunk, branch, aux = self.conditions(hist)
        seq = seq + self._side_features(hist)
        return seq, hist > 0, trunk, branch, aux

    def item_table(self) -> Tensor:
        """(N, D): what the backbone sees of items 1..N, row i - 1 for item i. The id
        table's rows enter as a view of its weight, so a loss over every item (the full
        softmax) gives it one dense gradient rather than N looked-up rows."""
        table = self.item_emb.weight[1:]
        if self.cat_feat is None and self.pretrained_proj is None:
            return table
        items = torch.arange(1, self.item_emb.num_embeddings, device=table.device)
        return table + self._side_features(items)

    def forward(
        self, hist: Tensor, items: Tensor | None, return_user: bool = False
    ) -> tuple[Tensor, Tensor]:
        """hist (B, L) int64 left-padded; items (B, C) int64 → logits (B, C), aux loss ().

        ``items=None`` scores every item: logits (B, num_items + 1), column i for item i
        (column 0 is padding's; the caller drops it); with ``return_user`` it returns the
        user vectors (B, D) instead, whose dot product with :meth:`item_vectors` is the
        logit (how the softmax losses score many items without a (B, C, D) gather). Not
        for target-dependent backbones.
        """
        seq, mask, trunk, branch, aux = self._user(hist)
        if items is None:
            if self.backbone.target_dependent:
                raise ValueError(
                    f"{self.cfg.backbone} scores each candidate with its own user vector: "
                    "scoring every item at once needs another backbone"
                )
            user = self._head(self.backbone.encode(seq, mask, None), trunk, branch)
            if return_user:
                return user, aux
            return user @ self.item_vectors(self._all_items(hist.device)).T, aux
        b, c = items.shape
        tgt = self.item_vectors(items)  # (B, C, D)
        if self.backbone.target_dependent:
            # DIN: attention depends on the candidate, so the sequence is encoded once per
            # (history, candidate); the head's weights are generated once per history and
            # serve its C candidates (x (B, C, F)), not once per pair.
            feats = self.backbone.encode(
                seq.repeat_interleave(c, 0), mask.repeat_interleave(c, 0), tgt.reshape(b * c, -1)
            )
            return self._head(feats.reshape(b, c, -1), trunk, branch).view(b, c), aux
        feats = self.backbone.encode(seq, mask, None)
        out = self._head(feats, trunk, branch)  # (B, D)
        return torch.einsum("bd,bcd->bc", out, tgt), aux

    def _all_items(self, device: torch.device) -> Tensor:
        return torch.arange(self.item_emb.num_embeddings, device=device)

    @torch.no_grad()
    def score_all(self, hist: Tensor, rows: int = 16384) -> Tensor:
        """hist (B, L) → logits (B, num_items + 1) of every item (column 0, padding, is
        -inf). One user pass and one matmul against the item table; a target-dependent
        backbone (DIN) runs (history, candidate) pairs, about ``rows`` per pass (its
        attention runs per pair, so memory grows with B x candidates)."""
        if self.backbone.target_dependent:
            items = self._all_items(hist.device)
            n, b = len(items), hist.shape[0]
            chunk = max(1, rows // max(b, 1))
            parts = [self(hist, items[i : i + chunk].expand(b, -1))[0] for i in range(0, n, chunk)]
            out = torch.cat(parts, 1)
        else:
            out = self(hist, None)[0]
        out[:, 0] = -torch.inf
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
