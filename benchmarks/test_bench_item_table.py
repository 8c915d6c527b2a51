"""Smoke run of benchmarks/bench_item_table.py (run by the test command so it never
rots): every part in its child processes on tiny catalogs, and the reports. It
measures nothing."""

from __future__ import annotations

import json

from benchmarks import bench_item_table as b


def test_update_part(tmp_path):
    out = tmp_path / "it"
    argv = ["update", "--scales", "0.001", "--threads", "1", "--rounds", "1", "--target-s", "0"]
    assert b.main([*argv, "--lookups", "300", "--out", str(out)]) == 0
    rows = json.loads((tmp_path / "it-update.json").read_text())
    (r,) = rows
    assert "error" not in r, r
    assert {"dense Adam (fused)", "torch SparseAdam", "rowwise_adagrad"} <= set(r["ms"])
    assert any(k.startswith("lazy_adam") for k in r["ms"]) and r["floor_ms"] > 0
    assert "| fused lazy_adam x SparseAdam |" in (tmp_path / "it-update.md").read_text()


def test_softmax_part(tmp_path):
    out = tmp_path / "it"
    argv = ["softmax", "--items", "3000", "--histories", "16", "--dim", "8", "--threads", "1"]
    assert b.main([*argv, "--rounds", "1", "--target-s", "0", "--out", str(out)]) == 0
    rows = json.loads((tmp_path / "it-softmax.json").read_text())
    assert {r["impl"] for r in rows} == {"fused", "eager"}
    assert all(r["step_s"] > 0 for r in rows), rows


def test_scale_part(tmp_path):
    out = tmp_path / "it"
    argv = ["scale", "--scales", "0.001", "--threads", "1", "--rounds", "1", "--target-s", "0"]
    assert b.main([*argv, "--histories", "8", "--out", str(out)]) == 0
    rows = json.loads((tmp_path / "it-scale.json").read_text())
    assert [r["loss"] for r in rows] == list(b.LOSSES)
    for r in rows:
        assert "error" not in r, r
        cells = r["ms"]["1"]
        assert set(cells) == {f"{m[0]}|{o}" for m in b.MODELS for o in b.OPTIMIZERS}
    md = (tmp_path / "it-scale.md").read_text()
    assert "### sampled_softmax" in md and "| Ours(DUET) s2 |" in md


def test_scale_part_one_optimizer_alone(tmp_path):
    out = tmp_path / "it"
    argv = ["scale", "--scales", "0.001", "--threads", "1", "--rounds", "1", "--target-s", "0"]
    argv += ["--histories", "8", "--losses", "bce", "--optimizers", "lazy_adam"]
    assert b.main([*argv, "--out", str(out)]) == 0
    (r,) = json.loads((tmp_path / "it-scale.json").read_text())
    assert set(r["ms"]["1"]) == {f"{m[0]}|lazy_adam" for m in b.MODELS}
    assert "lazy_adam alone" in (tmp_path / "it-scale.md").read_text()
