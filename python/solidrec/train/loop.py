"""Algorithm 1 as a resumable, optionally data-parallel training loop.

Stage 1 trains Eq. 12 (or the single objective of a one-stage mode) with early stopping
on the *validation* AUC; for ``solid=full`` the best stage-1 weights are reloaded, the
codebook is initialised from the semantic encoder's table (the metacode) and stage 2
trains Eq. 13 the same way. The test split is evaluated once, with the best final-stage
weights. All selection uses validation only.

Determinism: the data order of (stage, epoch) is a permutation drawn from a generator
seeded by (seed, stage, epoch), so the data-order state is just (stage, epoch, step);
checkpoints also carry model, optimizer and torch RNG state. Under ``torchrun`` every
rank draws the same global batch and takes a contiguous slice; the loss is scaled so
DDP's gradient average equals the single-process gradient of the whole batch.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from solidrec.budget import check_fits, model_bytes
from solidrec.config import (
    RESUME_FREE_KEYS,
    RESUME_SCHEDULE_KEYS,
    RunConfig,
    config_differences,
    flat_config,
    resolve_device,
    resolve_item_optimizer,
)
from solidrec.data.io import atomic_write, clean_stale_temps, write_json
from solidrec.data.prepared import SEMANTIC_WARNING, PreparedDataset
from solidrec.evaluate import (
    evaluate_split,
    evaluate_with_cost,
    seen_items,
    write_ranks,
)
from solidrec.machine import provenance
from solidrec.metrics import PROTOCOLS, metric_keys, protocols_of
from solidrec.models import build_model, run_dataset
from solidrec.runs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    previous_path,
    save_checkpoint,
)
from solidrec.runs.layout import RunDir
from solidrec.runs.lock import RunLock, RunLockedError
from solidrec.runs.model_dir import save_model_dir
from solidrec.train.losses import LossTerms, make_loss
from solidrec.train.optim import RunOptimizer


class TrainingDivergedError(RuntimeError):
    """The training loss stayed non-finite for more steps than allowed."""


class TrainingInterrupted(Exception):  # noqa: N818 (a stop the user asked for, not an error)
    """SIGINT or SIGTERM stopped training after a step; the run is saved at that step."""

    def __init__(self, signum: int, state: TrainState, checkpoint: Path, out: Path):
        self.signum, self.checkpoint, self.out = signum, checkpoint, out
        self.where = state.where
        name = signal.Signals(signum).name
        super().__init__(
            f"{name}: stopped at {self.where}, saved in {checkpoint}; continue with: "
            f"{self.resume_command}"
        )

    @property
    def resume_command(self) -> str:
        return f"solidrec train --resume --out {shlex.quote(str(self.out))}"

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + self.signum


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1); a single
    process trains on ``device`` (``auto``: CUDA when available)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device))
    # Under torchrun each rank takes its LOCAL_RANK's GPU; --device cpu keeps them on CPU.
    cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cpu")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return DistInfo(rank, dist.get_world_size(), device)


def _epoch_order(seed: int, stage: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + stage * 10_007 + epoch)
    return torch.randperm(n, generator=g)


@dataclass
class TrainState:
    """Where training is: stage, epoch and step of the schedule, early stopping, the
    epoch's running loss, the validation log. Every checkpoint carries it as a plain
    dict (:meth:`to_dict`), so a resumed run continues at the same step."""

    stage: int = 1
    epoch: int = 0
    step: int = 0  # steps done in this epoch
    global_step: int = 0
    best: float = -math.inf  # best validation score of this stage
    best_epoch: int = -1
    bad: int = 0  # validations since the best one (early stopping)
    loss_sum: float = 0.0  # this epoch's finite steps: summed mean loss, codebook loss
    aux_sum: float = 0.0
    loss_n: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)  # log.csv's rows
    finished: bool = False
    nonfinite: int = 0  # consecutive steps with a non-finite loss
    config_changes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        """A checkpoint's state; fields it predates take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    @property
    def where(self) -> str:
        return f"stage {self.stage} epoch {self.epoch} step {self.step}"

    def start_epoch(self) -> None:
        """Reset what an epoch accumulates (the loss means of its log row)."""
        self.step, self.loss_sum, self.aux_sum, self.loss_n = 0, 0.0, 0.0, 0

    def start_stage(self, stage: int) -> None:
        """Stage ``stage`` from its first epoch, early stopping reset."""
        self.stage, self.epoch = stage, 0
        self.best, self.best_epoch, self.bad = -math.inf, -1, 0
        self.start_epoch()


def _check_sizes(cfg: RunConfig, data: PreparedDataset) -> None:
    """Refuse, naming the key, a model or a step that cannot fit in memory here."""
    m, t = cfg.model, cfg.train
    need = model_bytes(data.num_items, data.num_semantic, m.dim, m.hidden, m.cond_dim, m.layers)
    check_fits(need, "model.dim", m.dim, f"the model ({data.num_items:,} items) to train")
    if t.num_negatives:
        histories = max(1, t.batch_size // data.train.item.shape[1])
        # The drawn negatives' embeddings and their gradients, per history or shared.
        rows = t.num_negatives * (1 if t.shared_negatives else histories)
        check_fits(
            4.0 * rows * m.dim * 4,
            "train.num_negatives",
            t.num_negatives,
            f"a step ({histories} histories x {m.dim} dims)",
        )


def recipe_line(cfg: RunConfig) -> str:
    """The startup line naming the run's recipe and the values its keys have."""
    t = cfg.train
    values = cfg.recipe_values()
    if not values:
        return f"solidrec train: train.loss={t.loss}, recipe {t.recipe} (the paper's settings)"
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    return (
        f"solidrec train: train.loss={t.loss} with recipe {t.recipe}: {shown} (a key you "
        "set keeps your value; --recipe paper for the paper's settings)"
    )


def _compatible(
    ck: dict[str, Any], cfg: RunConfig, data: PreparedDataset, allow: bool
) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume whose config differs from the run's (schedule keys only with
    ``allow``) or whose data is another prepared dataset (fingerprint); return every
    difference, the accepted ones included."""
    diff = config_differences(ck["config"], cfg)
    hard = {k: v for k, v in diff.items() if k not in RESUME_FREE_KEYS | RESUME_SCHEDULE_KEYS}
    soft = {k: v for k, v in diff.items() if k in RESUME_SCHEDULE_KEYS}

    def fmt(d: dict[str, tuple[Any, Any]]) -> str:
        return ", ".join(f"{k}: {a!r} (run) vs {b!r} (now)" for k, (a, b) in d.items())

    if hard:
        part = "model" if any(k.startswith("model.") for k in hard) else "training"
        raise CheckpointError(
            f"--resume: the run was written for a different {part} config: {fmt(hard)}. "
            "Resume with the run's config (RUNDIR/config.yaml) or train into a new --out"
        )
    if soft and not allow:
        raise CheckpointError(
            f"--resume: schedule differs from the run's: {fmt(soft)}. Pass "
            "--allow-schedule-change to apply it, or drop the change"
        )
    saved_fp, fp = ck.get("data_fingerprint"), data.manifest.get("fingerprint")
    if saved_fp and fp and saved_fp != fp:
        raise CheckpointError(
            f"--resume: {data.path} is not the prepared dataset the run was trained on "
            f"(fingerprint {fp[:12]} vs {saved_fp[:12]})"
        )
    return diff


class Trainer:
    """Runs (or resumes) one training run into ``cfg.out``."""

    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        allow_schedule_change: bool = False,
        quiet: bool = False,
    ) -> None:
        self.cfg, self.resume, self.allow_schedule_change = cfg, resume, allow_schedule_change
        self.quiet = quiet
        # The signal (SIGINT/SIGTERM) that asked training to stop after the current step;
        # under torchrun, whether any rank had one as of the last reduction.
        self._stop_signal: int | None = None
        self._stop_synced = False
        # What full ranking leaves out, per split (_seen): computed once, on first use.
        self._seen_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.dist = setup_distributed(cfg.train.device)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        # Absolute in config.yaml, so the run's commands work from any directory.
        cfg.data, cfg.out = str(Path(cfg.data).resolve()), str(Path(cfg.out).resolve())
        self.out = Path(cfg.out)
        self.paths = RunDir(self.out)
        self.data = run_dataset(cfg)
        _check_sizes(cfg, self.data)
        self.model = build_model(cfg, self.data).to(self.dist.device)
        self.state = TrainState()
        self.optimizer = self._optimizer()
        self.train_model: torch.nn.Module = self.model
        self.writer = None
        self.loss = make_loss(cfg.train, self.data.num_items, self.data.train.item[:, 0])

    def _optimizer(self, kind: str | None = None) -> RunOptimizer:
        """The run's optimizer; ``kind`` overrides the item optimizer (a resumed run keeps
        the one its checkpoint was written with)."""
        t = self.cfg.train
        if kind is None:
            kind = resolve_item_optimizer(t.item_optimizer, self.data.num_items)
            if self.dist.world > 1 and t.item_optimizer == "auto":
                kind = "dense"  # sparse table gradients are not for DDP (below)
        if self.dist.world > 1 and kind != "dense":
            raise ValueError(
                f"train.item_optimizer={t.item_optimizer} is not supported under torchrun "
                "yet (DDP would all-reduce the sparse table gradients densely); use "
                "train.item_optimizer=dense or one process"
            )
        return RunOptimizer(self.model, t, kind)

    def _step_generator(self, step: int) -> torch.Generator:
        """The negatives' generator of this step, seeded by its position in the
        schedule: a resumed run draws the same negatives."""
        t, s, d = self.cfg.train, self.state, self.dist
        return torch.Generator().manual_seed(
            hash((t.seed, s.stage, s.epoch, step, d.rank)) & 0x7FFF_FFFF_FFFF_FFFF
        )

    def _batch_loss(
        self, hist: torch.Tensor, item: torch.Tensor, label: torch.Tensor, step: int
    ) -> LossTerms:
        """The loss of one local batch: histories (B, L) with their prepared candidates
        (B, C) and labels (B, C)."""
        return self.loss(
            self.train_model, self.model, hist, item, label, lambda: self._step_generator(step)
        )

    # -- checkpoints ---------------------------------------------------------------
    def _save_last(self) -> None:
        if not self.dist.main:
            return
        save_checkpoint(
            self.paths.last,
            {
                "config": self.cfg.to_dict(),
                "data_fingerprint": self.data.manifest.get("fingerprint", ""),
                "model": self.model.state_dict(),
                **self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "state": self.state.to_dict(),
            },
            keep_previous=True,
        )

    def _save_best(self) -> None:
        if self.dist.main:
            save_checkpoint(
                self.paths.best(self.state.stage),
                {
                    "config": self.cfg.to_dict(),
                    "data_fingerprint": self.data.manifest.get("fingerprint", ""),
                    "model": self.model.state_dict(),
                    "state": self.state.to_dict(),
                },
            )

    def _barrier(self) -> None:
        if self.dist.world > 1:
            dist.barrier()

    def _load_best(self, stage: int) -> None:
        self._barrier()  # rank 0 has finished writing it
        ck = load_checkpoint(self.paths.best(stage))
        self.model.load_state_dict(ck["model"])

    def _restore(self) -> tuple[bool, dict[str, tuple[Any, Any]]]:
        """Load last.pt (or the previous one if it is corrupt) when resuming; returns
        (resumed, the accepted keys in which the config differs from the run's)."""
        last = self.paths.last
        if not last.exists() and not previous_path(last).exists():
            if self.resume and self.dist.main and self.paths.config.exists():
                print(
                    f"solidrec train: no checkpoint in {self.paths.checkpoints}; starting from "
                    "scratch"
                )
            return False, {}
        if not self.resume:
            raise CheckpointError(
                f"{self.out} already holds a run ({self.paths.last.relative_to(self.out)}); "
                "pass --resume or a new --out"
            )
        found = load_latest(last)
        assert found is not None
        ck, used, note = found
        if note and self.dist.main:
            print(f"solidrec train: warning: {note}", file=sys.stderr)
            if used != last and last.exists():
                # Else the next save would rotate the corrupt file over the good one.
                bad = last.with_name("last.bad.pt")
                os.replace(last, bad)
                print(f"solidrec train: kept the corrupt file as {bad.name}", file=sys.stderr)
        changed = _compatible(ck, self.cfg, self.data, self.allow_schedule_change)
        try:
            self.model.load_state_dict(ck["model"])
            # No row-optimizer state (a dense run, or one from before train.item_optimizer):
            # the run trains its table densely.
            kind = None if ck.get("item_optimizer") is not None else "dense"
            self.optimizer = self._optimizer(kind)
            self.optimizer.load_state_dict(
                self.model.optimizer_state_for(ck["model"], ck["optimizer"]),
                ck.get("item_optimizer"),
            )
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{used}: weights do not fit this model: {e}") from e
        self.state = TrainState.from_dict(ck["state"])
        torch.set_rng_state(ck["rng"])
        return True, changed

    # -- logging -------------------------------------------------------------------
    def _write_log(self) -> None:
        if not self.dist.main or not self.state.log:
            return
        rows = self.state.log
        buf = io.StringIO(newline="")
        # Runs resumed from older versions have rows without the newer columns.
        names = list(dict.fromkeys(k for row in rows for k in row))
        w = csv.DictWriter(buf, fieldnames=names)
        w.writeheader()
        w.writerows(rows)
        atomic_write(self.paths.log_csv, buf.getvalue())

    def _tensorboard(self, scalars: dict[str, float], flush: bool = False) -> None:
        """Add ``{"group/name": value}`` at the current global step to RUNDIR/tb."""
        if not self.dist.main:
            return
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                self.writer = False
                return
            self.writer = SummaryWriter(
                str(self.paths.tensorboard), purge_step=self.state.global_step
            )
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, self.state.global_step)
            if flush:
                self.writer.flush()

    def _tensorboard_hparams(self, metrics: dict[str, Any]) -> None:
        """The run's config keys beside its test metrics (TensorBoard's HPARAMS tab)."""
        if not self.writer:
            return
        hp = {
            k: v
            for k, v in flat_config(self.cfg.to_dict()).items()
            if k not in RESUME_FREE_KEYS and isinstance(v, (int, float, str, bool))
        }
        self.writer.add_hparams(
            hp,
            {f"hparam/test_{k}": float(metrics[k]) for k in metric_keys(self._test_protocol)},
            run_name=".",
        )

    # -- the loop ----------------------------------------------------------------------
    def _can_train(self) -> bool:
        """Whether the schedule leaves an epoch to train: this stage or a later one."""
        return not self._stage_over() or self.state.stage < self.model.mode.stages

    def _stage_over(self) -> bool:
        t, s = self.cfg.train, self.state
        max_ep = t.stage2_max_epochs if s.stage == 2 and t.stage2_max_epochs > 0 else t.max_epochs
        return s.epoch >= max_ep or s.bad >= t.patience

    def _next_stage(self) -> None:
        """Algorithm 1: best stage-1 weights, stage 2 (codebook ← metacode, by default),
        fresh Adam."""
        self._load_best(1)
        self.model.set_stage(2, seed=self.cfg.train.seed)  # initialises the codebook
        self.optimizer = self._optimizer(self.optimizer.kind)  # the run keeps its kind
        self.state.start_stage(2)
        self._save_last()

    def _train_epoch(self) -> None:
        t, s, d = self.cfg.train, self.state, self.dist
        tr = self.data.train
        n, c = tr.item.shape
        per_step = self._histories_per_step()
        order = _epoch_order(t.seed, s.stage, s.epoch, n)
        steps = self._steps()
        hist, item = torch.from_numpy(tr.hist), torch.from_numpy(tr.item)
        label = torch.from_numpy(tr.label).float()
        bar = tqdm(
            total=steps,
            initial=s.step,
            # A bar only on a terminal: piped, it would print one fragment per update.
            disable=not (t.progress and d.main and not self.quiet and sys.stderr.isatty()),
            desc=f"stage {s.stage} epoch {s.epoch}",
            leave=False,
        )
        t0 = time.perf_counter()
        for step in range(s.step, steps):
            idx = order[step * per_step : (step + 1) * per_step]
            if len(idx) >= d.world:
                local = idx.tensor_split(d.world)[d.rank]
                summed, per_history, aux = self._batch_loss(
                    hist[local].to(d.device),
                    item[local].to(d.device),
                    label[local].to(d.device),
                    step,
                )
                # The global batch's count of what `summed` sums (samples for BCE,
                # histories for the softmax losses).
                total = per_history * len(idx)
                # Sum over the local slice / the global batch's count x world: DDP's
                # average of these gradients is the gradient of the global batch's mean.
                loss = summed / total * d.world + aux
                self.optimizer.zero_grad()
                loss.backward()
                value, aux_value, finite = self._loss_value(loss, summed, aux)
                if finite:
                    self.optimizer.step()
                    mean = value / total * d.world
                    s.loss_sum += mean
                    s.aux_sum += aux_value
                    s.loss_n += 1
                    s.nonfinite = 0
                    scalars = {"train/loss": mean}
                    if self.model.codebook is not None:
                        scalars["train/codebook_loss"] = aux_value
                    self._tensorboard(scalars)
                else:
                    self._nonfinite_step()
            s.step = step + 1
            s.global_step += 1
            bar.update(1)
            if self._stopping():
                bar.close()
                self._interrupt()
            if t.ckpt_every_steps > 0 and s.step % t.ckpt_every_steps == 0 and s.step < steps:
                self._save_last()
        bar.close()
        s.epoch_seconds.append(time.perf_counter() - t0)

    def _stopping(self, sync: bool = False) -> bool:
        """Whether a stop signal arrived (on any rank: every rank stops at the same
        step). Under torchrun a step's answer is what the step's all-reduce in
        :meth:`_loss_value` carried; ``sync`` reduces now (once per epoch)."""
        if self.dist.world == 1:
            return self._stop_signal is not None
        if sync:
            flag = torch.tensor([self._local_stop()], device=self.dist.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self._note_stop(flag.item())
        return self._stop_synced

    def _local_stop(self) -> float:
        return float(self._stop_signal or 0)

    def _note_stop(self, signum: float) -> None:
        """Record a stop some rank saw (the signal number reduced across ranks)."""
        if signum:
            self._stop_synced = True
            if self._stop_signal is None:
                self._stop_signal = int(signum)

    def _interrupt(self) -> None:
        """Save where training is and stop (:class:`TrainingInterrupted`)."""
        self._save_last()
        self._write_log()
        assert self._stop_signal is not None
        stop = TrainingInterrupted(self._stop_signal, self.state, self.paths.last, self.out)
        if self.dist.main:
            self._log_line(str(stop))  # the command prints it
        raise stop

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM: stop after the current step, saved; a second one abandons the
        step at once (KeyboardInterrupt; the last checkpoint stays). Only where signal
        handlers can be set (the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signums = (signal.SIGINT, signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum
            if self.dist.main:
                print(
                    f"\nsolidrec train: {signal.Signals(signum).name}: stopping after this step "
                    "and saving (again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )

        previous = {n: signal.signal(n, handler) for n in signums}
        try:
            yield
        finally:
            for n, h in previous.items():
                signal.signal(n, h)

    def _loss_value(
        self, loss: torch.Tensor, summed: torch.Tensor, aux: torch.Tensor
    ) -> tuple[float, float, bool]:
        """(the local batch's summed objective, codebook loss, whether the loss is finite
        on every rank) in one host sync."""
        flag = torch.isfinite(loss.detach()).to(torch.float64)
        parts = [summed.detach(), aux.detach(), flag]
        if self.dist.world > 1:
            # Every rank must skip the same steps, and stop at the same one: the stop
            # signal rides the same reduction (MIN of its negation is MAX of it).
            both = torch.stack([flag, flag.new_tensor(-self._local_stop())])
            dist.all_reduce(both, op=dist.ReduceOp.MIN)
            parts[2:] = [both[0], -both[1]]
        value, aux_value, ok, *stop = torch.stack([x.to(torch.float64) for x in parts]).tolist()
        if stop:
            self._note_stop(stop[0])
        return value, aux_value, ok == 1.0

    def _nonfinite_step(self) -> None:
        """Skip the update; stop once more consecutive steps than
        ``train.nonfinite_patience`` had a non-finite loss."""
        s, t = self.state, self.cfg.train
        s.nonfinite += 1
        if s.nonfinite > t.nonfinite_patience:
            where = " on at least one rank" if self.dist.world > 1 else ""
            raise TrainingDivergedError(
                f"{s.where}: training loss is "
                f"not finite{where} for {s.nonfinite} step(s) in a row "
                f"(train.nonfinite_patience={t.nonfinite_patience}); stopped with "
                f"train.lr={t.lr}. The last checkpoint before it, {self.paths.last}, "
                "is kept; lower train.lr and train into a new --out"
            )

    @property
    def _test_protocol(self) -> str:
        t = self.cfg.train
        return t.test_protocol or t.eval_protocol

    def _seen(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """What full ranking leaves out on ``split`` (computed once), or None when the
        split is evaluated under the sampled protocol only."""
        protocol = self._test_protocol if split == "test" else self.cfg.train.eval_protocol
        if "full" not in protocols_of(protocol):
            return None
        if split not in self._seen_cache:
            self._seen_cache[split] = seen_items(self.data, split)
        return self._seen_cache[split]

    def _end_epoch(self) -> None:
        t, s = self.cfg.train, self.state
        keys = metric_keys(t.eval_protocol)
        val = evaluate_split(
            self.model,
            self.data.valid,
            t.eval_batch_size,
            self.dist.device,
            t.eval_protocol,
            self._seen("valid"),
        )
        score = float(val[t.select_metric])
        if score > s.best + t.min_delta:
            s.best, s.best_epoch, s.bad = score, s.epoch, 0
            self._save_best()
        else:
            s.bad += 1
        row = {
            "stage": s.stage,
            "epoch": s.epoch,
            "step": s.global_step,
            "train_loss": s.loss_sum / max(s.loss_n, 1),
            "train_codebook_loss": s.aux_sum / max(s.loss_n, 1),
            **{f"valid_{k}": float(val[k]) for k in keys},
            "seconds": s.epoch_seconds[-1] if s.epoch_seconds else float("nan"),
        }
        s.log.append(row)
        s.epoch += 1
        s.start_epoch()
        self._save_last()
        self._write_log()
        scalars = {f"valid/{k}": float(val[k]) for k in keys}
        scalars.update({"epoch/train_loss": row["train_loss"], "epoch/seconds": row["seconds"]})
        if self.model.codebook is not None:
            scalars["epoch/train_codebook_loss"] = row["train_codebook_loss"]
        self._tensorboard(scalars, flush=True)
        shown = " ".join(
            f"{k} {row['valid_' + k]:.4f}"
            for k in ("auc", "uauc", "ndcg@10", "full_ndcg@10")
            if k in keys
        )
        self._say(
            f"stage {row['stage']} epoch {row['epoch']}: loss {row['train_loss']:.4f} "
            f"valid {shown} ({row['seconds']:.1f} s)"
        )

    def _say(self, line: str, always: bool = False) -> None:
        """One line on stderr (unless quiet and not ``always``; stdout carries the
        command's result) and, with the time, in RUNDIR/train.log, the run's own text
        log (rank 0 only)."""
        if not self.dist.main:
            return
        if always or not self.quiet:
            tqdm.write(line, file=sys.stderr)  # piped or not, bars or not
        self._log_line(line)

    def _log_line(self, line: str) -> None:
        """Append ``line``, timed, to RUNDIR/train.log (a log must not stop training)."""
        with contextlib.suppress(OSError), open(self.paths.text_log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def run(self) -> dict[str, Any]:
        """Train to the end (or resume), evaluate the test split once, write metrics.json.

        Rank 0 holds the run directory's lock (:class:`~solidrec.runs.lock.RunLock`)
        throughout, so a second process on the same ``--out`` stops at once.
        """
        lock = RunLock(self.out) if self.dist.main else None
        error: RunLockedError | None = None
        if lock is not None:
            try:
                lock.acquire()
            except RunLockedError as e:
                error = e
        if self.dist.world > 1:  # else the other ranks would wait in a collective
            ok = torch.tensor([0.0 if error else 1.0])
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if ok.item() == 0.0 and error is None:
                error = RunLockedError(f"{self.out} is in use by another process (see rank 0)")
        if error is not None:
            raise error
        try:
            with self._stop_on_signals():
                return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.dist.main:
            # Temporaries of a writer killed mid-write (it is not us: we hold the lock).
            for d in (self.out, self.paths.checkpoints):
                clean_stale_temps(d)
                # Older versions' names (.last.pt.tmp.PID, .log.csv.tmp): garbage too.
                for p in [*d.glob(".*.tmp"), *d.glob(".*.tmp.[0-9]*")]:
                    p.unlink(missing_ok=True)
        self._barrier()
        resumed, changed = self._restore()
        schedule = {k: v for k, v in changed.items() if k in RESUME_SCHEDULE_KEYS}
        if resumed and self.state.finished and self.paths.metrics.exists():
            if schedule and self._can_train():
                # An accepted longer schedule extends a finished run from its selected
                # weights (what _finish left in last.pt).
                self.state.finished = False
            else:
                if self.dist.main:
                    print(f"solidrec train: {self.out} is finished; nothing to do", file=sys.stderr)
                return json.loads(self.paths.metrics.read_text())
        if resumed and schedule:
            # The run's record of what changed where: log.csv's steps say what it trained.
            self.state.config_changes.append(
                {"global_step": self.state.global_step, "changes": schedule}
            )
            if self.dist.main:
                what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in schedule.items())
                self._say(f"solidrec train: resuming with {what}", always=True)
        if self.dist.main and (not resumed or changed):
            atomic_write(self.paths.config, cfg.to_yaml())
        if not resumed:
            self._say(recipe_line(cfg))
        warning = self.data.manifest.get("params", {}).get(SEMANTIC_WARNING)
        if warning and self.dist.main and not self.quiet and self.model.sem_emb is not None:
            # The mode reads the semantic sequence (SPG): say so before training on it.
            print(f"solidrec train: warning: {self.data.path}: {warning}", file=sys.stderr)
        if not resumed:  # a one-stage mode's codebook is initialised here
            self.model.set_stage(1, seed=cfg.train.seed)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Unused parameters are normal here: the codebook in stage 1, branch heads
            # that a mode does not use.
            self.train_model = DDP(self.model, find_unused_parameters=True)
        self.model.train()
        if not resumed:
            self._save_last()
        while not self.state.finished:
            if self._stage_over():
                if self.state.stage < self.model.mode.stages:
                    self._next_stage()
                    continue
                break
            if self.state.step == 0 or self.state.step < self._steps():
                self._train_epoch()
            self._end_epoch()
            if self._stopping(sync=True):  # the signal came during validation: saved
                self._interrupt()
        metrics = self._finish()
        if self.writer:
            self._tensorboard_hparams(metrics)
            self.writer.close()
        return metrics

    def _histories_per_step(self) -> int:
        """``train.batch_size`` counts (history, candidate) samples, as the paper's 1024:
        a step takes batch_size // (1 + neg_train) histories with all their candidates."""
        return max(1, self.cfg.train.batch_size // self.data.train.item.shape[1])

    def _steps(self) -> int:
        t = self.cfg.train
        steps = math.ceil(len(self.data.train.item) / self._histories_per_step())
        return min(steps, t.max_steps_per_epoch) if t.max_steps_per_epoch > 0 else steps

    def _finish(self) -> dict[str, Any]:
        s, t = self.state, self.cfg.train
        self._load_best(s.stage)
        test, test_cost, ranks = evaluate_with_cost(
            self.model,
            self.data.test,
            t.eval_batch_size,
            self.dist.device,
            self._test_protocol,
            self._seen("test"),
        )
        metrics: dict[str, Any] = {k: float(test[k]) for k in metric_keys(self._test_protocol)}
        metrics.update(
            {
                f"{k}_users": int(test[f"{k}_users"])
                for k in ("uauc", "full")
                if f"{k}_users" in test
            }
        )
        metrics.update(
            split="test",
            protocols={p: PROTOCOLS[p] for p in protocols_of(self._test_protocol)},
            best_epoch=int(s.best_epoch),
            stage=int(s.stage),
            **{f"best_valid_{t.select_metric}": float(s.best)},
        )
        if s.config_changes:  # resumed with --allow-schedule-change
            metrics["config_changes"] = s.config_changes
        cost = {
            **test_cost,
            "s_per_epoch": float(np.mean(s.epoch_seconds)) if s.epoch_seconds else float("nan"),
            "epochs": len(s.epoch_seconds),
            "world_size": self.dist.world,
            "measured": provenance(),  # commit, date, CPU: what solidrec report prints
        }
        if self.dist.main:
            d = self.data
            save_model_dir(
                self.paths.model,
                self.model,
                self.cfg,
                item_ids=d.item_original_id.tolist(),
                semantic_name=d.semantic_name.tolist(),
                title=None if d.item_title is None else d.item_title.tolist(),
                history_len=d.history_len,
                dataset=str(d.manifest.get("name", "")),
                fingerprint=str(d.manifest.get("fingerprint", "")),
            )
            write_ranks(self.paths.ranks, self.data, self.data.test, ranks)
            write_json(self.paths.metrics, metrics)
            write_json(self.paths.cost, cost)
            s.finished = True
            self._save_last()
        self._barrier()
        return metrics


def train(
    cfg: RunConfig, resume: bool = False, allow_schedule_change: bool = False, quiet: bool = False
) -> dict[str, Any]:
    """Train one run described by ``cfg``; returns the test metrics.

    ``resume`` continues ``cfg.out`` from its last checkpoint; the config must equal the
    run's except :data:`RESUME_FREE_KEYS`, and :data:`RESUME_SCHEDULE_KEYS` when
    ``allow_schedule_change``. One summary line per epoch goes to stderr unless ``quiet``;
    progress bars only where stderr is a terminal and ``cfg.train.progress``.
    """
    if cfg.train.recipe == "auto":  # built in Python: the keys left at their defaults
        cfg.apply_recipe()
    cfg.validate()
    if not cfg.data or not cfg.out:
        raise ValueError("a run needs data (the prepared dataset) and out (its directory)")
    # Plain JSON values, as a later call that finds the run finished reads them back.
    return json.loads(json.dumps(Trainer(cfg, resume, allow_schedule_change, quiet).run()))


#: The Python API's name for :func:`train` (``solidrec.fit``; ``solidrec.train`` is the
#: package).
fit = train
