"""``solidrec report``: one table per dataset, one row per config, mean ± std over seeds
only, the paper's rows only on its dataset and settings, errors, CSV/JSON and curves."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from solidrec.cli import main as cli_main
from solidrec.config import RunConfig
from solidrec.metrics import FULL_METRIC_KEYS, METRIC_KEYS
from solidrec.paper import PAPER_PROTOCOL, SCIENTIFIC_COUNTS, SCIENTIFIC_TABLE1, is_paper_dataset
from solidrec.runs.report import collect, format_runs

PNG = b"\x89PNG\r\n\x1a\n"


def _data(root: Path, name: str, paper: bool = False) -> Path:
    """A prepared-dataset directory holding only a manifest (all the report reads)."""
    d = root / "data" / name
    d.mkdir(parents=True)
    counts = dict(SCIENTIFIC_COUNTS) if paper else {"users": 610, "items": 9742, "interactions": 9}
    manifest = {
        "format_version": 2,
        "name": name,
        "fingerprint": f"{name}-fingerprint",
        "counts": counts,
        "params": dict(PAPER_PROTOCOL),
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def _metrics(base: float) -> dict[str, float]:
    return {m: base + i / 100 for i, m in enumerate(METRIC_KEYS)}


def _run(
    root: Path,
    name: str,
    data: Path,
    metrics: dict[str, float],
    seed: int = 2024,
    epochs: int = 3,
    **values: Any,
) -> Path:
    """A finished run directory: config.yaml, metrics.json and log.csv (``epochs`` rows)."""
    run = root / name
    run.mkdir(parents=True)
    cfg = RunConfig(data=str(data), out=str(run))
    cfg.model.backbone, cfg.model.generator, cfg.model.solid = "sasrec", "duet", "off"
    cfg.train.seed = seed
    cfg.override([f"{k}={v}" for k, v in values.items()])
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "metrics.json").write_text(json.dumps({**metrics, "split": "test", "best_epoch": 0}))
    cols = ["stage", "epoch", "step", "train_loss", *[f"valid_{m}" for m in METRIC_KEYS], "seconds"]
    with open(run / "log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in range(epochs):
            stage = 1 if e < 2 else 2
            w.writerow([stage, e, 10 * e, 0.5 - e / 20, *[0.6 + e / 50] * len(METRIC_KEYS), 1.0])
    return run


def _report(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli_main(["report", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _rows(markdown: str, label: str) -> list[list[str]]:
    """The cells of the Markdown rows whose DSR Model is ``label``."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()]
    return [c for c in cells if len(c) > 2 and c[1] == label]


def test_two_datasets_are_two_tables(tmp_path: Path, capsys) -> None:
    sci, ml = _data(tmp_path, "scientific", paper=True), _data(tmp_path, "movielens")
    _run(tmp_path / "runs", "sci", sci, _metrics(0.7))
    _run(tmp_path / "runs", "ml", ml, _metrics(0.8))
    rc, out, _ = _report(capsys, tmp_path / "runs", "--no-paper")
    assert rc == 0
    assert [t.dataset.name for t in collect([tmp_path / "runs"])] == ["scientific", "movielens"]
    assert out.count("## ") == 2 and "scientific" in out and "movielens" in out
    rows = _rows(out, "DUET")
    assert [r[2] for r in rows] == ["1", "1"]  # not one "n=2" row
    assert [r[3] for r in rows] == ["0.7000", "0.8000"]


def test_differing_tau_is_two_rows_with_a_column(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path, "scientific", paper=True)
    _run(tmp_path / "runs", "a", data, _metrics(0.7), tau=0.01)
    _run(tmp_path / "runs", "b", data, _metrics(0.6), tau=0.5)
    rc, out, _ = _report(capsys, tmp_path / "runs", "--no-paper")
    assert rc == 0
    assert "| SR Model | DSR Model | model.tau | n |" in out
    assert [r[2:5] for r in _rows(out, "DUET")] == [["0.01", "1", "0.7000"], ["0.5", "1", "0.6000"]]
    assert "train.seed" not in out and "codebook_init" not in out


def test_item_features_and_epochs_are_not_merged(tmp_path: Path) -> None:
    data = _data(tmp_path, "d")
    _run(tmp_path / "runs", "a", data, _metrics(0.7))
    _run(tmp_path / "runs", "b", data, _metrics(0.7), item_features="id+category")
    _run(tmp_path / "runs", "c", data, _metrics(0.7), max_epochs=8)
    (table,) = collect([tmp_path / "runs"])
    assert table.columns == ["model.item_features", "train.max_epochs"]
    assert [len(g.runs) for g in table.groups] == [1, 1, 1]


def test_seeds_are_averaged_and_result_free_keys_ignored(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path, "d")
    aucs = [0.60, 0.64, 0.71]
    for i, (seed, auc) in enumerate(zip([1, 2, 3], aucs, strict=True)):
        # threads, progress, ckpt_every_steps and out never change results
        _run(tmp_path / "runs", f"s{seed}", data, {**_metrics(0.5), "auc": auc}, seed=seed,
             threads=i, progress=bool(i % 2), ckpt_every_steps=10 + i)  # fmt: skip
    rc, out, _ = _report(capsys, tmp_path / "runs")
    assert rc == 0
    (row,) = _rows(out, "DUET")
    mean = sum(aucs) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in aucs) / 2)
    assert row[2] == "3" and row[3] == f"{mean:.4f} ± {std:.4f}"
    assert row[4] == "0.5100 ± 0.0000"  # uauc: all equal
    assert "threads" not in out and "progress" not in out
    # two seeds of another tau: a row of their own, averaged over those two only
    for seed, auc in ((1, 0.5), (2, 0.6)):
        _run(tmp_path / "runs", f"t{seed}", data, {**_metrics(0.5), "auc": auc}, seed=seed, tau=0.5)
    rc, out, _ = _report(capsys, tmp_path / "runs")
    rows = _rows(out, "DUET")
    assert [r[2:5] for r in rows] == [
        ["0.01", "3", f"{mean:.4f} ± {std:.4f}"],
        ["0.5", "2", f"0.5500 ± {math.sqrt(0.005):.4f}"],
    ]


def test_codebook_init_of_the_mode_is_no_column(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path, "d")
    off = _run(tmp_path / "runs", "off", data, _metrics(0.7))
    full = _run(tmp_path / "runs", "full", data, _metrics(0.7), solid="full")
    lines = format_runs([off, full], paper=False).splitlines()
    assert lines[2].startswith("AUC to Recall@20: the held-out item among 1 + the split's")
    assert lines[4].startswith("| SR Model | DSR Model | n |")
    assert "full" not in lines[4]  # no run evaluated the full-ranking protocol


def test_full_ranking_columns_shown_when_runs_have_them(tmp_path: Path) -> None:
    data = _data(tmp_path, "d")
    full = {"full_recall@10": 0.25, "full_ndcg@10": 0.125, "full_recall@20": 0.5}
    run = _run(tmp_path / "runs", "off", data, {**_metrics(0.7), **full})
    lines = format_runs([run], paper=False).splitlines()
    assert "Columns *full …*: the held-out item's rank among all items" in lines[2]
    head = lines[4].split(" | ")
    # Only the full-ranking columns some run has (no full_ndcg@20 here).
    assert head[-5:-2] == ["full Recall@10", "full NDCG@10", "full Recall@20"]
    assert lines[6].split(" | ")[-5:-2] == ["0.2500", "0.1250", "0.5000"]


def test_missing_path_or_no_finished_run_exits_2(tmp_path: Path, capsys) -> None:
    rc, out, err = _report(capsys, tmp_path / "nope")
    assert rc == 2 and out == ""
    assert err.splitlines() == [
        f"solidrec report: error: {tmp_path / 'nope'}: no such file or directory"
    ]
    (tmp_path / "empty").mkdir()
    rc, _, err = _report(capsys, tmp_path / "empty")
    assert rc == 2 and err.startswith("solidrec report: error: ") and len(err.splitlines()) == 1
    # one good path does not excuse a wrong one
    _run(tmp_path / "runs", "a", _data(tmp_path, "d"), _metrics(0.7))
    rc, _, err = _report(capsys, tmp_path / "runs", tmp_path / "nope")
    assert rc == 2 and "nope" in err


def test_incomplete_runs_are_skipped_with_a_warning(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path, "d")
    _run(tmp_path / "runs", "good", data, _metrics(0.7))
    (_run(tmp_path / "runs", "noconfig", data, _metrics(0.1)) / "config.yaml").unlink()
    (_run(tmp_path / "runs", "unfinished", data, _metrics(0.1)) / "metrics.json").unlink()
    rc, out, err = _report(capsys, tmp_path / "runs")
    assert rc == 0
    assert [r[2:4] for r in _rows(out, "DUET")] == [["1", "0.7000"]]
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(w.startswith("solidrec report: warning: ") for w in warnings)
    assert "noconfig: no config.yaml" in err and "unfinished: no metrics.json" in err
    # only incomplete runs: nothing to report
    rc, _, err = _report(capsys, tmp_path / "runs" / "noconfig")
    assert rc == 2 and "error: " in err


def test_missing_data_dir_groups_by_path(tmp_path: Path, capsys) -> None:
    _run(tmp_path / "runs", "a", tmp_path / "gone1", _metrics(0.7))
    _run(tmp_path / "runs", "b", tmp_path / "gone2", _metrics(0.6))
    rc, out, err = _report(capsys, tmp_path / "runs")
    assert rc == 0 and out.count("## ") == 2 and "no readable manifest.json" in out
    assert "gone1" in err and "gone2" in err and "grouped by that path" in err


def test_csv_and_json(tmp_path: Path, capsys) -> None:
    sci = _data(tmp_path, "scientific", paper=True)
    ml = _data(tmp_path, "movielens")
    _run(tmp_path / "runs", "a", sci, {**_metrics(0.5), "auc": 0.6}, seed=1)
    _run(tmp_path / "runs", "b", sci, {**_metrics(0.5), "auc": 0.7}, seed=2)
    _run(tmp_path / "runs", "c", ml, _metrics(0.4), tau=0.5)
    out = tmp_path / "out"
    rc, stdout, _ = _report(capsys, tmp_path / "runs", "--out", out / "t.md", "--csv",
                            out / "t.csv", "--json", out / "t.json")  # fmt: skip
    assert rc == 0
    assert (out / "t.md").read_text() == stdout
    # tau differs between the tables only: each says its value
    assert "Every row here: model.tau = 0.01." in stdout
    assert "Every row here: model.tau = 0.5." in stdout
    with open(out / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((out / "t.json").read_text())
    assert doc["metrics"] == list(METRIC_KEYS + FULL_METRIC_KEYS)
    assert set(doc["protocols"]) == {"sampled", "full"} and len(doc["rows"]) == len(rows) == 2
    for r in (rows[0], doc["rows"][0]):
        assert r["dataset"] == "scientific" and r["dataset_fingerprint"] == "scientific-fingerprint"
        assert (r["backbone"], r["generator"], r["solid"]) == ("sasrec", "duet", "off")
        assert float(r["model.tau"]) == 0.01 and int(r["n"]) == 2
        assert float(r["auc_mean"]) == pytest.approx(0.65)
        assert float(r["auc_std"]) == pytest.approx(math.sqrt(0.005))
        assert float(r["uauc_std"]) == pytest.approx(0.0)
        assert float(r["paper_auc"]) == SCIENTIFIC_TABLE1[("sasrec", "DUET")][0]
    assert rows[0]["seeds"] == "1 2" and doc["rows"][0]["seeds"] == [1, 2]
    ml_csv, ml_json = rows[1], doc["rows"][1]
    assert ml_csv["dataset"] == ml_json["dataset"] == "movielens"
    assert float(ml_csv["model.tau"]) == ml_json["model.tau"] == 0.5
    assert ml_csv["auc_std"] == "" and ml_json["auc_std"] is None  # one run: no std
    assert ml_csv["paper_auc"] == "" and ml_json["paper_auc"] is None
    assert float(ml_csv["recall@20_mean"]) == pytest.approx(0.45)
    assert (
        set(ml_json["config"]) >= {"model.tau", "train.lr"}
        and "train.seed" not in ml_json["config"]
    )


def test_curves(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    data = _data(tmp_path, "d")
    _run(tmp_path / "runs" / "x", "sasrec", data, _metrics(0.7), epochs=4)
    _run(tmp_path / "runs" / "y", "sasrec", data, _metrics(0.6), seed=7)  # same name
    rc, _, _ = _report(capsys, tmp_path / "runs", "--curves", tmp_path / "curves")
    assert rc == 0
    pngs = sorted(p.name for p in (tmp_path / "curves").iterdir())
    assert pngs == ["overlay.png", "x_sasrec.png", "y_sasrec.png"]
    for p in (tmp_path / "curves").iterdir():
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 10_000


def test_curves_without_matplotlib(tmp_path: Path, capsys, monkeypatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    _run(tmp_path / "runs", "a", _data(tmp_path, "d"), _metrics(0.7))
    rc, _, err = _report(capsys, tmp_path / "runs", "--curves", tmp_path / "curves")
    assert rc == 2 and "pip install matplotlib" in err and "bench" in err


def test_paper_row_only_on_its_dataset_and_settings(tmp_path: Path, capsys) -> None:
    sci, ml = _data(tmp_path, "scientific", paper=True), _data(tmp_path, "movielens")
    _run(tmp_path / "sci", "a", sci, _metrics(0.7))
    _run(tmp_path / "ml", "a", ml, _metrics(0.7))
    _run(tmp_path / "sci-tau", "a", sci, _metrics(0.7), tau=0.5)
    ref = f"*{SCIENTIFIC_TABLE1[('sasrec', 'DUET')][0]:.4f}*"
    rc, out, _ = _report(capsys, tmp_path / "sci")
    assert rc == 0 and "the paper's Amazon Scientific" in out
    assert "| | *paper* | |" in out and ref in out
    rc, out, _ = _report(capsys, tmp_path / "ml")
    assert rc == 0 and "*paper*" not in out
    rc, out, _ = _report(capsys, tmp_path / "sci-tau")
    assert rc == 0 and _rows(out, "*paper*") == [] and "No *paper* row" in out
    assert "model.tau" in out.splitlines()[-1]  # the note says which setting is off
    rc, out, _ = _report(capsys, tmp_path / "sci", "--no-paper")
    assert rc == 0 and "*paper*" not in out
    # both settings in one report: the paper's row under the paper-setting row only
    rc, out, _ = _report(capsys, tmp_path / "sci", tmp_path / "sci-tau")
    assert [r[2] for r in _rows(out, "DUET")] == ["0.01", "0.5"]
    assert out.count(ref) == 1 and out.index(ref) < out.index("| 0.5 |")


def test_real_manifests(scientific_prepared: Path, movielens_prepared: Path) -> None:
    """The prepared real Scientific is recognised as the paper's, MovieLens is not."""
    assert is_paper_dataset(json.loads((scientific_prepared / "manifest.json").read_text()))
    assert not is_paper_dataset(json.loads((movielens_prepared / "manifest.json").read_text()))


def test_relative_data_found_from_another_directory(tmp_path: Path, capsys, monkeypatch) -> None:
    """data: and out: relative to where training ran; the report runs elsewhere."""
    _data(tmp_path, "d")
    monkeypatch.chdir(tmp_path)
    _run(Path("runs"), "a", Path("data/d"), _metrics(0.7))
    monkeypatch.chdir(tmp_path / "runs")
    rc, out, err = _report(capsys, "a")
    assert rc == 0 and err == "" and "## d (fingerprint d-fingerprin" in out


def test_epochs_trained_per_stage(tmp_path: Path, capsys) -> None:
    """The training budget each row used: epochs per stage from log.csv, mean over seeds
    (the helper logs stage 1 for the first two epochs, stage 2 after)."""
    sci = _data(tmp_path, "scientific")
    _run(tmp_path / "runs", "a", sci, _metrics(0.5), seed=1, epochs=3)
    _run(tmp_path / "runs", "b", sci, _metrics(0.5), seed=2, epochs=6)
    _run(tmp_path / "runs", "c", sci, _metrics(0.5), tau=0.5, epochs=2)
    broken = _run(tmp_path / "runs", "d", sci, _metrics(0.5), tau=0.9)
    (broken / "log.csv").write_text("not,a,log\n")
    out = tmp_path / "out"
    rc, stdout, _ = _report(capsys, tmp_path / "runs", "--csv", out / "t.csv", "--json",
                            out / "t.json")  # fmt: skip
    assert rc == 0
    assert [r[-1] for r in _rows(stdout, "DUET")] == ["2+2.5", "2", "–"]
    doc = json.loads((out / "t.json").read_text())
    assert [r["epochs_per_stage"] for r in doc["rows"]] == [[2.0, 2.5], [2.0], None]
    with open(out / "t.csv", newline="") as f:
        assert [r["epochs_per_stage"] for r in csv.DictReader(f)] == ["2 2.5", "2", ""]


def test_validation_value_of_the_selection_metric(tmp_path: Path, capsys) -> None:
    """The column beside the test metrics: the best validation value of each run's
    train.select_metric, mean ± std over seeds; '–' where a run's metrics.json lacks it."""
    sci = _data(tmp_path, "scientific")
    for seed, v in ((1, 0.30), (2, 0.34)):
        _run(tmp_path / "a", f"s{seed}", sci, {**_metrics(0.5), "best_valid_ndcg@10": v},
             seed=seed, select_metric="ndcg@10")  # fmt: skip
    _run(tmp_path / "a", "old", sci, _metrics(0.5), tau=0.5, select_metric="ndcg@10")
    out = tmp_path / "out"
    rc, stdout, _ = _report(capsys, tmp_path / "a", "--json", out / "t.json")
    assert rc == 0
    assert "| valid NDCG@10 | epochs |" in stdout
    assert [r[-2] for r in _rows(stdout, "DUET")] == [f"0.3200 ± {math.sqrt(0.0008):.4f}", "–"]
    doc = json.loads((out / "t.json").read_text())
    assert [r["select_metric"] for r in doc["rows"]] == ["ndcg@10", "ndcg@10"]
    assert (
        doc["rows"][0]["valid_mean"] == pytest.approx(0.32) and doc["rows"][1]["valid_mean"] is None
    )
    # rows selected on different metrics: each cell names its own
    _run(tmp_path / "a", "auc", sci, {**_metrics(0.5), "best_valid_auc": 0.7}, tau=0.9)
    rc, stdout, _ = _report(capsys, tmp_path / "a")
    assert "| valid | epochs |" in stdout
    assert [r[-2] for r in _rows(stdout, "DUET")] == [
        f"ndcg@10 0.3200 ± {math.sqrt(0.0008):.4f}",
        "–",
        "auc 0.7000",
    ]


def test_heading_shows_data_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path, "d")
    run = _run(tmp_path / "runs", "off", data, _metrics(0.7))
    monkeypatch.chdir(tmp_path)
    heading = format_runs([run], paper=False).splitlines()[0]
    assert str(tmp_path) not in heading and f", {data.relative_to(tmp_path)})" in heading
    # data outside the working directory: its folder's name, never an absolute path
    monkeypatch.chdir(tmp_path / "runs")
    heading = format_runs([run], paper=False).splitlines()[0]
    assert str(tmp_path) not in heading and f", {data.name})" in heading


def test_report_names_commit_date_and_cpu(tmp_path: Path) -> None:
    """Each run's cost.json "measured" (written by training) heads the report: one line
    per distinct commit/date/CPU, and a count of runs that did not record it."""
    data = _data(tmp_path, "d")
    a = _run(tmp_path / "a", "off", data, _metrics(0.7))
    b = _run(tmp_path / "b", "full", data, _metrics(0.7))
    assert not format_runs([a, b], paper=False).startswith("Measured")
    where = {"commit": "abc1234", "date": "2026-12-07", "cpu": "Some CPU", "cores": 2}
    (a / "cost.json").write_text(json.dumps({"measured": where}))
    lines = format_runs([a, b], paper=False).splitlines()
    assert lines[0] == "Measured at commit abc1234, date 2026-12-07, on CPU Some CPU (2 cores)."
    assert lines[1].startswith("(1 run(s) here trained before")
    (b / "cost.json").write_text(json.dumps({"measured": {**where, "cpu": None}}))
    lines = format_runs([a, b], paper=False).splitlines()
    assert lines[:2] == [
        "Measured at commit abc1234, date 2026-12-07, on CPU Some CPU (2 cores).",
        "Measured at commit abc1234, date 2026-12-07; CPU not recorded.",
    ]
