"""Smoke run of benchmarks/bench_item_scores.py (run by the test command so it never
rots): both parts on tiny sizes, in process, and the reports. It measures nothing."""

from __future__ import annotations

import json

from solidrec.testing import make_tiny_dataset

from benchmarks import bench_item_scores as b


def test_topk_part(tmp_path):
    out = tmp_path / "is"
    argv = ["topk", "--items", "3000", "--dims", "8", "--threads", "1", "--rounds", "1"]
    assert b.main([*argv, "--target-s", "0", "--out", str(out)]) == 0
    rows = json.loads((tmp_path / "is-topk.json").read_text())
    assert {r["k"] for r in rows} == set(b.KS)
    for r in rows:
        assert r["fused_ms"] > 0 and r["torch_ms"] > 0 and r["floor_ms"] > 0
    md = (tmp_path / "is-topk.md").read_text()
    assert "| torch / fused |" in md and "at commit" in md


def test_eval_part(tmp_path, monkeypatch):
    data = make_tiny_dataset(tmp_path / "data")
    monkeypatch.setattr("benchmarks.bench_train.prepare_scaled", lambda scale, workdir: data)
    row = b.eval_child(str(data), 1, 0)
    assert row["users"] == 48 and row["full_s"] > 0 and 0 <= row["full_ndcg@10_untrained"] <= 1
    md = b.eval_markdown([{"scale": 1.0, **row}], "CPU: test.")
    assert "| full s |" in md
