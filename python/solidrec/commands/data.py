"""``solidrec prepare``, ``stats``, ``synth`` and ``download``: the data layer's commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from solidrec.data.embeddings import ItemTableSource
from solidrec.data.errors import DataFormatError
from solidrec.data.readers import FORMATS, RATED_FORMATS, GenericColumns


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the data subcommands on ``sub``."""
    p = sub.add_parser("prepare", help="turn raw data into a prepared dataset directory")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument(
        "--input", required=True, type=Path, help="interactions file or dataset directory"
    )
    p.add_argument("--items", type=Path, help="items / meta file (titles, categories)")
    defaults = {
        "user": GenericColumns.user,
        "item": GenericColumns.item,
        "time": f"{GenericColumns.DEFAULT_TIME}, if present",
        "rating": GenericColumns.DEFAULT_RATING,
    }
    for field, flag in GenericColumns.OPTIONS.items():
        p.add_argument(
            flag,
            dest=f"{field}_col",
            metavar="NAME",
            help=f"--format generic: the {field} column (default: {defaults[field]})",
        )
    p.add_argument(
        "--min-rating",
        type=float,
        metavar="X",
        help=f"keep only interactions rated >= X ({', '.join(RATED_FORMATS)})",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--embedding-feature",
        action="store_true",
        help="also store --item-embeddings as a model input (train with "
        "--set model.item_features=id+embedding)",
    )
    p.add_argument("--name", help="dataset name shown by stats (default: OUT's name)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--history-len", type=int, default=10)
    p.add_argument("--neg-train", type=int, default=4)
    p.add_argument("--neg-eval", type=int, default=99)
    p.add_argument("--kcore", type=int, default=0, help="k-core filter (0 = off)")
    p.add_argument("--semantic", choices=("auto", "category", "kmeans"), default="auto")
    p.add_argument("--clusters", type=int, default=64, help="k for --semantic kmeans")
    p.add_argument(
        "--embedding",
        choices=("text", "id", "fusion"),
        help="embedding source of semantic ids (default: text; id with --from-run)",
    )
    p.add_argument("--text-encoder", choices=("hashed", "minilm"), default="hashed")
    p.add_argument(
        "--text-model",
        metavar="NAME",
        help="embed titles with this local sentence-transformers model (name or directory)",
    )
    p.add_argument(
        "--item-embeddings",
        type=Path,
        help=".npy/.npz/.pt item-ID embeddings, rows = item index (or keyed by item id: "
        "with --embedding-ids, or a .parquet/.csv/.tsv table with an item_id column)",
    )
    p.add_argument(
        "--from-run",
        type=Path,
        metavar="RUN",
        help="ID embeddings from a trained run's item table (RUN or RUN/model), matched "
        "by item id; instead of --item-embeddings",
    )
    p.add_argument(
        "--embedding-ids",
        type=Path,
        metavar="PATH",
        help="item id of each --item-embeddings row: one per line, or a .npy of ids",
    )
    p.add_argument(
        "--embedding-key", help="array/tensor (table: list column) name in --item-embeddings"
    )
    p.add_argument("--category-level", default="leaf", help="'leaf' or a depth (1 = root)")
    p.add_argument("--unlabeled", choices=("nearest", "unknown"), default="nearest")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_prepare)

    s = sub.add_parser("stats", help="Table-6-style statistics of a prepared dataset")
    s.add_argument("dir", type=Path)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_stats)

    y = sub.add_parser("synth", help="write a synthetic dataset in the generic format")
    y.add_argument("--out", required=True, type=Path)
    y.add_argument("--users", type=int, default=2000)
    y.add_argument("--items", type=int, default=1000)
    y.add_argument("--mean-len", type=float, default=12.0)
    y.add_argument("--min-len", type=int, default=5)
    y.add_argument("--departments", type=int, default=4)
    y.add_argument("--leaves", type=int, default=6, help="leaf categories per department")
    y.add_argument("--drift", type=float, default=0.15)
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--interactions-format", choices=("csv", "tsv", "parquet"), default="csv")
    y.set_defaults(func=run_synth)

    d = sub.add_parser("download", help="download a public dataset (resumable, checksummed)")
    d.add_argument(
        "source",
        help="movielens-latest-small | movielens-25m | amazon2018:CATEGORY | amazon2014:CATEGORY",
    )
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--base-url", help="mirror base URL replacing the source's")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=run_download)


def _pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The named arguments, as keyword arguments of a config of the same field names."""
    return {name: getattr(args, name) for name in names}


def _run_table(run: Path | None) -> ItemTableSource | None:
    """``--from-run RUN`` as an item-table source (imports torch only when given)."""
    if run is None:
        return None
    from solidrec.runs.model_dir import RunItemTable

    return RunItemTable(run)


def run_prepare(args: argparse.Namespace) -> int:
    from solidrec.data.pipeline import PrepareConfig, prepare
    from solidrec.data.prepared import dataset_stats, format_stats
    from solidrec.data.semantic import SemanticConfig

    given = {f: getattr(args, f"{f}_col") for f in GenericColumns.OPTIONS}
    names = {f: v for f, v in given.items() if v is not None}
    try:
        sem = SemanticConfig(
            method=args.semantic,
            # a run gives ID embeddings: --from-run alone means --embedding id
            embedding=args.embedding or ("id" if args.from_run is not None else "text"),
            **_pick(args, "text_encoder", "item_embeddings", "embedding_key"),
            **_pick(args, "embedding_ids", "text_model"),
            from_run=_run_table(args.from_run),
            **_pick(args, "category_level", "unlabeled", "clusters"),
        )
        cfg = PrepareConfig(
            **_pick(args, "format", "input", "out", "items", "seed", "history_len"),
            **_pick(args, "neg_train", "neg_eval", "kcore", "name", "min_rating"),
            embedding_feature=args.embedding_feature,
            semantic=sem,
            columns=GenericColumns(**names) if names else None,
        )
        res = prepare(cfg, force=args.force, progress=not args.no_progress, verbose=args.verbose)
    except (DataFormatError, ValueError, RuntimeError) as e:
        print(f"solidrec prepare: error: {e}", file=sys.stderr)
        return 2
    if res.replaced:
        print(f"solidrec prepare: {res.replaced}", file=sys.stderr)
    print(f"{res.out}: {'up to date, nothing to do' if res.skipped else 'written'}")
    print(format_stats(dataset_stats(res.out)))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from solidrec.data.prepared import dataset_stats, format_stats

    if not (args.dir / "manifest.json").exists():
        print(
            f"solidrec stats: error: {args.dir} is not a prepared dataset (no manifest.json)",
            file=sys.stderr,
        )
        return 2
    s = dataset_stats(args.dir)
    print(json.dumps(s, indent=2, sort_keys=True) if args.json else format_stats(s))
    if s["semantic_warning"]:
        # the dataset is usable (baselines), so a warning, not an error
        print(f"solidrec stats: warning: {s['semantic_warning']}", file=sys.stderr)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from solidrec.data.synth import SynthConfig, generate, write_generic

    cfg = SynthConfig(
        **_pick(args, "users", "items", "mean_len", "min_len", "departments", "drift", "seed"),
        leaves_per_department=args.leaves,
    )
    inter, items = write_generic(generate(cfg), args.out, args.interactions_format)
    print(f"wrote {inter} and {items}")
    print(
        f"prepare with: solidrec prepare --format generic --input {inter} --items {items} --out DIR"
    )
    return 0


def run_download(args: argparse.Namespace) -> int:
    from solidrec.data.download import ChecksumError, download, resolve_source

    try:
        files = download(
            args.source, args.out, base_url=args.base_url, progress=not args.no_progress
        )
    except (ChecksumError, ValueError, OSError) as e:
        print(f"solidrec download: error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    print(f"prepare with --format {resolve_source(args.source).prepare_format}")
    return 0
