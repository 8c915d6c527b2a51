"""Trained models for use: :class:`Recommender`.

A finished run writes ``RUNDIR/model/`` (format: :mod:`solidrec.runs.model_dir`);
``Recommender.from_run(RUNDIR)`` loads it without the prepared dataset, and
``recommend(history, k)`` maps original item ids to the top-k original item ids with
their scores.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from solid_ext.ops import topk_scores
from solidrec.config import resolve_device
from solidrec.data.prepared import load_prepared
from solidrec.models import SolidModel
from solidrec.runs.layout import MODEL_MANIFEST, RunDir
from solidrec.runs.load import load_run
from solidrec.runs.model_dir import ModelDirError, load_model_dir

#: What :meth:`Recommender.recommend` does with an item id the model does not know.
UNKNOWN_POLICIES = ("skip", "error")
Unknown = Literal["skip", "error"]


class UnknownItemError(KeyError):
    """A history holds item ids the model was not trained on (``unknown="error"``)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (numpy integers too); ValueError naming ``name`` for a
    bool, a float, anything else or < 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Recommender:
    """A trained model with its item id maps: histories of original item ids in,
    top-k original item ids out.

    Args:
        model: the trained model (eval mode is set here).
        item_ids: original id of each model item index (index 0, padding, is ``""``).
        history_len: L, the number of most recent items the model reads.
        device: where scoring runs.
        titles: optional item titles, same indexing.
        data, fingerprint: the prepared dataset the model was trained on and its
            fingerprint (for :meth:`user_history`); source: where it was loaded from
            (named in errors). :meth:`from_run` sets them.
    """

    def __init__(
        self,
        model: SolidModel,
        item_ids: Sequence[str],
        history_len: int,
        device: torch.device | str = "cpu",
        titles: Sequence[str] | None = None,
        *,
        data: str = "",
        fingerprint: str = "",
        source: str = "",
    ) -> None:
        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.item_ids = [str(x) for x in item_ids]
        self.index = {x: i for i, x in enumerate(self.item_ids) if i > 0}
        self.history_len = int(history_len)
        self.titles = list(titles) if titles is not None else None
        self.data, self.fingerprint, self.source = data, fingerprint, source

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto") -> Recommender:
        """Load ``RUNDIR/model`` (written when training finishes), or a model directory
        itself. A run from before model directories existed loads from its config,
        prepared dataset and best checkpoint instead. ``device``: auto (CUDA when
        available), cpu, cuda or cuda:N."""
        path = Path(run_dir)
        if not path.is_dir():
            what = "not a directory" if path.exists() else "no such run directory"
            raise ModelDirError(f"{path}: {what} (a run directory or its model/ directory)")
        dev = resolve_device(device)
        model_dir = path if (path / MODEL_MANIFEST).exists() else RunDir(path).model
        if (model_dir / MODEL_MANIFEST).exists() or not RunDir(path).config.exists():
            model, manifest, cfg, items = load_model_dir(model_dir)
            return cls(
                model,
                items["item_id"],
                manifest["history_len"],
                dev,
                items["title"],
                data=cfg.data,
                fingerprint=str(manifest.get("dataset_fingerprint", "")),
                source=str(model_dir),
            )
        cfg, model, data = load_run(path)
        titles = data.item_title.tolist() if data.item_title is not None else None
        return cls(
            model,
            data.item_original_id.tolist(),
            data.history_len,
            dev,
            titles,
            data=cfg.data,
            fingerprint=str(data.manifest.get("fingerprint", "")),
            source=str(path),
        )

    def title(self, item_id: str) -> str | None:
        """The title of an item (original id), or None where the model has no titles."""
        if self.titles is None or str(item_id) not in self.index:
            return None
        return str(self.titles[self.index[str(item_id)]]) or None

    def user_history(self, user_id: str, data: str | Path | None = None) -> list[str]:
        """The most recent items (original ids, oldest first, up to the model's L) of a
        user of the prepared dataset the model was trained on (``data``: its directory,
        default the run's), test item included: what to recommend from next."""
        where = data if data is not None else self.data
        if not where:
            raise ValueError("--user needs the prepared dataset: this model names none")
        ds = load_prepared(where)
        fp = str(ds.manifest.get("fingerprint", ""))
        if self.fingerprint and fp and fp != self.fingerprint:
            raise ValueError(
                f"{where} was prepared again since the model was trained (fingerprint "
                f"{fp[:12]}, the model's {self.fingerprint[:12]}): its users may differ"
            )
        found = np.flatnonzero(ds.user_original_id.astype(str) == str(user_id))
        if not len(found):
            raise ValueError(f"user {user_id!r} is not in {where}")
        rows = np.flatnonzero(ds.test.user == found[0])
        if not len(rows):
            raise ValueError(f"user {user_id!r} has no test row in {where}")
        r = rows[0]
        n = int(ds.test.hist_len[r])
        items = [
            *ds.test.hist[r, ds.test.hist.shape[1] - n :].tolist(),
            int(ds.test.candidates[r, 0]),
        ]
        return [str(ds.item_original_id[i]) for i in items[-self.history_len :]]

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    def encode(self, history: Sequence[str | int], unknown: Unknown = "skip") -> list[int]:
        """Model indices of ``history``'s known items (oldest first). Unknown ids are
        skipped with a warning (``unknown="skip"``) or raise :class:`UnknownItemError`."""
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        if isinstance(history, (str, bytes)):
            raise TypeError("history must be a sequence of item ids, not one string")
        known, missing = [], []
        for x in history:
            i = self.index.get(str(x))
            (missing if i is None else known).append(str(x) if i is None else i)
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            msg = f"{len(missing)} item id(s) the model does not know: {shown}"
            if unknown == "error":
                raise UnknownItemError(msg)
            warnings.warn(f"{msg}; skipped", stacklevel=3)
        return known

    def _tensor(self, encoded: list[list[int]]) -> Tensor:
        """Left-padded (B, L) of the last L items of each history."""
        L = self.history_len
        out = torch.zeros(len(encoded), L, dtype=torch.long)
        for row, h in enumerate(encoded):
            h = h[-L:]
            if h:
                out[row, L - len(h) :] = torch.tensor(h)
        return out

    @torch.no_grad()
    def scores(self, histories: Sequence[Sequence[str | int]], unknown: Unknown = "skip") -> Tensor:
        """Logits (B, num_items + 1) of every item for each history (column i is model
        item i, ``item_ids[i]``; column 0 is -inf)."""
        return self._scores(histories, unknown, 0)

    def _encode_all(
        self, histories: Sequence[Sequence[str | int]], unknown: Unknown, first: int
    ) -> list[list[int]]:
        """Model item ids of each history; ValueError naming the first (counting from
        ``first``) that has no item the model knows."""
        encoded = [self.encode(h, unknown) for h in histories]
        empty = [i for i, h in enumerate(encoded) if not h]
        if empty:
            raise ValueError(
                f"history {first + empty[0]} (counting from 0) has no item the model knows: "
                "nothing to recommend from"
            )
        return encoded

    def _scores(
        self, histories: Sequence[Sequence[str | int]], unknown: Unknown, first: int
    ) -> Tensor:
        encoded = self._encode_all(histories, unknown, first)
        return self.model.score_all(self._tensor(encoded).to(self.device)).float().cpu()

    def recommend_batch(
        self,
        histories: Sequence[Sequence[str | int]],
        k: int = 10,
        exclude_seen: bool = True,
        unknown: Unknown = "skip",
        batch_size: int = 256,
    ) -> list[list[tuple[str, float]]]:
        """:meth:`recommend` for many histories, scored ``batch_size`` at a time."""
        k = _positive_int(k, "k")
        batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Iterable):
            raise TypeError(
                f"histories must be an iterable of histories (each an iterable of item ids), "
                f"got {type(histories).__name__}"
            )
        # Any iterables (generators included), each read exactly once.
        histories = [h if isinstance(h, (str, bytes)) else list(h) for h in histories]
        out: list[list[tuple[str, float]]] = []
        k = min(k, self.num_items)
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            vals, idx = self._top(chunk, k, exclude_seen, unknown, start)
            for v_row, i_row in zip(vals.tolist(), idx.tolist(), strict=True):
                # (-inf, -1) slots: fewer unseen items than k.
                out.append(
                    [(self.item_ids[i], v) for v, i in zip(v_row, i_row, strict=True) if i > 0]
                )
        return out

    def _top(
        self,
        histories: Sequence[Sequence[str | int]],
        k: int,
        exclude_seen: bool,
        unknown: Unknown,
        first: int,
    ) -> tuple[Tensor, Tensor]:
        """(values, model item ids) (B, k) of the best items after each history: the
        fused ``solid_ext.ops.topk_scores`` over the item table (no (B, N) score
        matrix); a target-dependent backbone (DIN) scores every item, then top-k."""
        encoded = self._encode_all(histories, unknown, first)
        hist = self._tensor(encoded).to(self.device)
        exclude = None
        if exclude_seen:
            e = max(len(h) for h in encoded)
            exclude = torch.full((len(encoded), e), -1, dtype=torch.long)
            for row, h in enumerate(encoded):
                exclude[row, : len(h)] = torch.tensor(h) - 1  # table row = item id - 1
            exclude = exclude.to(self.device)
        model = self.model
        if model.backbone.target_dependent:
            s = model.score_all(hist)[:, 1:].float()
            if not bool(torch.isfinite(s).all()):
                self._non_finite("item scores")
            if exclude is not None:
                keep = exclude >= 0
                rows = torch.arange(len(encoded), device=s.device)[:, None].expand_as(exclude)
                s[rows[keep], exclude[keep]] = -torch.inf
            top = s.topk(k, dim=1)
            vals, idx = top.values, top.indices.masked_fill(top.values == -torch.inf, -1)
        else:
            with torch.no_grad():
                user = model(hist, None, return_user=True)[0]
                table = model.item_table()
            try:  # the op checks both for NaN and infinity (every backend): no second pass
                vals, idx = topk_scores(user.to(table.dtype), table, k, exclude)
            except ValueError as e:
                if "NaN or infinity" not in str(e):
                    raise
                self._non_finite("item table" if ": table" in str(e) else "history encodings")
        return vals.float().cpu(), (idx + (idx >= 0).long()).cpu()

    def _non_finite(self, what: str) -> None:
        where = f" ({self.source})" if self.source else ""
        raise ValueError(
            f"the model{where} gives non-finite {what} (NaN or infinity): its weights "
            "are damaged or its training diverged; no ranking is defined"
        )

    def recommend(
        self,
        history: Sequence[str | int],
        k: int = 10,
        exclude_seen: bool = True,
        unknown: Unknown = "skip",
    ) -> list[tuple[str, float]]:
        """The top-``k`` ``(item id, score)`` after ``history`` (original item ids,
        oldest first; the last L are used), best first. ``exclude_seen`` drops the
        history's own items; ``unknown``: ``"skip"`` (warn) or ``"error"``."""
        return self.recommend_batch([history], k, exclude_seen, unknown)[0]

    def export(self, batch: int = 2, candidates: int = 8) -> torch.export.ExportedProgram:
        """``torch.export`` of the model's ``forward(hist (B, L), items (B, C))`` with
        dynamic B and C."""
        hist = self._tensor([[1]] * batch).to(self.device)
        items = torch.ones(batch, candidates, dtype=torch.long, device=self.device)
        b, c = torch.export.Dim("batch", min=1), torch.export.Dim("candidates", min=1)
        return torch.export.export(self.model, (hist, items), dynamic_shapes=({0: b}, {0: b, 1: c}))
