"""Loading a run directory: its config, its prepared dataset and its selected weights
(layout: :mod:`solidrec.runs.layout`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from solidrec.config import RunConfig
from solidrec.data.prepared import PreparedDataset
from solidrec.models import SolidModel, build_model, run_dataset
from solidrec.runs.checkpoint import CheckpointError, load_checkpoint, load_latest
from solidrec.runs.layout import BEST_GLOB, CONFIG, RunDir


def load_run(
    rundir: str | Path, data: str | Path | None = None
) -> tuple[RunConfig, SolidModel, PreparedDataset]:
    """(config, model with the selected weights in eval mode, dataset) of a finished or
    running run; ``data`` replaces the prepared dataset path of the run's config (it
    must be the same dataset: its fingerprint is checked). Raises
    :class:`~solidrec.runs.checkpoint.CheckpointError` before the first validation,
    FileNotFoundError without a run's config or dataset."""
    rundir = Path(rundir)
    paths = RunDir(rundir)
    if not paths.config.exists():
        raise FileNotFoundError(f"{rundir}: no {CONFIG} (not a run directory)")
    cfg = RunConfig.load(paths.config)
    path = Path(cfg.data if data is None else data)
    if not path.is_absolute() and not path.exists() and (rundir / path).exists():
        path = rundir / path  # a relative path written by an older version, seen from here
    if data is None and not path.exists():
        raise FileNotFoundError(
            f"{rundir}: its prepared dataset {cfg.data} is not there; pass --data DIR"
        )
    dataset = run_dataset(cfg, path)
    cfg.data = str(path)
    model = build_model(cfg, dataset)
    best = paths.bests()
    if not best:
        raise CheckpointError(
            f"{paths.checkpoints}: no {BEST_GLOB} (the run has not validated yet)"
        )
    ck = load_checkpoint(best[-1])  # stage 2 sorts after stage 1
    _check_same_dataset(rundir, ck, dataset)
    model.load_state_dict(ck["model"])
    model.eval()
    return cfg, model, dataset


def _check_same_dataset(rundir: Path, ck: dict[str, Any], data: PreparedDataset) -> None:
    """Refuse weights trained on another prepared dataset (checkpoints since format 2
    of the trainer record its fingerprint; best checkpoints via last.pt's)."""
    saved = ck.get("data_fingerprint")
    if saved is None:
        found = load_latest(RunDir(rundir).last)
        saved = found[0].get("data_fingerprint") if found else None
    fp = data.manifest.get("fingerprint")
    if saved and fp and saved != fp:
        raise CheckpointError(
            f"{data.path} is not the prepared dataset {rundir} was trained on "
            f"(fingerprint {fp[:12]} vs {saved[:12]})"
        )
