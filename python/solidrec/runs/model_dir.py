"""The self-contained model directory a finished run writes (``RUN/model/``): its
writer, its validating reader, and the item table of a trained run that ``prepare
--from-run`` clusters into semantic ids.

Format 1::

    manifest.json  {"format": "solidrec-model", "format_version": 1, "dataset": NAME,
                    "dataset_fingerprint": HEX, "num_items": N, "history_len": L,
                    "stage": S, "files": {NAME: sha256, ...}}
    config.yaml    the run's resolved config
    weights.pt     a framed checkpoint (solidrec.runs.checkpoint) {"model": state_dict}
                   the selected (best validation) weights of the final stage, the
                   item -> semantic id map included
    items.json     {"item_id": [...], "semantic_id": [...], "semantic_name": [...],
                    "title": [...] | null}; index i is the model's item i (0 = padding)
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from solidrec.budget import check_fits, model_bytes, physical_bytes
from solidrec.config import RunConfig
from solidrec.data.embeddings import align_embeddings
from solidrec.data.io import atomic_directory, sha256_file, write_json
from solidrec.models import SolidModel
from solidrec.runs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from solidrec.runs.layout import (
    MODEL_CONFIG,
    MODEL_DIR,
    MODEL_ITEMS,
    MODEL_MANIFEST,
    MODEL_WEIGHTS,
)

MODEL_FORMAT = "solidrec-model"
MODEL_FORMAT_VERSION = 1
MANIFEST, CONFIG, WEIGHTS, ITEMS = MODEL_MANIFEST, MODEL_CONFIG, MODEL_WEIGHTS, MODEL_ITEMS


class ModelDirError(FileNotFoundError, ValueError):
    """No usable model directory: missing, of another format version, or damaged."""


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


def read_model_dir(path: Path) -> tuple[dict[str, Any], RunConfig, dict[str, Any], dict]:
    """(manifest, config, items, state_dict) of a model directory, every file checked:
    regular files inside it under a size cap, their sha256 against the manifest, the
    manifest's, config's and items' values (types, ranges, counts that agree)."""
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


def load_weights(model: SolidModel, state: dict[str, Tensor], where: Path) -> None:
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


def load_model_dir(path: Path) -> tuple[SolidModel, dict[str, Any], RunConfig, dict[str, Any]]:
    """(model with its weights, on the CPU, in eval mode; manifest; config; items) of
    the model directory ``path``, every file checked (:func:`read_model_dir`)."""
    manifest, cfg, items, state = read_model_dir(path)
    semantic = torch.tensor(items["semantic_id"], dtype=torch.long)
    model = SolidModel(
        cfg.model,
        semantic,
        len(items["semantic_name"]) - 1,
        manifest["history_len"],
        item_embedding=state.get("pretrained"),  # item_features=id+embedding
    )
    load_weights(model, state, path / WEIGHTS)
    return model.eval(), manifest, cfg, items


#: The state-dict tensor holding a trained model's item-ID table, (N + 1, D), row 0 padding.
RUN_ITEM_TABLE = "item_emb.weight"


def _check_model_manifest(d: Path) -> None:
    """Refuse files that differ from the hashes in the model manifest (a half-copied or
    edited model would give silently wrong ids)."""
    try:
        files = json.loads((d / MANIFEST).read_text()).get("files", {})
    except FileNotFoundError:
        return  # hand-made model directory: the checkpoint's own checksum still applies
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"--from-run {d / MANIFEST}: unreadable ({e})") from None
    for name in (WEIGHTS, ITEMS):
        if name in files and sha256_file(d / name) != files[name]:
            raise ValueError(
                f"--from-run {d / name}: content does not match {MANIFEST} (damaged or edited)"
            )


@dataclass(frozen=True)
class RunItemTable:
    """A trained run's item table (``run``: the run directory or its model directory)
    as the ID embeddings of ``prepare --from-run`` (the data layer's
    :class:`~solidrec.data.embeddings.ItemTableSource`)."""

    run: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))

    def model_dir(self) -> Path:
        """``RUN/model``, or ``RUN`` when it is one."""
        for d in (self.run, self.run / MODEL_DIR):
            if (d / WEIGHTS).is_file() and (d / ITEMS).is_file():
                return d
        raise ValueError(
            f"--from-run {self.run}: no trained model there (expected "
            f"{self.run / MODEL_DIR}/{WEIGHTS} and {ITEMS}, written when `solidrec train` "
            "finishes)"
        )

    def files(self) -> list[Path]:
        """The files of the run's model whose contents decide its item table."""
        d = self.model_dir()
        return [d / WEIGHTS, d / ITEMS]

    def identity(self) -> str:
        return str(self.model_dir().resolve())  # RUN and RUN/model: one table

    def embeddings(self, item_ids: Sequence[str], key: str | None = None) -> np.ndarray:
        """(len(item_ids), D) rows of the run's item table (``key``, default
        ``item_emb.weight``) matched to ``item_ids`` by original item id, as for a keyed
        embeddings file: the run may number its items differently from the data."""
        d = self.model_dir()
        _check_model_manifest(d)
        try:
            ids = json.loads((d / ITEMS).read_text())["item_id"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"--from-run {d / ITEMS}: no item_id list ({e})") from None
        if not isinstance(ids, list) or len(ids) < 2:
            raise ValueError(f"--from-run {d / ITEMS}: item_id is not a list of item ids")
        state = load_checkpoint(d / WEIGHTS)["model"]
        name = key or RUN_ITEM_TABLE
        table = state.get(name)
        if table is None or getattr(table, "ndim", 0) != 2:
            have = sorted(k for k, v in state.items() if getattr(v, "ndim", 0) == 2)
            raise ValueError(
                f"--from-run {d / WEIGHTS}: no 2-D tensor {name!r} (--embedding-key); have {have}"
            )
        table = table.detach().float().numpy()
        if table.shape[0] != len(ids):
            raise ValueError(
                f"--from-run {d}: {name} has {table.shape[0]} rows but {ITEMS} names "
                f"{len(ids)} items (padding included)"
            )
        if not np.isfinite(table).all():
            raise ValueError(f"--from-run {d / WEIGHTS}: {name} holds NaN or infinite values")
        # row 0 is the padding item (id "")
        return align_embeddings(
            [str(x) for x in ids[1:]], table[1:], item_ids, self.run, option="--from-run"
        )
