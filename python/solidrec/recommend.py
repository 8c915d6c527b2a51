"""Trained models for use: the self-contained model directory and :class:`Recommender`.

A finished run writes ``RUNDIR/model/`` (format below); ``Recommender.from_run(RUNDIR)``
loads it without the prepared dataset, and ``recommend(history, k)`` maps original item
ids to the top-k original item ids with their scores.

Model directory, format 1 (this module owns it)::

    manifest.json  {"format": "solidrec-model", "format_version": 1, "dataset": NAME,
                    "dataset_fingerprint": HEX, "num_items": N, "history_len": L,
                    "stage": S, "files": {NAME: sha256, ...}}
    config.yaml    the run's resolved config
    weights.pt     a framed checkpoint (solidrec.train.checkpoint) {"model": state_dict}
                   the selected (best validation) weights of the final stage, the
                   item -> semantic id map included
    items.json     {"item_id": [...], "semantic_id": [...], "semantic_name": [...],
                    "title": [...] | null}; index i is the model's item i (0 = padding)
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import Tensor

from solid_ext.ops import topk_scores
from solidrec.budget import check_fits, model_bytes, physical_bytes
from solidrec.config import RunConfig, resolve_device
from solidrec.data.io import atomic_directory, sha256_file, write_json
from solidrec.models import SolidModel

MODEL_DIR = "model"
MODEL_FORMAT = "solidrec-model"
MODEL_FORMAT_VERSION = 1
MANIFEST, CONFIG, WEIGHTS, ITEMS = "manifest.json", "config.yaml", "weights.pt", "items.json"
#: What :meth:`Recommender.recommend` does with an item id the model does not know.
UNKNOWN_POLICIES = ("skip", "error")
Unknown = Literal["skip", "error"]


class ModelDirError(FileNotFoundError, ValueError):
    """No usable model directory: missing, of another format version, or damaged."""


class UnknownItemError(KeyError):
    """A history holds item ids the model was not trained on (``unknown="error"``)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def save_model_dir(
    out: str | Path,
    model: SolidModel,
    cfg: RunConfig,
    *,
    item_ids: Sequence[str],
    semantic_name: Sequence[str],
    title: Sequence[str] | None,
    history_len: int,
    dataset: str,
    fingerprint: str,
) -> Path:
    """Write ``model`` (its current weights) as a self-contained model directory at
    ``out``, atomically (a crash leaves the previous one or none)."""
    from solidrec.train.checkpoint import save_checkpoint  # the trainer imports this module

    out = Path(out)
    with atomic_directory(out) as tmp:
        save_checkpoint(tmp / WEIGHTS, {"model": model.state_dict()})
        cfg.save(tmp / CONFIG)
        semantic = model.semantic_id.tolist()
        write_json(
            tmp / ITEMS,
            {
                "item_id": [str(x) for x in item_ids],
                "semantic_id": semantic,
                "semantic_name": [str(x) for x in semantic_name],
                "title": None if title is None else [str(x) for x in title],
            },
        )
        write_json(
            tmp / MANIFEST,
            {
                "format": MODEL_FORMAT,
                "format_version": MODEL_FORMAT_VERSION,
                "dataset": dataset,
                "dataset_fingerprint": fingerprint,
                "num_items": len(item_ids) - 1,
                "history_len": int(history_len),
                "stage": model.stage,
                "files": {n: sha256_file(tmp / n) for n in (CONFIG, WEIGHTS, ITEMS)},
            },
        )
    return out


#: Largest JSON/YAML file of a model directory read (bytes); weights: physical memory.
TEXT_FILE_CAP = 256 << 20


def _regular_file(path: Path, cap: int) -> int:
    """The size of ``path``, a regular file inside its model directory of at most
    ``cap`` bytes; ModelDirError naming it otherwise (a symlink, a device, a directory,
    too large): checked before anything reads or hashes it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelDirError(f"{path}: missing (the model directory is incomplete)") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise ModelDirError(f"{path}: {kind}; a model directory holds regular files only")
    if cap and st.st_size > cap:
        raise ModelDirError(
            f"{path}: {st.st_size:,} bytes, more than the {cap:,} a model directory file "
            "may have here"
        )
    return st.st_size


def _json_file(path: Path) -> Any:
    _regular_file(path, TEXT_FILE_CAP)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{path}: unreadable ({e})") from None


def _int_field(manifest: dict[str, Any], key: str, path: Path, low: int, high: int) -> int:
    v = manifest.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ModelDirError(f"{path}: {key} must be an integer in [{low}, {high}], got {v!r}")
    return v


def _check_items(items: Any, path: Path, num_items: int) -> dict[str, Any]:
    """items.json as the model uses it: every list of the right length and type."""
    if not isinstance(items, dict):
        raise ModelDirError(f"{path}: expected a mapping, got {type(items).__name__}")
    n = num_items + 1
    for key in ("item_id", "semantic_id", "semantic_name"):
        if not isinstance(items.get(key), list):
            raise ModelDirError(f"{path}: {key} must be a list")
    ids, sem, names, title = (
        items.get(k) for k in ("item_id", "semantic_id", "semantic_name", "title")
    )
    if len(ids) != n or len(sem) != n:
        raise ModelDirError(
            f"{path}: item_id and semantic_id must have num_items + 1 = {n} entries (the "
            f"manifest's), got {len(ids)} and {len(sem)}"
        )
    if not all(isinstance(x, str) for x in ids) or len(set(ids[1:])) != num_items:
        raise ModelDirError(f"{path}: item_id must be {num_items} distinct strings after ''")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in sem):
        raise ModelDirError(f"{path}: semantic_id must be integers")
    if not names or min(sem) < 0 or max(sem) >= len(names):
        raise ModelDirError(
            f"{path}: semantic_id must lie in 0..{len(names) - 1} (semantic_name's entries)"
        )
    if title is not None and (
        not isinstance(title, list) or len(title) != n or not all(isinstance(t, str) for t in title)
    ):
        raise ModelDirError(f"{path}: title must be null or {n} strings")
    return items


def _read_model_dir(path: Path) -> tuple[dict[str, Any], RunConfig, dict[str, Any], dict]:
    """(manifest, config, items, state_dict) of a model directory, every file checked:
    regular files inside it under a size cap, their sha256 against the manifest, the
    manifest's, config's and items' values (types, ranges, counts that agree)."""
    from solidrec.train.checkpoint import CheckpointError, load_checkpoint

    mpath = path / MANIFEST
    if not mpath.exists() and not mpath.is_symlink():
        raise ModelDirError(f"{path}: no {MANIFEST} (not a solidrec model directory)")
    manifest = _json_file(mpath)
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        raise ModelDirError(f"{mpath}: not a solidrec model manifest")
    if manifest.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelDirError(
            f"{path}: model directory format_version {manifest.get('format_version')!r}; "
            f"this solidrec reads {MODEL_FORMAT_VERSION}"
        )
    files = manifest.get("files")
    expected = {CONFIG, WEIGHTS, ITEMS}
    if not isinstance(files, dict) or set(files) != expected:
        raise ModelDirError(
            f"{mpath}: files must map exactly {sorted(expected)} to their sha256, got {files!r}"
        )
    num_items = _int_field(manifest, "num_items", mpath, 1, 1 << 40)
    history_len = _int_field(manifest, "history_len", mpath, 1, 1 << 16)
    for name, digest in files.items():
        f = path / name
        _regular_file(f, physical_bytes() if name == WEIGHTS else TEXT_FILE_CAP)
        if not isinstance(digest, str) or sha256_file(f) != digest:
            raise ModelDirError(f"{f}: content does not match its manifest (damaged or edited)")
    try:
        if not yaml.safe_load((path / CONFIG).read_text()):
            raise ValueError("holds no config (the run's resolved config was expected)")
        cfg = RunConfig.load(path / CONFIG)
        cfg.model.validate()
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelDirError(f"{path / CONFIG}: {e}") from None
    items = _check_items(_json_file(path / ITEMS), path / ITEMS, num_items)
    m = cfg.model
    need = model_bytes(
        num_items, len(items["semantic_name"]), m.dim, m.hidden, m.cond_dim, m.layers, 1
    )
    try:
        check_fits(need, "model.dim", m.dim, f"the model ({num_items:,} items)")
    except ValueError as e:
        raise ModelDirError(f"{path / CONFIG}: {e}") from None
    try:
        ck = load_checkpoint(path / WEIGHTS)
    except CheckpointError as e:
        raise ModelDirError(str(e)) from None
    state = ck.get("model") if isinstance(ck, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelDirError(f"{path / WEIGHTS}: no 'model' state dict of tensors")
    manifest["history_len"] = history_len
    return manifest, cfg, items, state


def _load_weights(model: SolidModel, state: dict[str, Tensor], where: Path) -> None:
    """``load_state_dict`` after every name and shape is checked: one named error."""
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise ModelDirError(
            f"{where}: the weights do not fit the config (missing {missing[:5]}, "
            f"unexpected {extra[:5]})"
        )
    for name, t in want.items():
        if tuple(state[name].shape) != tuple(t.shape):
            raise ModelDirError(
                f"{where}: {name} has shape {tuple(state[name].shape)}, the config makes "
                f"{tuple(t.shape)} (config.yaml edited, or weights of another model)"
            )
    model.load_state_dict(state)


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
        model_dir = path if (path / MANIFEST).exists() else path / MODEL_DIR
        if (model_dir / MANIFEST).exists() or not (path / "config.yaml").exists():
            manifest, cfg, items, state = _read_model_dir(model_dir)
            semantic = torch.tensor(items["semantic_id"], dtype=torch.long)
            model = SolidModel(
                cfg.model,
                semantic,
                len(items["semantic_name"]) - 1,
                manifest["history_len"],
                item_embedding=state.get("pretrained"),  # item_features=id+embedding
            )
            _load_weights(model, state, model_dir / WEIGHTS)
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
        from solidrec.evaluate import load_run

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
        from solidrec.data.prepared import load_prepared

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
