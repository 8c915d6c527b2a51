"""Training objectives (``train.loss``): the losses against torch's, the sampler, and
training with each through every kind of backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from solidrec.cli import main as cli_main
from solidrec.config import ModelConfig, RunConfig
from solidrec.models import SolidModel
from solidrec.testing import make_tiny_dataset
from solidrec.train.losses import (
    NegativeSampler,
    full_softmax,
    shared_candidates,
    shared_layout,
    softmax_cross_entropy,
)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_equals_torch(smoothing: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 9, dtype=torch.float64)
    target = torch.randint(0, 9, (6,))
    want = F.cross_entropy(logits, target, reduction="sum", label_smoothing=smoothing)
    torch.testing.assert_close(
        softmax_cross_entropy(logits, target, None, smoothing).double(), want
    )
    # With columns masked out: the loss over the valid columns alone.
    valid = torch.rand(6, 9) > 0.3
    valid[torch.arange(6), target] = True
    got = softmax_cross_entropy(logits, target, valid, smoothing)
    rows = []
    for i in range(6):
        cols = valid[i].nonzero().flatten()
        t = int((cols == target[i]).nonzero())
        rows.append(
            F.cross_entropy(logits[i, cols][None], torch.tensor([t]), label_smoothing=smoothing)
        )
    torch.testing.assert_close(got, torch.stack(rows).sum())


def test_negative_sampler() -> None:
    g = torch.Generator().manual_seed(0)
    uni = NegativeSampler(50, "uniform")
    draws = uni.draw(400, 8, g)
    assert draws.min() >= 1 and draws.max() <= 50
    torch.testing.assert_close(
        uni.log_q(torch.tensor([1, 50])), torch.full((2,), -np.log(50.0)).float()
    )
    positives = np.r_[np.full(900, 3), np.arange(1, 51)]
    pop = NegativeSampler(50, "popularity", positives)
    draws = pop.draw(1000, 10, g)
    assert (draws == 3).float().mean() > 0.8  # item 3: 901 + 1 of 1001 + 50 weight
    assert (draws == 0).sum() == 0
    with pytest.raises(ValueError, match="negative_sampling must be one of"):
        NegativeSampler(5, "zipf")


def test_forward_without_items_scores_every_item() -> None:
    torch.manual_seed(0)
    sem = torch.randint(1, 4, (31,))
    sem[0] = 0
    m = SolidModel(ModelConfig(backbone="sasrec", generator="apg", solid="full"), sem, 3, 5)
    hist = torch.randint(0, 31, (4, 5))
    hist[:, -1] = 1
    every, _ = m(hist, None)
    some, _ = m(hist, torch.arange(31).expand(4, -1))
    torch.testing.assert_close(every, some)
    din = SolidModel(ModelConfig(backbone="din", generator="apg"), sem, 3, 5)
    with pytest.raises(ValueError, match="din scores each candidate"):
        din(hist, None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def _run(tiny: Path, out: Path, backbone: str, *sets: str) -> dict:
    argv = [
        "train", "--data", str(tiny), "--out", str(out), "--backbone", backbone,
        "--generator", "duet", "--solid", "full", "--epochs", "1", "--threads", "1",
        "--quiet", "--batch-size", "64", "--max-steps-per-epoch", "4", "--set", *sets,
    ]  # fmt: skip
    assert cli_main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("backbone", "sets"),
    [
        ("sasrec", ["train.loss=softmax", "label_smoothing=0.1", "weight_decay=1e-4"]),
        ("gru4rec", ["train.loss=sampled_softmax"]),
        ("din", ["train.loss=sampled_softmax", "num_negatives=7"]),
        ("bert4rec", ["loss=sampled_softmax", "num_negatives=5", "negative_sampling=popularity"]),
        # Catalog-scale settings: shared and in-batch negatives, row-wise item optimizers.
        (
            "sasrec",
            ["loss=sampled_softmax", "num_negatives=16", "shared_negatives=true"]
            + ["in_batch_negatives=true", "item_optimizer=lazy_adam"],
        ),
        (
            "din",
            ["loss=sampled_softmax", "num_negatives=9", "shared_negatives=true"]
            + ["in_batch_negatives=true", "item_optimizer=rowwise_adagrad", "item_lr=0.05"],
        ),
        ("gru4rec", ["loss=sampled_softmax", "num_negatives=8", "shared_negatives=true"]),
        ("gru4rec", ["loss=softmax", "item_optimizer=lazy_adam"]),
        ("bert4rec", ["item_optimizer=rowwise_adagrad", "item_lr=0.05"]),
    ],
)
def test_every_loss_trains_and_is_deterministic(
    tiny: Path, tmp_path: Path, backbone: str, sets: list[str]
) -> None:
    a = _run(tiny, tmp_path / "a", backbone, *sets)
    b = _run(tiny, tmp_path / "b", backbone, *sets)
    assert np.isfinite(a["auc"]) and a == b
    log = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header + one epoch of each stage


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["loss=hinge"], "train.loss must be one of ('bce', 'softmax', 'sampled_softmax')"),
        (["num_negatives=5"], "apply to the softmax losses"),
        (["loss=softmax", "num_negatives=5"], "sampled_softmax only"),
        (["loss=sampled_softmax", "negative_sampling=popularity"], "num_negatives > 0"),
        (["loss=softmax", "label_smoothing=1"], "label_smoothing must be in [0, 1)"),
        (["weight_decay=-1"], "train.weight_decay must be >= 0"),
        (["item_optimizer=sgd"], "train.item_optimizer must be one of"),
        (["shared_negatives=true"], "sampled_softmax only"),
        (["loss=sampled_softmax", "shared_negatives=true"], "set it > 0"),
        (["loss=softmax", "in_batch_negatives=true"], "sampled_softmax only"),
        (["item_lr=-0.1"], "train.item_lr must be >= 0"),
    ],
)
def test_bad_loss_settings_name_the_key(sets: list[str], message: str) -> None:
    cfg = RunConfig(data="d", out="o")
    cfg.override(sets)
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        cfg.validate()


def test_softmax_with_din_is_refused() -> None:
    cfg = RunConfig(data="d", out="o")
    cfg.override(["backbone=din", "loss=softmax"])
    with pytest.raises(ValueError, match="use train.loss=sampled_softmax"):
        cfg.validate()


def test_full_softmax_equals_the_materialised_logits() -> None:
    """The fused loss over every item equals cross-entropy over forward(hist, None)'s
    logits, loss and gradients, with side features on the item side too."""
    torch.manual_seed(0)
    sem = torch.randint(1, 4, (41,))
    sem[0] = 0
    cfg = ModelConfig(backbone="sasrec", generator="duet", item_features="id+category")
    m = SolidModel(cfg, sem, 3, 5).double()
    hist = torch.randint(0, 41, (6, 5))
    hist[:, -1] = 2
    pos = torch.randint(1, 41, (6,))
    user, _ = m(hist, None, return_user=True)
    got = full_softmax(user, m.item_table(), pos, 0.1)
    g_got = torch.autograd.grad(got, [m.item_emb.weight, m.cat_feat.weight])
    logits, _ = m(hist, None)
    want = F.cross_entropy(logits[:, 1:], pos - 1, reduction="sum", label_smoothing=0.1)
    g_want = torch.autograd.grad(want, [m.item_emb.weight, m.cat_feat.weight])
    torch.testing.assert_close(got, want)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("in_batch", [False, True])
def test_shared_candidates_against_per_row_loops(in_batch: bool) -> None:
    torch.manual_seed(1)
    b, n, d = 5, 6, 4
    user, pos_vec, neg_vec = torch.randn(b, d), torch.randn(b, d), torch.randn(n, d)
    pos = torch.tensor([3, 7, 3, 9, 2])
    neg = torch.tensor([7, 1, 3, 4, 8, 8])  # hits: 7 (row 1), 3 (rows 0, 2)
    log_q = torch.randn(b + n)
    logits, valid, target = shared_candidates(user, pos, pos_vec, neg, neg_vec, log_q, in_batch)
    items = torch.cat([pos, neg])
    vecs = torch.cat([pos_vec, neg_vec])
    for r in range(b):
        if in_batch:
            cols = list(range(b + n))
            t = r
        else:
            cols = [r] + list(range(b, b + n))  # own positive, then the negatives
            t = 0
        want = torch.stack([user[r] @ vecs[c] - log_q[c] for c in cols])
        torch.testing.assert_close(logits[r], want)
        ok = [c_i == t or items[c] != pos[r] for c_i, c in enumerate(cols)]
        assert valid[r].tolist() == ok
        assert int(target[r]) == t
    # the layout's candidate matrix names the same items (DIN scores it pair by pair)
    cand, q, valid2, target2 = shared_layout(pos, neg, log_q, in_batch)
    assert torch.equal(valid2, valid) and torch.equal(target2, target)
    assert cand.shape == logits.shape


def test_row_optimizer_touches_only_the_rows_of_the_step(tiny: Path, tmp_path: Path) -> None:
    """lazy_adam: a BCE step changes exactly the item rows its batch looked up."""
    from solidrec.train.loop import Trainer

    cfg = RunConfig(data=str(tiny), out=str(tmp_path / "r"))
    cfg.override(["item_optimizer=lazy_adam", "generator=duet", "batch_size=64"])
    tr = Trainer(cfg, quiet=True)
    before = tr.model.item_emb.weight.detach().clone()
    hist = torch.from_numpy(tr.data.train.hist[:4]).long()
    item = torch.from_numpy(tr.data.train.item[:4]).long()
    label = torch.from_numpy(tr.data.train.label[:4]).float()
    loss, total, aux = tr._batch_loss(hist, item, label, 0)
    tr.optimizer.zero_grad()
    (loss / total + aux).backward()
    assert tr.model.item_emb.weight.grad.is_sparse
    tr.optimizer.step()
    changed = (tr.model.item_emb.weight.detach() != before).any(1)
    touched = torch.zeros_like(changed)
    touched[torch.cat([hist.flatten(), item.flatten()])] = True
    touched[0] = False  # padding
    assert torch.equal(changed, touched)


def test_item_optimizer_auto_follows_the_catalog_size() -> None:
    from solidrec.config import AUTO_SPARSE_ITEMS, TrainConfig, resolve_item_optimizer
    from solidrec.train.optim import RunOptimizer

    assert resolve_item_optimizer("auto", AUTO_SPARSE_ITEMS - 1) == "dense"
    assert resolve_item_optimizer("auto", AUTO_SPARSE_ITEMS) == "lazy_adam"
    assert resolve_item_optimizer("rowwise_adagrad", 5) == "rowwise_adagrad"
    for n, kind in ((50, "dense"), (AUTO_SPARSE_ITEMS, "lazy_adam")):
        sem = torch.ones(n + 1, dtype=torch.long)
        m = SolidModel(ModelConfig(generator="none"), sem, 1, 5)
        opt = RunOptimizer(m, TrainConfig())
        assert opt.kind == kind and m.item_emb.sparse == (kind != "dense")
        assert (opt.item is None) == (kind == "dense")
        ids = {id(p) for g in opt.main.param_groups for p in g["params"]}
        assert (id(m.item_emb.weight) in ids) == (kind == "dense")


def test_every_configured_loss_is_a_loss_object() -> None:
    """The trainer calls one interface: config.LOSSES names exactly the Loss classes."""
    from solidrec.config import LOSSES, TrainConfig
    from solidrec.train.losses import LOSS_TYPES, Loss, LossTerms, make_loss

    assert sorted(LOSS_TYPES) == sorted(LOSSES)
    torch.manual_seed(0)
    sem = torch.randint(1, 5, (31,))
    sem[0] = 0
    model = SolidModel(ModelConfig(generator="duet", solid="off"), sem, 4, 6)
    hist = torch.randint(1, 31, (3, 6))
    item = torch.randint(1, 31, (3, 5))
    label = torch.zeros(3, 5)
    label[:, 0] = 1
    for name in LOSSES:
        loss = make_loss(TrainConfig(loss=name), 30, item[:, 0].numpy())
        assert isinstance(loss, Loss) and loss.name == name
        g = torch.Generator().manual_seed(1)
        terms = loss(model, model, hist, item, label, lambda g=g: g)
        assert isinstance(terms, LossTerms) and torch.isfinite(terms.value)
        assert terms.per_history == (5 if name == "bce" else 1)
    with pytest.raises(ValueError, match="train.loss must be one of"):
        make_loss(type("Config", (), {"loss": "hinge"})(), 30, None)
