"""Smoke run of benchmarks/bench_train.py (run by the test command so it never rots):
every generator x stage x ops case, the FLOP count, the report, and the scale part on
a very small generated set in its child process. It measures nothing."""

from __future__ import annotations

import json
import math

from benchmarks import bench_train


def test_epoch_part_covers_every_case(tmp_path, capsys):
    out = tmp_path / "train"
    argv = ["epoch", "--tiny", "--threads", "1", "--rounds", "1", "--reps", "1"]
    assert bench_train.main([*argv, "--backbones", "sasrec", "gru4rec", "--out", str(out)]) == 0
    rows = json.loads((tmp_path / "train-epoch.json").read_text())
    got = {(r["backbone"], r["model"], r["ops"]) for r in rows}
    want = {
        (bb, c.label, ops)
        for bb in ("sasrec", "gru4rec")
        for c in bench_train.CASES
        for ops in ("fused", "reference")
    }
    assert got == want
    for r in rows:
        assert r["step_ms"] > 0 and math.isfinite(r["vs_generator"]) and r["gflop_step"] > 0
        if r["model"] in ("none", "APG", "DUET"):
            assert r["vs_generator"] == 1.0
    # SOLID's models generate more parameters than their generator alone.
    flops = {(r["backbone"], r["model"]): r["gflop_step"] for r in rows}
    assert flops["sasrec", "Ours(DUET) stage 1"] > flops["sasrec", "DUET"] > flops["sasrec", "none"]
    md = (tmp_path / "train-epoch.md").read_text()
    assert "### gru4rec, 1 thread(s)" in md and "| Ours(APG) stage 2 | reference |" in md


def test_scale_part_runs_in_a_child(tmp_path):
    out = tmp_path / "train"
    argv = ["scale", "--scales", "0.0005", "--workdir", str(tmp_path / "w"), "--threads", "1"]
    assert bench_train.main([*argv, "--rounds", "1", "--reps", "1", "--out", str(out)]) == 0
    (row,) = json.loads((tmp_path / "train-scale.json").read_text())
    assert row["train_rows"] > 0 and row["peak_rss_gib"] > 0
    assert row["DUET"]["steps_per_epoch"] >= 1 and row["Ours(DUET) stage 2"]["step_ms"] > 0
    assert row["test_users"] > 0 and row["DUET"]["eval_s"] > 0
    assert "| 0.0005 |" in (tmp_path / "train-scale.md").read_text()


def test_ablate_part_undoes_each_change(tmp_path):
    argv = ["ablate", "--tiny", "--rounds", "1", "--reps", "1", "--histories", "0", "7"]
    argv += ["--out", str(tmp_path / "train")]
    assert bench_train.main(argv) == 0
    rows = json.loads((tmp_path / "train-ablate.json").read_text())
    sizes = {r["histories"] for r in rows}  # 7, and the paper's batch (or the tiny set)
    assert 7 in sizes and len(sizes) == 2
    got = {(r["model"], r["variant"]) for r in rows}
    assert got == {
        *(("Ours(DUET) stage 2", v[0]) for v in bench_train.ABLATIONS),
        *(("DUET", v[0]) for v in bench_train.ABLATIONS if v[2]),
    }
    assert all(r["vs_this"] == 1.0 for r in rows if r["variant"] == "this version")
