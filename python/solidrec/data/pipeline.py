"""``prepare``: raw input -> prepared dataset directory (see docs/DATA.md)."""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from solidrec.budget import check_fits
from solidrec.data.embeddings import load_embeddings
from solidrec.data.errors import DataFormatError
from solidrec.data.io import atomic_directory, sha256_file
from solidrec.data.prepared import (
    SEMANTIC_WARNING,
    check_target,
    dataset_fingerprint,
    is_up_to_date,
    write_prepared,
)
from solidrec.data.protocol import (
    build_sequences,
    interaction_keys,
    make_eval,
    make_train,
    split_positions,
)
from solidrec.data.readers import GenericColumns, check_reader_options, read_dataset
from solidrec.data.semantic import SemanticConfig, assign_semantic_ids

log = logging.getLogger("solidrec.data")


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that determines a prepared dataset."""

    format: str
    input: Path
    out: Path
    items: Path | None = None
    seed: int = 2024
    history_len: int = 10
    neg_train: int = 4
    neg_eval: int = 99
    kcore: int = 0
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    name: str | None = None
    columns: GenericColumns | None = None  # generic format's column names (None: defaults)
    min_rating: float | None = None  # keep only interactions rated at least this
    # Store semantic.item_embeddings, aligned with the items, as a model input feature
    # (model.item_features=id+embedding); they steer semantic ids either way.
    embedding_feature: bool = False

    def __post_init__(self) -> None:
        if self.history_len < 1 or self.neg_train < 1 or self.neg_eval < 1:
            raise ValueError("history_len, neg_train and neg_eval must be >= 1")
        check_reader_options(self.format, self.columns, self.min_rating)


@dataclass
class PrepareResult:
    out: Path
    manifest: dict[str, Any]
    skipped: bool  # True when an up-to-date dataset was already there
    # What it replaced (a dataset prepared from other inputs or settings, with force).
    replaced: str | None = None


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _input_files(cfg: PrepareConfig) -> list[Path]:
    """Files whose bytes determine the output (for the fingerprint), without parsing."""
    p = Path(cfg.input)
    files: list[Path] = []
    if p.is_dir():
        files = sorted(x for x in p.iterdir() if x.is_file() and not x.name.startswith("."))
    else:
        files = [p]
        if cfg.format == "atomic":
            stem = p.name
            for s in (".train.inter", ".valid.inter", ".test.inter"):
                stem = stem.removesuffix(s)
            stem = stem.removesuffix(".inter")  # RecBole's single NAME.inter
            files = sorted(
                x for x in p.parent.iterdir() if x.is_file() and x.name.startswith(stem + ".")
            )
        elif cfg.format == "movielens" and (p.parent / "movies.csv").exists():
            files.append(p.parent / "movies.csv")
    if cfg.items is not None:
        files.append(Path(cfg.items))
    if cfg.semantic.item_embeddings is not None:
        files.append(Path(cfg.semantic.item_embeddings))
    if cfg.semantic.embedding_ids is not None:
        files.append(Path(cfg.semantic.embedding_ids))
    if cfg.semantic.from_run is not None:
        # the weights and item ids decide the table: another run prepares again
        files += cfg.semantic.from_run.files()
    return files


#: Options added after datasets were first prepared, recorded only when set: a dataset
#: prepared before they existed keeps its fingerprint, and training refuses to resume a
#: run on data whose fingerprint changed.
_SEMANTIC_WHEN_SET = ("embedding_ids", "text_model", "from_run")


def _params(cfg: PrepareConfig) -> dict[str, Any]:
    semantic = {
        k: v
        for k, v in _jsonable(cfg.semantic).items()
        if v is not None or k not in _SEMANTIC_WHEN_SET
    }
    if cfg.semantic.from_run is not None:
        # RUN and RUN/model name the same table
        semantic["from_run"] = cfg.semantic.from_run.identity()
    params = {
        "history_len": cfg.history_len,
        "neg_train": cfg.neg_train,
        "neg_eval": cfg.neg_eval,
        "seed": cfg.seed,
        "kcore": cfg.kcore,
        "semantic": semantic,
    }
    if cfg.columns is not None and cfg.columns != GenericColumns():
        params["columns"] = _jsonable(cfg.columns)
    if cfg.min_rating is not None:
        params["min_rating"] = cfg.min_rating
    if cfg.embedding_feature:
        params["embedding_feature"] = True
    return params


@contextmanager
def _step(name: str, verbose: bool, bar: Any = None) -> Iterator[None]:
    """Log a pipeline step (``verbose``) and advance the overall tqdm ``bar`` past it."""
    t = time.perf_counter()
    if bar is not None:
        bar.set_postfix_str(name)
    if verbose:
        log.info("%s ...", name)
    yield
    if bar is not None:
        bar.update(1)
    if verbose:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        log.info("%s done in %.1fs (peak RSS so far %.2f GiB)", name, time.perf_counter() - t, peak)


def _progress(
    total: int, desc: str, enabled: bool
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if not enabled or total == 0:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="row", unit_scale=True, leave=False, disable=None)
    return bar.update, bar.close


def _embedding_feature(
    cfg: PrepareConfig, num_items: int, item_ids: list[str]
) -> np.ndarray | None:
    """(num_items + 1, E) float32 item embeddings (row 0, padding, zero) to store as a
    model input, or None unless ``cfg.embedding_feature``."""
    if not cfg.embedding_feature:
        return None
    sem = cfg.semantic
    if sem.from_run is not None:
        emb = sem.from_run.embeddings(item_ids, sem.embedding_key)
        return np.concatenate([np.zeros((1, emb.shape[1]), np.float32), emb])
    if sem.item_embeddings is None:
        raise ValueError("--embedding-feature needs --item-embeddings PATH or --from-run RUN")
    emb = load_embeddings(
        sem.item_embeddings, num_items, item_ids, sem.embedding_key, sem.embedding_ids
    ).astype(np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"{sem.item_embeddings}: embeddings hold NaN or infinite values")
    return np.concatenate([np.zeros((1, emb.shape[1]), np.float32), emb])


def prepare(
    cfg: PrepareConfig, *, force: bool = False, progress: bool = False, verbose: bool = False
) -> PrepareResult:
    """Prepare ``cfg.input`` into ``cfg.out``; a no-op if ``cfg.out`` is already up to date.

    ``cfg.out`` must be absent, empty or a prepared dataset (:func:`check_target`);
    replacing one prepared from other inputs or settings needs ``force``, which also
    rebuilds one that is up to date."""
    out = Path(cfg.out)
    files = _input_files(cfg)
    for f in files:
        if not f.exists():
            raise DataFormatError(f, None, "file not found")
    with _step("hashing inputs", verbose):
        inputs = [
            {"path": str(f.resolve()), "sha256": sha256_file(f), "bytes": f.stat().st_size}
            for f in files
        ]
    source = {
        "format": cfg.format,
        "input": str(Path(cfg.input).resolve()),
        "items": str(Path(cfg.items).resolve()) if cfg.items else None,
    }
    params = _params(cfg)
    # paths are recorded but only file contents and names decide "unchanged"
    fp = dataset_fingerprint(
        {"format": cfg.format, "files": [(Path(i["path"]).name, i["sha256"]) for i in inputs]},
        params,
    )
    replacing = check_target(out, files, fp, force)
    if not force and (existing := is_up_to_date(out, fp)) is not None:
        if (warning := existing["params"].get(SEMANTIC_WARNING)) is not None:
            log.warning("warning: %s", warning)  # as loud as when it was built
        return PrepareResult(out, existing, True)

    if cfg.semantic.item_embeddings is not None and cfg.semantic.embedding == "text":
        log.warning(
            "--item-embeddings is not used with --embedding text (the default); "
            "pass --embedding id or fusion to use it"
        )

    from tqdm import tqdm

    # Overall bar over the 7 steps below (the sampling steps add per-row bars).
    with tqdm(total=7, desc="prepare", unit="step", disable=None if progress else True) as bar:
        with _step("reading", verbose, bar):
            raw = read_dataset(
                cfg.format, cfg.input, cfg.items, columns=cfg.columns, min_rating=cfg.min_rating
            )
        with _step("sequences", verbose, bar):
            seq = build_sequences(raw, cfg.kcore)
        with _step("semantic ids", verbose, bar):
            titles = (
                [raw.titles[i] for i in seq.item_index.tolist()] if raw.titles is not None else None
            )
            cats = (
                [raw.categories[i] for i in seq.item_index.tolist()]
                if raw.categories is not None
                else None
            )
            item_ids = raw.item_ids[seq.item_index]
            sem = assign_semantic_ids(
                seq.num_items, titles, cats, cfg.semantic, cfg.seed, item_ids.tolist()
            )
            if sem.warning is not None:
                log.warning("warning: %s", sem.warning)
            feature = _embedding_feature(cfg, seq.num_items, item_ids.tolist())

        ss = np.random.SeedSequence(cfg.seed)
        rng_train, rng_valid, rng_test = (np.random.default_rng(s) for s in ss.spawn(3))
        keys = interaction_keys(seq)
        train_pos, valid_pos, test_pos = split_positions(seq)
        L = cfg.history_len
        rows = len(train_pos) + len(valid_pos) + len(test_pos)
        # hist (int64) plus the candidates of each row, built and then written once
        need = 8.0 * rows * (L + 1 + max(cfg.neg_train, cfg.neg_eval)) * 2
        check_fits(need, "--history-len", L, f"{rows:,} samples")
        with _step("train samples", verbose, bar):
            upd, close = _progress(len(train_pos), "train negatives", progress)
            train = make_train(seq, train_pos, L, cfg.neg_train, rng_train, keys, upd)
            close()
        with _step("valid samples", verbose, bar):
            upd, close = _progress(len(valid_pos), "valid negatives", progress)
            valid = make_eval(seq, valid_pos, L, cfg.neg_eval, rng_valid, keys, upd)
            close()
        with _step("test samples", verbose, bar):
            upd, close = _progress(len(test_pos), "test negatives", progress)
            test = make_eval(seq, test_pos, L, cfg.neg_eval, rng_test, keys, upd)
            close()

        with _step("writing", verbose, bar), atomic_directory(out) as tmp:
            manifest = write_prepared(
                tmp,
                semantic_id=sem.semantic_id,
                item_original_id=np.concatenate([np.asarray([""]), item_ids]),
                item_title=np.asarray([""] + titles, dtype=str) if titles is not None else None,
                semantic_name=sem.names,
                user_original_id=raw.user_ids[seq.user_index],
                train=train,
                valid=valid,
                test=test,
                item_embedding=feature,
                interactions=len(seq.item),
                name=cfg.name or out.name,
                source={**source, "files": inputs},
                params={
                    **params,
                    "semantic_method_used": sem.method,
                    "embedding_used": sem.embedding_used,
                    # recorded only when set, for `solidrec stats` to repeat
                    **({SEMANTIC_WARNING: sem.warning} if sem.warning else {}),
                },
                fingerprint=fp,
            )
        return PrepareResult(out, manifest, False, replacing)
