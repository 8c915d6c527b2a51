"""A tiny prepared dataset with learnable structure, for fast tests of training code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from solidrec.cli import build_parser, main
from solidrec.commands.train import resolve_config
from solidrec.config import RunConfig
from solidrec.data.io import atomic_directory
from solidrec.data.prepared import EvalSplit, TrainSplit, dataset_fingerprint, write_prepared


def make_tiny_dataset(
    out: str | Path,
    users: int = 48,
    items: int = 60,
    semantic: int = 6,
    history_len: int = 5,
    seq_len: int = 9,
    neg_train: int = 2,
    neg_eval: int = 19,
    seed: int = 0,
) -> Path:
    """Write a prepared dataset (docs/DATA.md, through
    :func:`~solidrec.data.prepared.write_prepared`) where each user mostly stays in one
    semantic group, so models can beat chance. Returns ``out``."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    sem_id = np.r_[0, 1 + np.arange(items) % semantic].astype(np.int64)
    by_sem = {s: np.flatnonzero(sem_id == s) for s in range(1, semantic + 1)}
    L = history_len

    def hist_of(seq: list[int], t: int) -> tuple[np.ndarray, int]:
        past = seq[max(0, t - L) : t]
        h = np.zeros(L, np.int64)
        if past:
            h[L - len(past) :] = past
        return h, len(past)

    def negs(seen: set[int], n: int) -> list[int]:
        pool = np.setdiff1d(np.arange(1, items + 1), np.fromiter(seen, np.int64))
        return list(rng.choice(pool, size=n, replace=False))

    tr = {k: [] for k in ("user", "hist", "hist_len", "item", "label")}
    ev = {s: {k: [] for k in ("user", "hist", "hist_len", "candidates")} for s in ("valid", "test")}
    for u in range(users):
        group = 1 + u % semantic
        seq = [
            int(rng.choice(by_sem[group] if rng.random() < 0.8 else np.arange(1, items + 1)))
            for _ in range(seq_len)
        ]
        seen = set(seq)
        for t in range(1, seq_len - 2):
            h, n = hist_of(seq, t)
            tr["user"].append(u)
            tr["hist"].append(h)
            tr["hist_len"].append(n)
            tr["item"].append([seq[t], *negs(seen, neg_train)])
            tr["label"].append([1.0] + [0.0] * neg_train)
        for split, t in (("valid", seq_len - 2), ("test", seq_len - 1)):
            h, n = hist_of(seq, t)
            e = ev[split]
            e["user"].append(u)
            e["hist"].append(h)
            e["hist_len"].append(n)
            e["candidates"].append([seq[t], *negs(seen, neg_eval)])
    train = TrainSplit(
        user=np.asarray(tr["user"], np.int64),
        hist=np.asarray(tr["hist"], np.int64),
        hist_len=np.asarray(tr["hist_len"], np.int64),
        item=np.asarray(tr["item"], np.int64),
        label=np.asarray(tr["label"], np.float32),
    )
    valid, test = (
        EvalSplit(**{k: np.asarray(v, np.int64) for k, v in e.items()}) for e in ev.values()
    )
    source = {"format": "tiny", "input": None, "items": None, "files": []}
    params = {
        "users": users,
        "items": items,
        "semantic_ids": semantic,
        "history_len": L,
        "seq_len": seq_len,
        "neg_train": neg_train,
        "neg_eval": neg_eval,
        "seed": seed,
    }
    with atomic_directory(out) as tmp:
        write_prepared(
            tmp,
            semantic_id=sem_id,
            item_original_id=np.array([""] + [f"i{i}" for i in range(1, items + 1)]),
            item_title=None,
            semantic_name=np.array(["<pad>"] + [f"s{s}" for s in range(1, semantic + 1)]),
            user_original_id=np.array([f"u{u}" for u in range(users)]),
            train=train,
            valid=valid,
            test=test,
            interactions=users * seq_len,
            name="tiny",
            source=source,
            params={**params, "semantic_method_used": "synthetic"},
            fingerprint=dataset_fingerprint(source, params),
        )
    return out


def tiny_run_args(data: str | Path, out: str | Path) -> list[str]:
    """``solidrec train`` arguments of a short SASRec + SOLID(DUET) run on
    :func:`make_tiny_dataset` (one epoch per stage, a checkpoint every 2 steps): the run
    the fault-injection tests and tools/fault_report.py kill and resume."""
    return [
        "train", "--data", str(data), "--out", str(out), "--backbone", "sasrec",
        "--generator", "duet", "--solid", "full", "--epochs", "1", "--patience", "1",
        "--threads", "1", "--no-progress", "--set", "batch_size=64", "ckpt_every_steps=2",
    ]  # fmt: skip


def tiny_run_config(data: str | Path, out: str | Path, **train: Any) -> RunConfig:
    """The config :func:`tiny_run_args` resolves to, with ``train`` overrides."""
    cfg = resolve_config(build_parser().parse_args(tiny_run_args(data, out)))
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def die_before_replace(n: int) -> list[int]:
    """Make this process die (``os._exit(137)``: no cleanup, as SIGKILL) just before its
    ``n``-th ``os.replace`` (the commit point of every atomic write); ``n <= 0`` never.
    Returns the live call count ``[calls]``. For fault-injection subprocesses only."""
    real, calls = os.replace, [0]

    def replace(a: Any, b: Any) -> None:
        calls[0] += 1
        if calls[0] == n:
            os._exit(137)
        real(a, b)

    os.replace = replace
    return calls


def kill_at_replace_cli(n: int, argv: list[str]) -> int:
    """``solidrec ARGV`` dying before its ``n``-th ``os.replace``; prints ``REPLACES k``
    (the calls made) when it gets to the end."""
    calls = die_before_replace(n)
    rc = main(argv)
    print("REPLACES", calls[0])
    return rc


#: ``python -c KILL_AT_REPLACE N ARGS...``: :func:`kill_at_replace_cli` in a subprocess.
KILL_AT_REPLACE = (
    "import sys; from solidrec.testing import kill_at_replace_cli as k; "
    "sys.exit(k(int(sys.argv[1]), sys.argv[2:]))"
)
