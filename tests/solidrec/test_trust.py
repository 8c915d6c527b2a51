"""Served models give an answer or a named error, never a silent wrong one: histories
of any iterable type, non-finite scores refused naming the model, ids with spaces and
commas, argument types checked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from solidrec.cli import main as cli_main
from solidrec.recommend import Recommender
from solidrec.testing import make_tiny_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("trust")
    data = make_tiny_dataset(base / "data")
    out = base / "run"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--quiet"]
    assert cli_main([*argv, "--threads", "1", "--max-steps-per-epoch", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def rec(run: Path) -> Recommender:
    return Recommender.from_run(run, device="cpu")


def test_histories_of_any_iterable_type(rec: Recommender) -> None:
    hist = [rec.item_ids[i] for i in (1, 2, 3)]
    want = rec.recommend(hist, k=5)
    # An iterator is read once: its items are still excluded from the answer.
    got = rec.recommend(iter(hist), k=5)
    assert got == want and not {i for i, _ in got} & set(hist)
    assert rec.recommend(tuple(hist), k=5) == want
    # A batch of two may take another BLAS kernel than a batch of one (it does with
    # AVX-512): the same items, scores equal to float32 rounding.
    batch = rec.recommend_batch((iter(h) for h in [hist, hist]), k=5)
    assert [[i for i, _ in row] for row in batch] == [[i for i, _ in want]] * 2
    for row in batch:
        assert [s for _, s in row] == pytest.approx([s for _, s in want], rel=1e-6, abs=1e-7)
    with pytest.raises(TypeError, match="histories must be an iterable of histories"):
        rec.recommend_batch("i1 i2", k=5)


@pytest.mark.parametrize("k", [True, 2.5, 0, -1, "3"])
def test_k_must_be_a_positive_integer(rec: Recommender, k) -> None:
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        rec.recommend([rec.item_ids[1]], k=k)


def test_numpy_integers_are_accepted(rec: Recommender) -> None:
    hist = [rec.item_ids[1]]
    assert rec.recommend(hist, k=np.int64(3)) == rec.recommend(hist, k=3)
    assert len(rec.recommend_batch([hist], k=2, batch_size=np.int32(4))[0]) == 2


@pytest.mark.parametrize("where", ["item_emb", "everything"])
def test_non_finite_scores_are_an_error_naming_the_model(run: Path, where: str) -> None:
    bad = Recommender.from_run(run, device="cpu")
    with torch.no_grad():
        for name, p in bad.model.named_parameters():
            if where == "everything" or name.startswith(where):
                p.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"the model \(.*model\) gives non-finite"):
        bad.recommend([bad.item_ids[1]], k=3)


def test_cli_ids_with_spaces_and_commas(run: Path, rec: Recommender, capsys) -> None:
    hist = [rec.item_ids[1], rec.item_ids[2]]
    capsys.readouterr()
    assert cli_main(["recommend", str(run), "--item", hist[0], "--item", hist[1]]) == 0
    by_item = capsys.readouterr().out
    assert cli_main(["recommend", str(run), "--history", *hist]) == 0
    assert capsys.readouterr().out == by_item
    # An id that holds a space or a comma is one id with --item (unknown here: skipped
    # with a warning that quotes it whole).
    assert cli_main(["recommend", str(run), "--item", hist[0], "--item", "it,1 x"]) == 0
    assert "it,1 x" in capsys.readouterr().err


# -- sizes checked before anything is allocated ----------------------------------------


SIZE_CASES = [
    (["model.dim=1000000"], r"model.dim 1000000: the model .* needs about [\d,.]+ GiB"),
    (
        ["loss=sampled_softmax", "num_negatives=100000000"],
        r"train.num_negatives 100000000: a step .* needs about",
    ),
    (["train.seed=99999999999999999999"], r"train.seed must be in \[0, 2\*\*63\)"),
    (["train.batch_size=2.5"], r"config key train.batch_size expects int, got 2.5"),
]


@pytest.mark.parametrize(("overrides", "message"), SIZE_CASES)
def test_impossible_sizes_are_refused_naming_the_key(
    tmp_path: Path, overrides: list[str], message: str, capsys
) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet"]
    assert cli_main([*argv, "--set", *overrides]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--history-len", "1000000000"], r"--history-len 1000000000: .* samples needs about"),
        (["--semantic", "kmeans", "--clusters", "0"], r"--clusters must be an integer >= 1"),
    ],
)
def test_prepare_refuses_impossible_sizes(
    tmp_path: Path, flags: list[str], message: str, capsys
) -> None:
    from solidrec.data.synth import SynthConfig, generate, write_generic

    inter, items = write_generic(generate(SynthConfig(users=60, items=150)), tmp_path / "raw")
    argv = ["prepare", "--format", "generic", "--input", str(inter), "--items", str(items)]
    assert cli_main([*argv, "--out", str(tmp_path / "d"), "--no-progress", *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "d").exists()


# -- prepared datasets are verified when read --------------------------------------------


def _rewrite(data: Path, name: str, **arrays: np.ndarray) -> None:
    """Replace arrays of one file (the manifest's content_hash left stale)."""
    from solidrec.data.io import write_npz

    with np.load(data / name) as z:
        current = {k: z[k] for k in z.files}
    write_npz(data / name, {**current, **arrays})


def _rehash(data: Path) -> None:
    """Make the manifest match the edited files, as a careful tamperer would."""
    import json

    from solidrec.data.io import content_hash
    from solidrec.data.prepared import ARRAY_FILES

    m = json.loads((data / "manifest.json").read_text())
    m["content_hash"] = content_hash(data, list(ARRAY_FILES))
    (data / "manifest.json").write_text(json.dumps(m))


def test_an_edited_array_file_is_refused_by_training(tmp_path: Path, capsys) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    with np.load(data / "test.npz") as z:
        cand = z["candidates"].copy()
    cand[:, 1:] = cand[:, :1]  # every candidate is the positive: recall 0.0 silently before
    _rewrite(data, "test.npz", candidates=cand)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet"]
    assert cli_main(argv) == 2
    assert "do not match the manifest's content_hash" in capsys.readouterr().err
    _rehash(data)
    assert cli_main(argv) == 2
    assert "test.npz: a row's candidates repeat an item" in capsys.readouterr().err


ARRAY_CASES = [
    ("train.npz", lambda a: {"hist": a["hist"] + 10_000}, "hist holds item indices outside"),
    ("valid.npz", lambda a: {"candidates": -a["candidates"]}, "candidates hold item indices"),
    ("items.npz", lambda a: {"semantic_id": a["semantic_id"] * 0}, "semantic_id must be 0"),
    ("test.npz", lambda a: {"hist_len": a["hist_len"] + 99}, "hist_len outside"),
    (
        "test.npz",
        lambda a: {"candidates": np.repeat(a["candidates"][:, :1], a["candidates"].shape[1], 1)},
        "a row's candidates repeat an item",
    ),
]


@pytest.mark.parametrize(("file", "edit", "message"), ARRAY_CASES)
def test_values_no_run_can_use_are_named(tmp_path: Path, file: str, edit, message: str) -> None:
    from solidrec.data.prepared import PreparedFormatError, load_prepared

    data = make_tiny_dataset(tmp_path / "data")
    with np.load(data / file) as z:
        arrays = {k: z[k] for k in z.files}
    _rewrite(data, file, **edit(arrays))
    _rehash(data)
    with pytest.raises(PreparedFormatError, match=f"{file}: {message}"):
        load_prepared(data)


def test_nan_item_embeddings_are_refused(tmp_path: Path) -> None:
    from solidrec.data.prepared import PreparedFormatError, load_prepared

    data = make_tiny_dataset(tmp_path / "data")
    with np.load(data / "items.npz") as z:
        n = len(z["semantic_id"])
    emb = np.ones((n, 4), dtype=np.float32)
    emb[3, 1] = np.nan
    _rewrite(data, "items.npz", embedding=emb)
    _rehash(data)
    with pytest.raises(PreparedFormatError, match="embedding holds NaN"):
        load_prepared(data)


# -- a model directory is read through one validating loader -----------------------------


def _tampered(run: Path, tmp_path: Path) -> Path:
    import shutil

    d = tmp_path / "model"
    shutil.copytree(run / "model", d)
    return d


def _retouch(d: Path, manifest: dict | None = None) -> None:
    """Re-hash the files into the manifest (a tamperer who knows the format)."""
    import json

    from solidrec.data.io import sha256_file

    m = manifest if manifest is not None else json.loads((d / "manifest.json").read_text())
    if isinstance(m.get("files"), dict):
        m["files"] = {n: sha256_file(d / n) for n in m["files"]}
    (d / "manifest.json").write_text(json.dumps(m))


def _edit_json(d: Path, name: str, change) -> None:
    import json

    obj = json.loads((d / name).read_text())
    (d / name).write_text(json.dumps(change(obj)))


def _edit_yaml(d: Path, change) -> None:
    import yaml

    cfg = yaml.safe_load((d / "config.yaml").read_text())
    (d / "config.yaml").write_text(change(cfg) if callable(change) else change)


def _set_model(key, value):
    def change(cfg):
        import yaml

        cfg["model"][key] = value
        return yaml.safe_dump(cfg)

    return change


MANIFEST_CASES = {
    "files a list": (lambda m: {**m, "files": list(m["files"])}, "files must map exactly"),
    "files null": (lambda m: {**m, "files": None}, "files must map exactly"),
    "files /dev/zero": (
        lambda m: {**m, "files": {**m["files"], "/dev/zero": "0" * 64}},
        "files must map exactly",
    ),
    "history_len -5": (lambda m: {**m, "history_len": -5}, "history_len must be an integer"),
    "history_len 0": (lambda m: {**m, "history_len": 0}, "history_len must be an integer"),
    "history_len '10'": (lambda m: {**m, "history_len": "10"}, "history_len must be an integer"),
    "history_len 1e12": (lambda m: {**m, "history_len": 10**12}, "history_len must be an int"),
    "history_len missing": (
        lambda m: {k: v for k, v in m.items() if k != "history_len"},
        "history_len must be an integer",
    ),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_tampered_manifest_is_one_named_error(run: Path, tmp_path: Path, case: str) -> None:
    import json

    from solidrec.runs.model_dir import ModelDirError

    d = _tampered(run, tmp_path)
    change, message = MANIFEST_CASES[case]
    (d / "manifest.json").write_text(
        json.dumps(change(json.loads((d / "manifest.json").read_text())))
    )
    with pytest.raises(ModelDirError, match=message):
        Recommender.from_run(d, device="cpu")


FILE_CASES = {
    "dim changed": (
        lambda d: _edit_yaml(d, _set_model("dim", 48)),
        r"config.yaml edited, or weights of another model",
    ),
    "dim 1e9": (lambda d: _edit_yaml(d, _set_model("dim", 10**9)), r"model.dim 1000000000: .*GiB"),
    "empty config": (lambda d: _edit_yaml(d, ""), "config.yaml: holds no config"),
    "items shorter": (
        lambda d: _edit_json(d, "items.json", lambda o: {**o, "item_id": o["item_id"][:-1]}),
        "item_id and semantic_id must have num_items",
    ),
    "10 extra ids": (
        lambda d: _edit_json(
            d, "items.json", lambda o: {**o, "item_id": o["item_id"] + [f"x{i}" for i in range(10)]}
        ),
        "item_id and semantic_id must have num_items",
    ),
    "no title key": (
        lambda d: _edit_json(d, "items.json", lambda o: {**o, "title": 3}),
        "title must be null or",
    ),
    "empty semantic_name": (
        lambda d: _edit_json(d, "items.json", lambda o: {**o, "semantic_name": []}),
        "semantic_id must lie in",
    ),
    "items a list": (lambda d: _edit_json(d, "items.json", lambda o: [1, 2]), "expected a mapping"),
    "invalid json": (
        lambda d: (d / "items.json").write_text("{not json"),
        r"items.json: unreadable",
    ),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_tampered_files_are_one_named_error(run: Path, tmp_path: Path, case: str) -> None:
    from solidrec.runs.model_dir import ModelDirError

    d = _tampered(run, tmp_path)
    change, message = FILE_CASES[case]
    change(d)
    _retouch(d)
    with pytest.raises(ModelDirError, match=message):
        Recommender.from_run(d, device="cpu")


def test_weights_without_a_model_key(run: Path, tmp_path: Path) -> None:
    from solidrec.runs.checkpoint import save_checkpoint
    from solidrec.runs.model_dir import ModelDirError

    d = _tampered(run, tmp_path)
    save_checkpoint(d / "weights.pt", {"other": torch.zeros(1)})
    _retouch(d)
    with pytest.raises(ModelDirError, match="no 'model' state dict"):
        Recommender.from_run(d, device="cpu")


@pytest.mark.parametrize("name", ["config.yaml", "items.json"])
def test_a_symlink_out_of_the_directory_is_refused_unread(
    run: Path, tmp_path: Path, name: str
) -> None:
    import os

    from solidrec.runs.model_dir import ModelDirError

    d = _tampered(run, tmp_path)
    (d / name).unlink()
    os.symlink("/dev/zero", d / name)  # hashing it would never end
    with pytest.raises(ModelDirError, match=f"{name}: a symbolic link"):
        Recommender.from_run(d, device="cpu")


def test_the_cli_says_the_same_in_one_line(run: Path, tmp_path: Path, capsys) -> None:
    d = _tampered(run, tmp_path)
    _edit_yaml(d, _set_model("dim", 48))
    _retouch(d)
    assert cli_main(["recommend", str(d), "--history", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "weights.pt" in err
