"""End to end (the paper's Table 5 analogue): one SASRec training step (batch 1024,
forward + BCE + λ·MSE + backward + Adam) and one test batch (512 users x 100
candidates), DUET vs SOLID(DUET), with the fused CPU ops vs the reference ops.

Quick/full modes use the paper's Scientific set prepared from ``../shared/data``
(``SOLIDREC_SHARED_DATA`` overrides); smoke mode uses the tiny generated dataset.
Seconds per epoch are the step median times the steps of one epoch (the training
loop adds only index gathers around the step).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

import solid_ext

from .bench_train import SAMPLES_PER_STEP, Case, make_step
from .common import MODE, peak_mib, pedantic

SMOKE = MODE == "smoke"
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SOLIDREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / "benchmarks" / ".cache"  # git-ignored; prepared data reused across runs

# (label, solid mode, stage): DUET alone, SOLID(DUET) in each stage of Algorithm 1
# (stage 1: trunk + clipped branch; stage 2: + codebook quantisation and λ·MSE).
MODELS = [
    ("DUET", "off", 1),
    ("SOLID(DUET) stage 1", "full", 1),
    ("SOLID(DUET) stage 2", "full", 2),
]
BACKENDS = ["cpu", "reference"]


@functools.cache
def _data():
    from solidrec.data import PrepareConfig, load_prepared, prepare

    if SMOKE:
        from solidrec.testing import make_tiny_dataset

        out = CACHE / "tiny"
        make_tiny_dataset(out)
        return load_prepared(out), "tiny"
    src = SHARED / "amazon-scientific"
    if not src.exists():
        pytest.fail(f"end-to-end benchmark needs the Scientific data at {src}")
    out = CACHE / "scientific"
    prepare(PrepareConfig(format="atomic", input=src, out=out))  # a no-op when up to date
    return load_prepared(out), "scientific"


def _model(solid: str, stage: int):
    from solidrec.config import ModelConfig
    from solidrec.models.model import SolidModel

    data, _ = _data()
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="sasrec", generator="duet", solid=solid)
    model = SolidModel(cfg, torch.from_numpy(data.semantic_id), data.num_semantic, data.history_len)
    if stage == 2:
        model.set_stage(2)  # codebook <- metacode, as the trainer enters stage 2
    return model, data


def _measure(benchmark, fn, op: str, label: str, backend: str, mode: str, **info) -> None:
    """Record the case's description and peak memory, then time ``fn``."""
    benchmark.extra_info.update(
        op=op, provider=f"{label} / {backend}", model=label, backend=backend, mode=mode,
        flops=0, bytes=0, peak_mib=peak_mib(fn), **info,
    )  # fmt: skip
    pedantic(benchmark, fn)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("label", "solid", "stage"), MODELS, ids=[m[0] for m in MODELS])
def test_train_step(benchmark, label, solid, stage, backend):
    data, name = _data()
    # The step of bench_train (and the trainer): 1024 (history, candidate) samples =
    # 1024 // C histories, each encoded once and scored against its C candidates.
    case = Case(label, "duet", solid, stage)
    step, steps_per_epoch, _ = make_step(data, "sasrec", case, backend)
    step()  # Adam's state exists before memory is counted
    c = data.train.item.shape[1]
    _measure(
        benchmark, step, "e2e train step", label, backend, "fwdbwd",
        size={"data": name, "batch": min(SAMPLES_PER_STEP // c, len(data.train.item)) * c},
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("label", "solid", "stage"), MODELS, ids=[m[0] for m in MODELS])
def test_test_batch(benchmark, label, solid, stage, backend):
    model, data = _model(solid, stage)
    model.eval()
    te = data.test
    users = min(512, len(te.user))
    hist = torch.from_numpy(te.hist[:users])
    cand = torch.from_numpy(te.candidates[:users])

    @torch.no_grad()
    def score():
        with solid_ext.use_backend(backend):
            return model(hist, cand)

    _measure(
        benchmark, score, "e2e test batch", label, backend, "fwd",
        size={"data": _data()[1], "users": users, "candidates": int(cand.shape[1])},
    )  # fmt: skip
