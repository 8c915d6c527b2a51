"""RecBole beside solidrec on the same split: SASRec and GRU4Rec, full softmax, one thread.

An optional benchmark (``make -f research.mk recbole``; not in CI, not a dependency of
the package). It trains RecBole's SASRec and GRU4Rec and ours on exactly the same chronological
leave-one-out split of a prepared dataset (by default Amazon Scientific), with the same
settings where the two libraries have the same knob, and prints one table. Every step,
every setting that had to be translated and every difference that remains is below.

Usage::

    make -f research.mk recbole   # creates .venv-recbole (RecBole's own virtualenv), runs this
    .venv/bin/python benchmarks/recbole_compare.py --data runs/data/scientific \\
        --out benchmarks/results/recbole_scientific [--backbones sasrec gru4rec] \\
        [--epochs 60] [--work /tmp/recbole_compare] [--smoke] [--ours-select full_ndcg@10] \
        [--ours-set model.head_layers=0]   # ours once more with these keys: one more row
    .venv/bin/python benchmarks/recbole_compare.py --render PREFIX   # Markdown from JSON

It runs in two interpreters: this file under the project's ``.venv`` (it reads the
prepared dataset with :func:`solidrec.data.prepared.load_prepared` and runs ``solidrec
train``), and the same file again under ``.venv-recbole/bin/python --child SPEC`` for
each RecBole run (that interpreter has RecBole and no solidrec; the child part of this
file imports only the standard library, numpy, torch and recbole).

Steps
=====

1. **Export the split.** Each user's full sequence is rebuilt from the prepared rows:
   the first training row's history (the items before the first training positive),
   the training positives in order, the validation item, then the test item. The
   rebuilt sequences are checked against *every* prepared row (its user, target and
   left-padded history of the last L items); any mismatch stops the run. They are
   written as RecBole's atomic ``WORK/atomic/NAME/NAME.inter`` (``user_id:token
   item_id:token timestamp:float``; the tokens are our user index 0..U-1 and item
   index 1..N, the timestamp a global row counter, so strictly increasing within each
   user). With ``eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user}``
   and ``MAX_ITEM_LIST_LENGTH: L`` (10), RecBole's sequential augmentation and
   leave-one-out split give one sample per target position 1..n-1; the last is the test
   sample, the second-last the validation sample, the rest train: our protocol
   (docs/DATA.md, "The protocol"). ``WORK/eval.npz`` carries our rows for step 2.
2. **RecBole** (child process, per backbone): builds RecBole's dataset and loaders, and
   *verifies the split again from RecBole's side*: the multiset of (user, target, last-L
   history) of RecBole's train, valid and test datasets must equal ours (34,101 /
   8,442 / 8,442 rows on Scientific), so in particular each user's test target is our
   test positive. Then it trains with ``loss_type: CE``, ``train_neg_sample_args:
   None`` (full softmax), selects on validation ``NDCG@10`` under ``eval_args.mode:
   full`` and evaluates the best checkpoint on the test split three ways:

   * RecBole's full ranking (``mode: full``), as RecBole reports it;
   * RecBole's sampled ranking (``mode: uni100``): the *same trained checkpoint*
     re-evaluated through a second RecBole config/dataset whose only change is the
     mode (no second training);
   * **our protocol** on RecBole's trained model: its ``full_sort_predict`` scores of
     every item for our test histories, then our full ranking (the user's earlier
     items left out, ties counted against the target) and our sampled ranking (our
     exact 1 + 99 candidates, ties against the target). This row isolates model and
     training code from evaluation code.

   Seconds per training epoch: ``Trainer._train_epoch`` wrapped with a wall-clock timer
   (training only; validation not counted), averaged over the epochs run.
3. **Ours**: ``solidrec train --backbone B --generator none --solid off --set
   train.loss=softmax train.select_metric=ndcg@10 train.eval_protocol=both
   train.threads=1 ...`` with the tuned settings below; ``metrics.json``
   (``full_ndcg@10``/``full_recall@10``: full ranking; ``ndcg@10``/``recall@10``:
   sampled 1 + 99) and ``cost.json`` (``s_per_epoch``: training only, ``epochs``).
   ``train.select_metric=ndcg@10`` is the tuned strong baselines' choice: the *sampled*
   validation NDCG@10 picks the epoch and stops early (``--ours-select full_ndcg@10``
   picks on our full ranking, closer to RecBole's full-ranking validation).
4. **Report**: a Markdown table (printed; ``--out PREFIX`` writes ``PREFIX.md`` and
   ``PREFIX.json`` with every number, the RecBole configs and our commands) with a
   header naming the CPU, date, git commit, RecBole / torch / numpy versions, and the
   list of protocol differences below (``--render PREFIX`` rewrites ``PREFIX.md`` from
   ``PREFIX.json`` with this file's text, without training). Runs are sequential
   (never two at once), each at one thread (``OMP_NUM_THREADS=1``,
   ``torch.set_num_threads(1)``).

Settings
========

Per backbone, the values of the tuned strong baselines (docs/RESULTS.md, "Tuned per
backbone"), used by both libraries: SASRec lr 0.009697483955413217, dropout 0.0,
weight decay 0.001, ``train.batch_size`` 1024; GRU4Rec lr 0.010229186121747325,
dropout 0.1 (see below), weight decay 0.001, ``train.batch_size`` 2048. Both: Adam
(``torch.optim.Adam`` with ``weight_decay`` as an L2 penalty in both libraries), embedding
and hidden size 32 (``model.dim``), up to 60 epochs, early stop on validation NDCG@10,
seed 2024 (different random streams, so not the same initialisation or data order).

* **Batch size.** Our ``train.batch_size`` counts (history, candidate) samples of the
  prepared layout, 1 positive + 4 negatives per history: a step takes
  ``batch_size // 5`` histories (``Trainer._histories_per_step``), all scored against
  every item by the softmax loss. RecBole's ``train_batch_size`` counts sequences
  (histories), so it is set to ``batch_size // (1 + neg_train)``: 204 for SASRec and 409
  for GRU4Rec, which gives both libraries the same steps per epoch (168 and 84).
* **Patience.** Ours stops after ``patience`` (5) epochs in a row without an
  improvement of more than 1e-4; RecBole stops when its count of non-improving epochs
  *exceeds* ``stopping_step`` (``recbole.utils.early_stopping``), so ``stopping_step =
  patience - 1`` (4) stops after the same 5 epochs.
* **SASRec**: ``n_layers`` 2, ``n_heads`` 2, ``hidden_size`` 32, ``inner_size`` 64 (ours'
  feed-forward width is 2 x dim), ``hidden_act`` gelu, ``hidden_dropout_prob`` =
  ``attn_dropout_prob`` = our dropout, ``layer_norm_eps`` 1e-5 (torch's default, ours).
* **GRU4Rec**: ``embedding_size`` = ``hidden_size`` 32, ``num_layers`` 1 (ours is one
  GRU layer), ``dropout_prob`` **0.0**: our GRU4Rec backbone takes no dropout
  (``make_backbone`` passes ``model.dropout`` to the transformers only), so the tuned
  0.1 has no effect in ours and RecBole gets the value that ours effectively uses.
* RecBole: ``metrics: [Recall, NDCG]``, ``topk: [10]``, ``valid_metric: NDCG@10``,
  ``eval_step`` 1, ``metric_decimal_place`` 6 (its default 4 also rounds the
  validation score that early stopping compares), ``use_gpu: False``, ``worker`` 0,
  ``reproducibility: True``, ``show_progress: False``.
* ``--smoke``: 2 epochs each, to check the pipeline end to end (numbers meaningless).

RecBole's environment, and the workarounds it needed
=====================================================

``.venv-recbole`` (``make -f research.mk recbole`` creates it): ``torch==2.13.0`` (the CPU
build, the project's) first, then ``numpy<2``, ``pandas<3``, scipy, scikit-learn, pyyaml, tqdm,
``colorlog==4.7.2``, ``colorama==0.4.4``, texttable, tabulate (torch re-pinned in the same
pip command so pip never fetches another), then ``recbole==1.2.1 --no-deps``: its
declared ``ray``, ``tensorboard``, ``thop``, ``plotly``, ``psutil`` (and ``hyperopt``) are
left out, since training and evaluation never need them. Workarounds, none of which edit
site-packages:

* ``recbole.quick_start`` imports ``ray.tune`` at module level, so the child does what
  ``run_recbole`` does with ``Config``, ``create_dataset``, ``data_preparation``,
  ``get_model``, ``get_trainer`` directly and never imports ``quick_start``.
* ``recbole.utils.utils`` imports ``torch.utils.tensorboard.SummaryWriter``, which needs
  the ``tensorboard`` package; the child installs a no-op ``torch.utils.tensorboard``
  module in ``sys.modules`` before importing RecBole (nothing is logged to TensorBoard).
* ``Config.compatibility_settings`` assigns ``np.float = np.float_`` and the like;
  numpy 2 removed ``np.float_``, ``np.unicode_``..., so the venv pins ``numpy<2``
  (RecBole itself then restores the aliases numpy 1.24 dropped, used in its metrics).
  ``pandas<3`` keeps RecBole's pandas 2 idioms working.
* torch >= 2.6 loads with ``weights_only=True`` by default, which refuses RecBole's
  checkpoints (they hold its ``Config``): the child runs with
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
* Importing RecBole's sequential models (``get_model``) runs
  ``torch.autograd.set_detect_anomaly(True)`` at module level in ``sine.py``, for every
  model: each autograd op then records a Python stack trace. The child switches it off
  again before training (``anomaly_detection_on_import`` in the JSON says whether it was
  on); left on, a SASRec epoch took 24 s instead of 9 s on the AMD EPYC it was measured on (2.7x).
* RecBole writes ``./log/`` relative to the working directory: each child runs in its
  own ``WORK/run-*/recbole-BACKBONE`` directory (checkpoints in ``saved/`` there).

Protocol differences that remain
================================

See :data:`DIFFERENCES` (printed under the table): sampled negatives (RecBole: 100
drawn per test row, only the target excluded; ours: 99 fixed, never-interacted items),
history exclusion in full ranking (RecBole's sequential full sort excludes none; ours
excludes every earlier item), ties (RecBole: ``torch.topk`` order; ours: against the
target), the validation signal (RecBole: its full ranking; ours: sampled NDCG@10 by
default), model code (post-LN vs
pre-LN transformer, positions, scaling, initialisation, our 2-layer MLP head, GRU bias),
the padding item in RecBole's softmax, data order and initialisation, and what each
library's seconds per epoch contain.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: The tuned strong-baseline settings (docs/RESULTS.md, "Tuned per backbone"), ours.
SETTINGS: dict[str, dict[str, float]] = {
    "sasrec": {
        "lr": 0.009697483955413217,
        "dropout": 0.0,
        "weight_decay": 0.001,
        "batch_size": 1024,
    },
    "gru4rec": {
        "lr": 0.010229186121747325,
        "dropout": 0.1,
        "weight_decay": 0.001,
        "batch_size": 2048,
    },
}
RECBOLE_MODEL = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}
DIM = 32  # ModelConfig.dim (and hidden) defaults
SEED = 2024
PATIENCE = 5
UNI_NEGATIVES = 100  # RecBole's uni100
K = 10

#: Protocol differences that remain after the split and the settings are matched.
DIFFERENCES = [
    "**Split: none.** RecBole's leave-one-out split of the exported sequences was checked "
    "row by row against ours (user, target, last-10 history) for train, valid and test.",
    "**Sampled negatives.** RecBole `uni100`: 1 + 100 candidates, the 100 drawn uniformly "
    "per test row by its `RepeatableSampler` (sequential models), which excludes only that "
    "row's target, so a user's own history items can be negatives, and draws with "
    "replacement (a row may repeat a negative). Ours: 1 + 99 distinct candidates fixed at "
    "`prepare` time, uniform over items the user never interacted with. The 'ours on "
    "RecBole's model' rows score exactly our 1 + 99.",
    "**History in full ranking.** RecBole's full sort for sequential models masks only the "
    "padding item: the user's earlier items stay in the ranking. Ours leaves out every "
    "item the user met before the held-out one (training items, and the validation item "
    "for test).",
    "**Ties.** RecBole ranks with `torch.topk`: a tie between the target and another item "
    "goes whichever way topk orders it. Ours counts every tie against the target "
    "(a constant scorer ranks last).",
    "**Validation signal.** RecBole selects its best epoch and stops on its own full-ranking "
    "NDCG@10 of the validation split (no history exclusion). Ours on `train.select_metric` "
    "(`header.ours_select` in the JSON; `ndcg@10` by default, as the tuned strong baselines: "
    "the *sampled* 1 + 99 validation NDCG@10; `--ours-select full_ndcg@10` selects on our "
    "full ranking instead). RecBole counts an equal score as an improvement, ours needs "
    "more than 1e-4.",
    "**SASRec model code.** RecBole: post-LN transformer, LayerNorm + dropout on item + "
    "position embeddings, positions counted from the oldest item (right-padded "
    "sequences), N(0, 0.02) initialisation of every Linear/Embedding, the output at the "
    "last item dotted with the item table. Ours: pre-LN blocks and a final LayerNorm, "
    "item embeddings x sqrt(d) + positions aligned to the most recent item (left "
    "padding), item table N(0, 0.1), then a 2-layer ReLU MLP head (32-32-32) before the "
    "dot product.",
    "**GRU4Rec model code.** RecBole: embedding dropout, a GRU without biases, "
    "Xavier initialisation, a Linear layer on the GRU output, read at the last item. "
    "Ours: a GRU with biases over the left-padded history (zero inputs first), the last "
    "step, then the 2-layer MLP head; no dropout (ours ignores model.dropout=0.1 for "
    "GRU4Rec, so RecBole's dropout_prob is 0.0).",
    "**Softmax.** Both are cross-entropy over every item, averaged over the batch's "
    "histories; RecBole's logits include the padding item (id 0), ours only items 1..N.",
    "**Data order and initialisation.** Both seed 2024, but different generators: not "
    "the same initial weights, shuffling or dropout masks.",
    "**Seconds per epoch.** Training only in both (no validation). Ours includes its "
    "mid-epoch checkpoints (every 50 steps); RecBole's includes its own batching. The "
    "machine may be shared with other jobs: compare within a run.",
]


# --------------------------------------------------------------------------------------
# Parent side (the project's .venv): export, run, report.
# --------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[recbole_compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rebuild_sequences(data: Any) -> dict[int, list[int]]:
    """Each user's full item sequence (oldest first) from a prepared dataset: the first
    training row's history, the training positives in order, the validation item, the
    test item. Checked against every prepared row (ValueError on any difference)."""
    import numpy as np

    tr, va, te = data.train, data.valid, data.test
    if len(np.unique(va.user)) != len(va.user) or len(np.unique(te.user)) != len(te.user):
        raise ValueError("a user has several validation or test rows")
    if set(va.user.tolist()) != set(te.user.tolist()):
        raise ValueError(
            "every user needs a validation and a test row (>= 3 interactions) for RecBole's "
            "leave-one-out split to match ours"
        )
    valid_pos = dict(zip(va.user.tolist(), va.candidates[:, 0].tolist(), strict=True))
    valid_row = {u: i for i, u in enumerate(va.user.tolist())}
    test_pos = dict(zip(te.user.tolist(), te.candidates[:, 0].tolist(), strict=True))
    order = np.argsort(tr.user, kind="stable")  # rows keep their order within a user
    users_sorted = tr.user[order]
    bounds = np.searchsorted(users_sorted, np.arange(data.num_users + 1))
    seqs: dict[int, list[int]] = {}
    for u in sorted(test_pos):
        rows = order[bounds[u] : bounds[u + 1]]
        first = tr.hist[rows[0]] if len(rows) else va.hist[valid_row[u]]
        seq = [int(x) for x in first if x > 0]
        seq += tr.item[rows, 0].tolist()
        seq += [valid_pos[u], test_pos[u]]
        seqs[u] = seq
    _check_rows(data, seqs, order)
    return seqs


def _expected(
    seqs: dict[int, list[int]], users: Any, positions: list[int], length: int
) -> tuple[Any, Any]:
    """(targets, left-padded histories) at per-row sequence ``positions``."""
    import numpy as np

    tgt = np.empty(len(positions), np.int64)
    hist = np.zeros((len(positions), length), np.int64)
    for r, (u, p) in enumerate(zip(users, positions, strict=True)):
        s = seqs[int(u)]
        tgt[r] = s[p]
        h = s[max(0, p - length) : p]
        if h:
            hist[r, length - len(h) :] = h
    return tgt, hist


def _check_rows(data: Any, seqs: dict[int, list[int]], order: Any) -> None:
    """Every prepared row (train in per-user order, valid, test) equals the rebuilt
    sequences' target and last-L history at its position."""
    import numpy as np

    tr, length = data.train, data.history_len
    users = tr.user[order]
    pos, counter = [], {}
    for u in users.tolist():
        counter[u] = counter.get(u, 0) + 1
        pos.append(counter[u])  # training positives sit at positions 1..n-3
    for u, c in counter.items():
        if c != len(seqs[u]) - 3:
            raise ValueError(f"user {u}: {c} training rows for {len(seqs[u])} interactions")
    checks = [("train", users, pos, tr.item[order, 0], tr.hist[order])]
    for name, split, back in (("valid", data.valid, 2), ("test", data.test, 1)):
        p = [len(seqs[int(u)]) - back for u in split.user]
        checks.append((name, split.user, p, split.candidates[:, 0], split.hist))
    for name, u, p, target, hist in checks:
        tgt, h = _expected(seqs, u, p, length)
        bad = np.flatnonzero((tgt != target) | (h != hist).any(1))
        if len(bad):
            raise ValueError(
                f"rebuilt sequences do not reproduce {len(bad)} {name} rows (first: row "
                f"{int(bad[0])}, user {int(u[bad[0]])}): the prepared data does not follow "
                "the leave-one-out layout this export assumes"
            )


def export(data: Any, work: Path) -> tuple[Path, str, Path, dict[str, Any]]:
    """Write RecBole's atomic ``.inter`` and our evaluation rows; returns (data_path,
    dataset name, eval npz, summary)."""
    import numpy as np
    from solidrec.evaluate import seen_items

    seqs = rebuild_sequences(data)
    name = "".join(c if c.isalnum() else "_" for c in str(data.manifest.get("name", "data")))
    atomic = work / "atomic"
    (atomic / name).mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    ts = 0
    for u in sorted(seqs):
        for item in seqs[u]:
            ts += 1
            lines.append(f"{u}\t{item}\t{ts}")
    (atomic / name / f"{name}.inter").write_text("\n".join(lines) + "\n")
    tr, va, te = data.train, data.valid, data.test
    indptr, items = seen_items(data, "test")
    npz = work / "eval.npz"
    np.savez(
        npz,
        num_items=np.int64(data.num_items),
        history_len=np.int64(data.history_len),
        train_user=tr.user,
        train_target=tr.item[:, 0],
        train_hist=tr.hist,
        valid_user=va.user,
        valid_target=va.candidates[:, 0],
        valid_hist=va.hist,
        test_user=te.user,
        test_hist=te.hist,
        test_candidates=te.candidates,
        seen_indptr=indptr,
        seen_items=items,
    )
    summary = {
        "users": len(seqs),
        "items": data.num_items,
        "interactions": ts,
        "train_rows": len(tr.user),
        "valid_rows": len(va.user),
        "test_rows": len(te.user),
        "history_len": data.history_len,
        "sampled_negatives_ours": int(te.candidates.shape[1] - 1),
        "neg_train": int(tr.item.shape[1] - 1),
    }
    return atomic, name, npz, summary


def recbole_config(
    backbone: str, data: Any, atomic: Path, run_dir: Path, epochs: int
) -> dict[str, Any]:
    """The RecBole ``config_dict`` matched to our settings (module docstring)."""
    s = SETTINGS[backbone]
    per_step = max(1, int(s["batch_size"]) // int(data.train.item.shape[1]))
    cfg: dict[str, Any] = {
        "data_path": str(atomic),
        "checkpoint_dir": str(run_dir / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": int(data.history_len),
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "learner": "adam",
        "learning_rate": float(s["lr"]),
        "weight_decay": float(s["weight_decay"]),
        "train_batch_size": per_step,
        "eval_batch_size": 4096,
        "epochs": int(epochs),
        "stopping_step": PATIENCE - 1,
        "eval_step": 1,
        "metrics": ["Recall", "NDCG"],
        "topk": [K],
        "valid_metric": f"NDCG@{K}",
        "metric_decimal_place": 6,
        "seed": SEED,
        "reproducibility": True,
        "use_gpu": False,
        "worker": 0,
        "show_progress": False,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
    }
    if backbone == "sasrec":
        cfg.update(
            n_layers=2,
            n_heads=2,
            hidden_size=DIM,
            inner_size=2 * DIM,
            hidden_act="gelu",
            hidden_dropout_prob=float(s["dropout"]),
            attn_dropout_prob=float(s["dropout"]),
            layer_norm_eps=1e-5,
            initializer_range=0.02,
        )
    else:
        # Our GRU4Rec takes no dropout (model.dropout reaches the transformers only).
        cfg.update(embedding_size=DIM, hidden_size=DIM, num_layers=1, dropout_prob=0.0)
    return cfg


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_recbole(
    py: Path, backbone: str, cfg: dict[str, Any], name: str, npz: Path, run_dir: Path
) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "backbone": backbone,
        "model": RECBOLE_MODEL[backbone],
        "dataset": name,
        "config": cfg,
        "eval_npz": str(npz),
        "out": str(run_dir / "result.json"),
    }
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    log = run_dir / "child.log"
    _log(f"RecBole {RECBOLE_MODEL[backbone]}: training (log: {log})")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(
            [str(py), str(Path(__file__).resolve()), "--child", str(spec_path)],
            cwd=run_dir,
            env=_child_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
        ).returncode
    if rc != 0:
        tail = log.read_text().splitlines()[-40:]
        raise SystemExit(f"RecBole {backbone} failed (exit {rc}); {log} ends:\n" + "\n".join(tail))
    res = json.loads((run_dir / "result.json").read_text())
    res["wall_s"] = time.perf_counter() - t0
    return res


def run_ours(
    solidrec: Path,
    data_dir: Path,
    backbone: str,
    run_dir: Path,
    epochs: int,
    select: str = f"ndcg@{K}",
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    s = SETTINGS[backbone]
    cmd = [
        str(solidrec),
        "train",
        "--data",
        str(data_dir),
        "--out",
        str(run_dir),
        "--backbone",
        backbone,
        "--generator",
        "none",
        "--solid",
        "off",
        "--seed",
        str(SEED),
        "--epochs",
        str(epochs),
        "--patience",
        str(PATIENCE),
        "--no-progress",
        "--set",
        "train.loss=softmax",
        f"train.select_metric={select}",
        "train.eval_protocol=both",
        "train.threads=1",
        f"train.lr={s['lr']}",
        f"model.dropout={s['dropout']}",
        f"train.weight_decay={s['weight_decay']}",
        f"train.batch_size={int(s['batch_size'])}",
        *extra,
    ]
    log = run_dir.with_suffix(".log")
    _log(f"ours {backbone}: training (log: {log})")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(
            cmd, cwd=ROOT, env=_child_env(), stdout=f, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0:
        tail = log.read_text().splitlines()[-40:]
        raise SystemExit(f"ours {backbone} failed (exit {rc}); {log} ends:\n" + "\n".join(tail))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cost = json.loads((run_dir / "cost.json").read_text())
    return {
        "command": cmd,
        "wall_s": time.perf_counter() - t0,
        "full": {
            f"ndcg@{K}": metrics[f"full_ndcg@{K}"],
            f"recall@{K}": metrics[f"full_recall@{K}"],
        },
        "sampled": {f"ndcg@{K}": metrics[f"ndcg@{K}"], f"recall@{K}": metrics[f"recall@{K}"]},
        "s_per_epoch": cost["s_per_epoch"],
        "epochs": cost["epochs"],
        "best_epoch": int(metrics["best_epoch"]) + 1,  # ours counts from 0
        "select_metric": select,
        "best_valid": metrics.get(f"best_valid_{select}"),
    }


def _cpu_model() -> str:
    """The CPU's name (solidrec.machine); only this side, our venv, imports solidrec,
    never the RecBole child."""
    from solidrec.machine import cpu_model

    return cpu_model()


def _commit() -> str:
    from solidrec.machine import git_commit

    commit = git_commit(ROOT)
    if commit is None:
        return "unknown"
    return commit.replace(" + changes", " (with uncommitted changes)")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def render(report: dict[str, Any]) -> str:
    h = report["header"]
    k = K
    select = h.get("ours_select", f"ndcg@{K}")
    select_what = "full ranking" if select.startswith("full_") else "sampled 1 + 99"
    lines = [
        f"## RecBole beside solidrec on the same split "
        f"({h['dataset'].replace(str(ROOT) + os.sep, '')})",
        "",
        f"CPU: {h['cpu']} (1 thread per run); date {h['date']}; commit {h['commit']}; "
        f"RecBole {h['recbole']}; torch {h['torch_recbole']} (RecBole's venv), "
        f"{h['torch_ours']} (ours); numpy {h['numpy_recbole']} (RecBole's), "
        f"{h['numpy_ours']} (ours); python {h['python']}. Load average before/after: "
        f"{h['loadavg_before']} / {h['loadavg_after']}. Total {h['total_min']:.1f} min"
        + (" (smoke run: 2 epochs, numbers meaningless)." if h["smoke"] else ".")
        + " Generated by `make -f research.mk recbole` (`benchmarks/recbole_compare.py`; "
        "do not edit).",
        "",
        f"Split: {h['split']['users']:,} users, {h['split']['items']:,} items, "
        f"{h['split']['interactions']:,} interactions; train/valid/test "
        f"{h['split']['train_rows']:,}/{h['split']['valid_rows']:,}/"
        f"{h['split']['test_rows']:,} targets, last {h['split']['history_len']} items as "
        "history; identical in both libraries (checked row by row). Test split, each "
        "run's best validation epoch; epochs: trained (best, 1 = the first).",
        "",
        f"| library | backbone | evaluation | full NDCG@{k} | full Recall@{k} | "
        f"sampled NDCG@{k} | sampled Recall@{k} | s / epoch | epochs | run (min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['library']} | {r['backbone']} | {r['evaluation']} | "
            f"{_fmt(r['full_ndcg'])} | {_fmt(r['full_recall'])} | {_fmt(r['sampled_ndcg'])} | "
            f"{_fmt(r['sampled_recall'])} | {_fmt(r['s_per_epoch'], 2)} | {r['epochs']} | "
            f"{_fmt(r['wall_min'], 1)} |"
        )
    lines += [
        "",
        "Evaluations: *RecBole's own*: full = RecBole's `mode: full` (history items kept "
        f"in the ranking, ties in topk order), sampled = `mode: uni{UNI_NEGATIVES}` "
        f"(1 + {UNI_NEGATIVES} negatives drawn by RecBole, the same checkpoint "
        "re-evaluated). *ours on RecBole's model*: RecBole's trained model scored by our "
        "protocol: full ranking with the user's earlier items left out and ties counted "
        f"against the target, sampled = our exact 1 + {h['split']['sampled_negatives_ours']} "
        "candidates. *ours*: `solidrec train`'s `metrics.json` (the same protocol). "
        "s / epoch: training only; run (min): the whole run, validation each epoch, test "
        "and loading included (RecBole's: both datasets, the three test evaluations).",
        "",
        "RecBole ran with `numpy<2` (its `Config` assigns `np.float = np.float_`), a no-op "
        "`torch.utils.tensorboard` (not installed), `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` "
        "(torch >= 2.6 refuses its checkpoints otherwise) and autograd anomaly detection "
        "switched off again (importing its models switches it on, from SINE's module: "
        "2.7x slower SASRec epochs).",
        "",
        "Settings (both libraries): "
        + "; ".join(
            f"{b}: lr {s['lr']:.6g}, weight decay {s['weight_decay']:g}, "
            f"{s['histories_per_step']} histories per step (our train.batch_size "
            f"{s['batch_size']} // {1 + h['split']['neg_train']}), dropout ours "
            f"{s['dropout']:g}{' (unused by our GRU4Rec)' if b == 'gru4rec' else ''} / "
            f"RecBole {s['recbole_dropout']:g}"
            for b, s in report["settings"].items()
        )
        + f"; dim 32; up to {h['epochs']} epochs, patience {PATIENCE} "
        f"(RecBole stopping_step {PATIENCE - 1}); full softmax cross-entropy; Adam. "
        "Best epoch selected on validation NDCG@10: RecBole's own full ranking; ours "
        f"`train.select_metric={select}` ({select_what}).",
        "",
        "Protocol differences that remain:",
        "",
        *[f"- {d}" for d in DIFFERENCES],
        "",
        "Rerun: `make -f research.mk recbole` (creates `.venv-recbole`, RecBole's own "
        "virtualenv), or "
        "`.venv/bin/python benchmarks/recbole_compare.py --help`; every step is in that "
        "file's docstring.",
    ]
    return "\n".join(lines) + "\n"


def _row(lib: str, backbone: str, evaluation: str, m: dict[str, Any], run: dict) -> dict:
    return {
        "library": lib,
        "backbone": backbone,
        "evaluation": evaluation,
        "full_ndcg": m["full"].get(f"ndcg@{K}"),
        "full_recall": m["full"].get(f"recall@{K}"),
        "sampled_ndcg": m["sampled"].get(f"ndcg@{K}"),
        "sampled_recall": m["sampled"].get(f"recall@{K}"),
        "s_per_epoch": run["s_per_epoch"],
        "epochs": f"{run['epochs']} ({run['best_epoch']})",
        "wall_min": run["wall_s"] / 60,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="RecBole's SASRec/GRU4Rec beside ours on the same split (docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--data", default="runs/data/scientific", help="prepared dataset dir")
    ap.add_argument(
        "--work",
        default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "recbole_compare"),
        help="scratch dir: atomic files, RecBole and our run dirs (a new run-* per call)",
    )
    ap.add_argument(
        "--backbones", nargs="+", default=["sasrec", "gru4rec"], choices=sorted(SETTINGS)
    )
    ap.add_argument("--epochs", type=int, default=60, help="max epochs (both libraries)")
    ap.add_argument("--out", default=None, help="write PREFIX.md and PREFIX.json")
    ap.add_argument("--smoke", action="store_true", help="2 epochs: check the pipeline")
    ap.add_argument(
        "--ours-select",
        default=f"ndcg@{K}",
        choices=[f"ndcg@{K}", f"full_ndcg@{K}"],
        help="our train.select_metric: sampled (the strong baselines') or full NDCG@10",
    )
    ap.add_argument(
        "--ours-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="train ours once more per backbone with these keys set (one more row), e.g. "
        "model.head_layers=0",
    )
    ap.add_argument(
        "--render",
        default=None,
        metavar="PREFIX",
        help="only rewrite PREFIX.md from PREFIX.json (a finished run), with this file's text",
    )
    ap.add_argument(
        "--recbole-python",
        default=str(ROOT / ".venv-recbole" / "bin" / "python"),
        help="interpreter of RecBole's virtualenv",
    )
    ap.add_argument(
        "--solidrec",
        default=str(Path(sys.executable).parent / "solidrec"),
        help="our CLI",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(Path(args.child))
    if args.render:
        prefix = Path(args.render)
        report = json.loads(prefix.with_suffix(".json").read_text())
        report["differences"] = DIFFERENCES
        report["header"].setdefault("ours_select", f"ndcg@{K}")  # JSON before the option
        md = render(report)
        print(md)
        prefix.with_suffix(".md").write_text(md)
        prefix.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        return 0

    import numpy as np
    import torch
    from solidrec.data.prepared import load_prepared

    epochs = 2 if args.smoke else args.epochs
    # Absolute: the children run in other folders. Not resolve(): a venv's python is a
    # symlink to the base interpreter, which would leave the venv.
    py = Path(args.recbole_python).absolute()
    if not py.exists():
        raise SystemExit(
            f"{py} not found: run `make -f research.mk recbole` (it creates .venv-recbole)"
        )
    solidrec = Path(args.solidrec)
    if not solidrec.exists():
        found = shutil.which("solidrec")
        if not found:
            raise SystemExit(f"{solidrec} not found")
        solidrec = Path(found)
    t_start = time.perf_counter()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    data_dir = Path(args.data).resolve()
    data = load_prepared(data_dir)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run_root = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    run_root.mkdir()
    _log(f"exporting {data_dir} to {run_root}")
    atomic, name, npz, split = export(data, run_root)
    _log(
        f"split rebuilt and checked: {split['users']} users, {split['interactions']} "
        f"interactions, train/valid/test {split['train_rows']}/{split['valid_rows']}/"
        f"{split['test_rows']}"
    )
    rows, runs, settings = [], {}, {}
    for b in args.backbones:
        rdir = run_root / f"recbole-{b}"
        cfg = recbole_config(b, data, atomic, rdir, epochs)
        rb = run_recbole(py, b, cfg, name, npz, rdir)
        rb["config"] = cfg
        _log(
            f"RecBole {b}: {rb['epochs']} epochs, {rb['s_per_epoch']:.2f} s/epoch, "
            f"test full ndcg@10 {rb['recbole']['full'][f'ndcg@{K}']:.4f}"
        )
        ours = run_ours(solidrec, data_dir, b, run_root / f"ours-{b}", epochs, args.ours_select)
        _log(
            f"ours {b}: {ours['epochs']} epochs, {ours['s_per_epoch']:.2f} s/epoch, "
            f"test full ndcg@10 {ours['full'][f'ndcg@{K}']:.4f}"
        )
        runs[b] = {"recbole": rb, "ours": ours}
        if args.ours_set:
            runs[b]["ours_set"] = run_ours(
                solidrec, data_dir, b, run_root / f"ours-{b}-set", epochs, args.ours_select,
                args.ours_set,
            )  # fmt: skip
        settings[b] = {
            **SETTINGS[b],
            "histories_per_step": cfg["train_batch_size"],
            "recbole_dropout": cfg.get("dropout_prob", cfg.get("hidden_dropout_prob")),
        }
        rows.append(_row("RecBole", b, "RecBole's own", rb["recbole"], rb))
        rows.append(_row("RecBole", b, "ours on RecBole's model", rb["our_protocol"], rb))
        rows.append(_row("solidrec", b, "ours", ours, ours))
        if args.ours_set:
            extra = runs[b]["ours_set"]
            rows.append(_row(f"solidrec, {' '.join(args.ours_set)}", b, "ours", extra, extra))
    first = next(iter(runs.values()))["recbole"] if runs else {}
    header = {
        "dataset": f"{name}, {data_dir}",
        "cpu": _cpu_model(),
        "date": _dt.date.today().isoformat(),
        "commit": _commit(),
        "recbole": first.get("versions", {}).get("recbole"),
        "torch_recbole": first.get("versions", {}).get("torch"),
        "numpy_recbole": first.get("versions", {}).get("numpy"),
        "torch_ours": torch.__version__,
        "numpy_ours": np.__version__,
        "python": platform.python_version(),
        "loadavg_before": load_before,
        "loadavg_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "total_min": (time.perf_counter() - t_start) / 60,
        "smoke": args.smoke,
        "epochs": epochs,
        "ours_select": args.ours_select,
        "ours_set": args.ours_set,
        "split": split,
        "work": str(run_root),
    }
    report = {
        "header": header,
        "rows": rows,
        "settings": settings,
        "runs": runs,
        "differences": DIFFERENCES,
    }
    md = render(report)
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(md)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        _log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


# --------------------------------------------------------------------------------------
# Child side (.venv-recbole): stdlib, numpy, torch and recbole only.
# --------------------------------------------------------------------------------------


def _stub_tensorboard() -> None:
    """A no-op ``torch.utils.tensorboard`` so RecBole imports without the package."""
    import types

    import torch.utils

    class SummaryWriter:  # noqa: D401 - a stand-in
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    mod = types.ModuleType("torch.utils.tensorboard")
    mod.SummaryWriter = SummaryWriter  # type: ignore[attr-defined]
    sys.modules["torch.utils.tensorboard"] = mod
    torch.utils.tensorboard = mod  # type: ignore[attr-defined]


def _metrics_from_ranks(ranks: Any) -> dict[str, float]:
    import numpy as np

    r = np.asarray(ranks, np.float64)
    hit = r <= K
    return {
        f"ndcg@{K}": float(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean()),
        f"recall@{K}": float(hit.mean()),
    }


def child_main(spec_path: Path) -> int:
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    spec = json.loads(spec_path.read_text())
    import numpy as np
    import torch

    torch.set_num_threads(1)
    _stub_tensorboard()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    cfg = spec["config"]
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(1)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    ev = np.load(spec["eval_npz"])
    n_items, length = int(ev["num_items"]), int(ev["history_len"])
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    tok2id = dataset.field2token_id[iid]
    missing = [i for i in range(1, n_items + 1) if str(i) not in tok2id]
    if missing:
        raise SystemExit(f"{len(missing)} items missing from RecBole's vocabulary")
    our2rb = np.zeros(n_items + 1, np.int64)
    our2rb[1:] = [tok2id[str(i)] for i in range(1, n_items + 1)]
    rb2our = np.zeros(dataset.item_num, np.int64)
    rb2our[our2rb[1:]] = np.arange(1, n_items + 1)
    user_tokens = dataset.field2id_token[uid]
    seq_field = iid + config["LIST_SUFFIX"]
    len_field = config["ITEM_LIST_LENGTH_FIELD"]

    # The split as RecBole built it, against ours: (user, target, left-padded history).
    def rows_of(ds: Any) -> Any:
        f = ds.inter_feat
        users = np.array([int(user_tokens[x]) for x in f[uid].numpy()], np.int64)
        target = rb2our[f[iid].numpy()]
        seq, lens = f[seq_field].numpy(), f[len_field].numpy()
        hist = np.zeros((len(users), length), np.int64)
        for r in range(len(users)):
            n = int(lens[r])
            if n:
                hist[r, length - n :] = rb2our[seq[r, :n]]
        return np.column_stack([users, target, hist])

    def ours(prefix: str) -> Any:
        return np.column_stack([ev[f"{prefix}_user"], ev[f"{prefix}_target"], ev[f"{prefix}_hist"]])

    def sort_rows(a: Any) -> Any:
        return a[np.lexsort(a.T[::-1])]

    test_target = ev["test_candidates"][:, 0]
    ours_rows = {
        "train": ours("train"),
        "valid": ours("valid"),
        "test": np.column_stack([ev["test_user"], test_target, ev["test_hist"]]),
    }
    split_check = {}
    for name, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        got, want = sort_rows(rows_of(loader._dataset)), sort_rows(ours_rows[name])
        if got.shape != want.shape or not np.array_equal(got, want):
            diff = (
                "row counts differ"
                if got.shape != want.shape
                else f"{int((got != want).any(1).sum())} rows differ"
            )
            raise SystemExit(
                f"RecBole's {name} split differs from ours ({got.shape[0]} vs "
                f"{want.shape[0]} rows; {diff}): the export does not reproduce our split"
            )
        split_check[name] = int(got.shape[0])
    print(f"split check passed: {split_check}", flush=True)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    # Importing RecBole's sequential models runs SINE's module-level
    # torch.autograd.set_detect_anomaly(True): every autograd op then records a Python
    # stack trace (SASRec epochs 2.7x slower here). Nothing here needs it.
    anomaly_on_import = bool(torch.is_anomaly_enabled())
    torch.autograd.set_detect_anomaly(False)
    epoch_seconds: list[float] = []
    valid_scores: list[float] = []
    train_epoch = trainer._train_epoch

    def timed_train_epoch(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - t0)
        return out

    trainer._train_epoch = timed_train_epoch
    t0 = time.perf_counter()
    trainer.fit(
        train_data,
        valid_data,
        saved=True,
        show_progress=False,
        callback_fn=lambda epoch, score: valid_scores.append(float(score)),
    )
    fit_s = time.perf_counter() - t0
    best, best_epoch = -math.inf, 0
    for i, s in enumerate(valid_scores):  # RecBole's rule: an equal score updates
        if s >= best:
            best, best_epoch = s, i + 1
    full = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    # The same checkpoint under RecBole's sampled mode: a second config whose only change
    # is the evaluation mode, so RecBole builds a NegSampleEvalDataLoader for the test.
    cfg_uni = json.loads(json.dumps(cfg))
    cfg_uni["eval_args"]["mode"] = f"uni{UNI_NEGATIVES}"
    config_uni = Config(model=spec["model"], dataset=spec["dataset"], config_dict=cfg_uni)
    init_seed(config_uni["seed"], config_uni["reproducibility"])
    torch.set_num_threads(1)
    dataset_uni = create_dataset(config_uni)
    if list(dataset_uni.field2id_token[iid]) != list(dataset.field2id_token[iid]):
        raise SystemExit("the uni100 dataset numbers items differently")
    _, _, test_uni = data_preparation(config_uni, dataset_uni)
    trainer_uni = get_trainer(config_uni["MODEL_TYPE"], config_uni["model"])(config_uni, model)
    uni = trainer_uni.evaluate(
        test_uni, load_best_model=True, model_file=trainer.saved_model_file, show_progress=False
    )

    # Our protocol on RecBole's (best) model: our test histories and candidates.
    model.eval()
    hist = ev["test_hist"]
    cands = ev["test_candidates"]
    indptr, seen = ev["seen_indptr"], ev["seen_items"]
    users = ev["test_user"]
    full_ranks, sampled_ranks = [], []
    with torch.no_grad():
        for i in range(0, len(users), 1024):
            h = hist[i : i + 1024]
            lens = (h > 0).sum(1)
            # Left-padded (ours) to right-padded (RecBole): the items first, in order.
            front = np.argsort(h == 0, axis=1, kind="stable")
            seq = our2rb[np.take_along_axis(h, front, 1)]
            inter = Interaction(
                {model.ITEM_SEQ: torch.from_numpy(seq), model.ITEM_SEQ_LEN: torch.from_numpy(lens)}
            )
            scores = model.full_sort_predict(inter.to(model.device)).float().cpu()
            s = scores[:, torch.from_numpy(our2rb[1:])]  # (B, N): column i - 1 is item i
            c = torch.from_numpy(cands[i : i + 1024] - 1)
            tgt = c[:, :1]
            st = s.gather(1, tgt)
            ge = s >= st
            b = len(h)
            for r in range(b):
                u = int(users[i + r])
                ex = seen[indptr[u] : indptr[u + 1]] - 1
                ge[r, torch.from_numpy(ex)] = False
            ge[torch.arange(b), tgt[:, 0]] = False
            full_ranks.append((1 + ge.sum(1)).numpy())
            cs = s.gather(1, c)
            sampled_ranks.append((1 + (cs[:, 1:] >= cs[:, :1]).sum(1)).numpy())
    ours_full = _metrics_from_ranks(np.concatenate(full_ranks))
    ours_sampled = _metrics_from_ranks(np.concatenate(sampled_ranks))

    import pandas

    result = {
        "versions": {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pandas.__version__,
        },
        "split_check": split_check,
        "anomaly_detection_on_import": anomaly_on_import,
        "epochs": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "s_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else float("nan"),
        "fit_s": fit_s,
        "best_epoch": best_epoch,
        f"best_valid_ndcg@{K}": best,
        "valid_scores": valid_scores,
        "recbole": {
            "full": {k: float(v) for k, v in full.items()},
            "sampled": {k: float(v) for k, v in uni.items()},
        },
        "our_protocol": {"full": ours_full, "sampled": ours_sampled},
        "params": int(sum(p.numel() for p in model.parameters())),
        "checkpoint": trainer.saved_model_file,
    }
    Path(spec["out"]).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("recbole", "our_protocol", "epochs")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
