"""``model.history_len``: a run reads the k most recent items of longer prepared histories,
the same samples as preparing with ``--history-len k``; tunable like any config key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from solidrec.config import RunConfig
from solidrec.data import PrepareConfig, load_prepared, prepare
from solidrec.data.synth import SynthConfig, generate, write_generic
from solidrec.models import build_model, run_dataset
from solidrec.recommend import Recommender
from solidrec.runs.load import load_run
from solidrec.train import train

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("hist")
    return write_generic(generate(SynthConfig(users=60, items=200, mean_len=12, seed=3)), d, "csv")


def _prepare(csv: tuple[Path, Path], out: Path, length: int) -> Path:
    inter, items = csv
    prepare(PrepareConfig(format="generic", input=inter, items=items, out=out, history_len=length))
    return out


@pytest.fixture(scope="module")
def long_data(synth_csv: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(synth_csv, tmp_path_factory.mktemp("long") / "h8", 8)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_cut_equals_preparing_shorter(
    synth_csv: tuple[Path, Path], long_data: Path, tmp_path: Path, k: int
) -> None:
    cut = load_prepared(long_data).with_history(k)
    short = load_prepared(_prepare(synth_csv, tmp_path / f"h{k}", k))
    assert cut.history_len == short.history_len == k
    for name in SPLITS:
        a, b = getattr(cut, name), getattr(short, name)
        for field in ("user", "hist", "hist_len"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        if name == "train":
            np.testing.assert_array_equal(a.item, b.item)
            np.testing.assert_array_equal(a.label, b.label)
        else:
            np.testing.assert_array_equal(a.candidates, b.candidates)
    assert cut.train.hist_len.max() == k and cut.train.hist_len.min() >= 1


def test_zero_or_full_length_is_the_dataset_itself(long_data: Path) -> None:
    ds = load_prepared(long_data)
    assert ds.with_history(0) is ds and ds.with_history(8) is ds


@pytest.mark.parametrize("k", [9, -1])
def test_bad_length_names_the_key_and_the_fix(long_data: Path, k: int) -> None:
    cfg = RunConfig(data=str(long_data))
    cfg.model.history_len = k
    with pytest.raises(ValueError, match=r"model\.history_len must be in 1\.\.8.*--history-len"):
        run_dataset(cfg)


def test_config_rejects_negative() -> None:
    cfg = RunConfig()
    cfg.model.history_len = -2
    with pytest.raises(ValueError, match="model.history_len"):
        cfg.validate()


def test_build_model_refuses_uncut_data(long_data: Path) -> None:
    cfg = RunConfig(data=str(long_data))
    cfg.model.history_len = 4
    with pytest.raises(ValueError, match="run_dataset"):
        build_model(cfg, load_prepared(long_data))
    assert build_model(cfg, run_dataset(cfg)) is not None


def test_run_with_a_shorter_history_trains_evaluates_and_serves(
    long_data: Path, tmp_path: Path
) -> None:
    cfg = RunConfig(data=str(long_data), out=str(tmp_path / "run"))
    cfg.model.backbone, cfg.model.generator, cfg.model.solid = "sasrec", "duet", "off"
    cfg.model.history_len = 3
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.progress = 1, 64, False
    cfg.train.threads = 1
    train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    loaded_cfg, model, data = load_run(tmp_path / "run")
    assert loaded_cfg.model.history_len == 3 and data.history_len == 3
    rec = Recommender.from_run(tmp_path / "run")
    assert rec.history_len == 3
    assert 0.0 <= saved["auc"] <= 1.0
