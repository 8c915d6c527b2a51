"""Full-ranking evaluation: metrics from ranks against hand-computed values, the seen
items of a split, ranks against a brute-force sort of every item's score (ties
included), DIN's chunked path, and the protocol through config, training and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from solidrec.config import RunConfig
from solidrec.data.prepared import load_prepared
from solidrec.evaluate import full_ranks, load_run, no_items, seen_items
from solidrec.metrics import FULL_METRIC_KEYS, METRIC_KEYS, full_ranking_metrics, metric_keys
from solidrec.models import build_model
from solidrec.runs.layout import RANKS as RANKS_FILE
from solidrec.testing import make_tiny_dataset
from solidrec.train import train

from solid_ext.reference import ranks_from_scores


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def test_full_metrics_hand_computed() -> None:
    m = full_ranking_metrics(np.array([1, 3, 7, 12, 40]))
    assert m["full_users"] == 5
    assert m["full_recall@5"] == pytest.approx(2 / 5)
    assert m["full_recall@10"] == pytest.approx(3 / 5)
    assert m["full_recall@20"] == pytest.approx(4 / 5)
    assert m["full_ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 5)
    assert m["full_ndcg@10"] == pytest.approx((1 + 0.5 + 1 / 3) / 5)
    assert m["full_ndcg@20"] == pytest.approx((1 + 0.5 + 1 / 3 + 1 / math.log2(13)) / 5)
    assert m["full_mrr@5"] == pytest.approx((1 + 1 / 3) / 5)
    assert m["full_mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 12) / 5)
    assert set(FULL_METRIC_KEYS) <= set(m)
    with pytest.raises(ValueError, match="ranks"):
        full_ranking_metrics(np.array([0, 2]))


def test_metric_keys_of_each_protocol() -> None:
    assert metric_keys("sampled") == METRIC_KEYS
    assert metric_keys("full") == FULL_METRIC_KEYS
    assert metric_keys("both") == METRIC_KEYS + FULL_METRIC_KEYS
    with pytest.raises(ValueError, match="protocol"):
        metric_keys("all")


def test_ranks_from_scores_against_sort_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 4, (30, 25), generator=g).double()  # many ties
    y = torch.randint(0, 25, (30,), generator=g)
    ex = torch.randint(-1, 25, (30, 4), generator=g)
    r = ranks_from_scores(s, y, ex)
    for b in range(30):
        skip = set(ex[b].tolist()) - {int(y[b])}
        others = [float(s[b, n]) for n in range(25) if n != int(y[b]) and n not in skip]
        # Sorted descending with the target after every item it ties with.
        assert int(r[b]) == 1 + sum(v >= float(s[b, y[b]]) for v in others)


def test_seen_items_are_the_users_earlier_items(tiny: Path) -> None:
    d = load_prepared(tiny)
    indptr, items = seen_items(d, "test")
    for row in range(len(d.test.user)):
        u = int(d.test.user[row])
        got = set(items[indptr[u] : indptr[u + 1]].tolist())
        earlier = set(d.train.item[d.train.user == u, 0].tolist())
        earlier |= set(d.train.hist[d.train.user == u].ravel().tolist())
        earlier |= set(d.valid.candidates[d.valid.user == u, 0].tolist())
        earlier |= set(d.test.hist[row].tolist())
        assert got == earlier - {0}
    vptr, vitems = seen_items(d, "valid")
    assert len(vitems) < len(items)  # the validation item is not seen before itself


@pytest.mark.parametrize("backbone", ["sasrec", "din"])
def test_full_ranks_match_a_sort_of_every_items_score(tiny: Path, backbone: str) -> None:
    d = load_prepared(tiny)
    cfg = RunConfig(data=str(tiny))
    cfg.model.backbone = backbone
    torch.manual_seed(0)
    model = build_model(cfg, d).eval()
    seen = seen_items(d, "test")
    got = full_ranks(model, d.test, 7, torch.device("cpu"), seen)
    kept = full_ranks(model, d.test, 7, torch.device("cpu"), no_items(d.num_users))
    with torch.no_grad():
        scores = model.score_all(torch.from_numpy(d.test.hist))[:, 1:].double().numpy()
    indptr, items = seen
    for row in range(len(d.test.user)):
        u, tgt = int(d.test.user[row]), int(d.test.candidates[row, 0]) - 1
        skip = set((items[indptr[u] : indptr[u + 1]] - 1).tolist()) - {tgt}
        s = scores[row]
        # float32 kernels vs this float64 sort: allow a near-tie to move one place.
        want = 1 + sum(s[n] >= s[tgt] for n in range(len(s)) if n != tgt and n not in skip)
        assert abs(int(got[row]) - want) <= 1
        assert kept[row] >= got[row]
    assert (got >= 1).all() and (got <= d.num_items).all()


def test_constant_model_ranks_every_target_last(tiny: Path) -> None:
    """Ties count against the target: a model scoring every item alike is never lucky."""
    d = load_prepared(tiny)
    cfg = RunConfig(data=str(tiny))
    model = build_model(cfg, d).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every score 0
    seen = seen_items(d, "test")
    ranks = full_ranks(model, d.test, 16, torch.device("cpu"), seen)
    indptr, items = seen
    for row, u in enumerate(d.test.user):
        left_out = set(items[indptr[u] : indptr[u + 1]].tolist()) - {d.test.candidates[row, 0]}
        # Every item not left out ties with the target and ranks ahead of it: last place.
        assert ranks[row] == d.num_items - len(left_out)
    assert full_ranking_metrics(ranks)["full_recall@20"] == 0.0


def test_training_selects_on_a_full_ranking_metric(tiny: Path, tmp_path: Path) -> None:
    cfg = RunConfig(data=str(tiny), out=str(tmp_path / "run"))
    cfg.model.solid = "off"
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.progress = 2, 64, False
    cfg.train.eval_protocol, cfg.train.select_metric = "both", "full_ndcg@10"
    metrics = train(cfg)
    for k in METRIC_KEYS + FULL_METRIC_KEYS:
        assert 0.0 <= metrics[k] <= 1.0, k
    assert set(metrics["protocols"]) == {"sampled", "full"}
    assert metrics["full_users"] == metrics["uauc_users"] or metrics["full_users"] > 0
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()[0]
    assert "valid_full_ndcg@10" in log and "valid_auc" in log
    ranks = np.load(tmp_path / "run" / RANKS_FILE)
    assert set(ranks.files) == {"user", "item", "sampled", "full"}
    assert full_ranking_metrics(ranks["full"])["full_ndcg@10"] == pytest.approx(
        metrics["full_ndcg@10"]
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["protocols"]


def test_evaluate_command_reports_both_protocols(tiny: Path, tmp_path: Path, capsys) -> None:
    from solidrec.cli import main

    cfg = RunConfig(data=str(tiny), out=str(tmp_path / "run"))
    cfg.model.solid = "off"
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.progress = 1, 64, False
    train(cfg)  # the sampled protocol only
    capsys.readouterr()
    argv = ["evaluate", str(tmp_path / "run"), "--ranks", str(tmp_path / "r.npz")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(METRIC_KEYS + FULL_METRIC_KEYS) <= set(out)
    assert "all items" in out["protocols"]["full"] and "sampled" in out["protocols"]["sampled"]
    ranks = np.load(tmp_path / "r.npz")
    assert full_ranking_metrics(ranks["full"])["full_mrr@10"] == pytest.approx(out["full_mrr@10"])
    assert main([*argv[:2], "--protocol", "full", "--keep-seen"]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert set(kept) - {"split", "protocols"} == set(FULL_METRIC_KEYS)
    assert "included" in kept["protocols"]["full"]
    # Keeping the user's earlier items can only push the held-out item down.
    assert kept["full_recall@20"] <= out["full_recall@20"]


def test_select_metric_must_belong_to_the_protocol() -> None:
    cfg = RunConfig()
    cfg.train.select_metric = "full_ndcg@10"
    with pytest.raises(ValueError, match="eval_protocol=full or both"):
        cfg.train.validate()
    cfg.train.eval_protocol = "everything"
    with pytest.raises(ValueError, match="train.eval_protocol"):
        cfg.train.validate()


def test_test_protocol_ranks_the_test_split_only(tiny: Path, tmp_path: Path) -> None:
    """train.test_protocol=both with sampled validation: validation pays no full ranking
    (no valid_full_* column in the log), the test split reports both protocols, and its
    full metrics equal a later `evaluate --protocol full` of the same model."""
    cfg = RunConfig(data=str(tiny), out=str(tmp_path / "run"))
    cfg.model.solid = "off"
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.progress = 2, 64, False
    cfg.train.test_protocol = "both"
    metrics = train(cfg)
    assert set(metrics["protocols"]) == {"sampled", "full"}
    assert set(METRIC_KEYS + FULL_METRIC_KEYS) <= set(metrics)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()[0]
    assert "valid_auc" in log and "full" not in log
    ranks = np.load(tmp_path / "run" / RANKS_FILE)
    assert set(ranks.files) == {"user", "item", "sampled", "full"}
    _, model, data = load_run(tmp_path / "run")
    again = full_ranks(model, data.test, 16, torch.device("cpu"), seen_items(data, "test"))
    assert np.array_equal(again, ranks["full"])


def test_test_protocol_is_checked_and_free_on_resume() -> None:
    from solidrec.config import RESUME_FREE_KEYS

    cfg = RunConfig()
    cfg.train.test_protocol = "all"
    with pytest.raises(ValueError, match="train.test_protocol"):
        cfg.train.validate()
    cfg.train.test_protocol = "full"
    cfg.train.validate()
    assert "train.test_protocol" in RESUME_FREE_KEYS
