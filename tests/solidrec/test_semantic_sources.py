"""Semantic ids where items have no labels and no text: degenerate ids are reported
loudly (``prepare`` warns, the manifest records it, ``stats`` repeats it), and
``prepare --from-run RUN`` clusters a trained run's item table, matched by item id.

Every input is generated here (``solidrec.data.synth``); ``--neg-eval 9`` keeps the
datasets small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from solidrec.cli import main
from solidrec.data import load_prepared
from solidrec.data.semantic import SemanticConfig, assign_semantic_ids, kmeans
from solidrec.data.synth import SynthConfig, generate, write_generic

ONE_ID = "items got one semantic id"
ZERO_TIES = "got their category by nearest centroid (Eq. 8-10) from all-zero embeddings"


def _synth(out: Path, seed: int = 2) -> tuple[Path, Path]:
    """(interactions.csv, items.jsonl) of a small synthetic set."""
    data = generate(SynthConfig(users=120, items=80, mean_len=8, seed=seed))
    return write_generic(data, out)


def _prepare(inp: Path, out: Path, *extra: str) -> int:
    args = ["prepare", "--format", "generic", "--input", str(inp), "--out", str(out)]
    return main([*args, "--neg-eval", "9", "--no-progress", *extra])


def _stats_err(d: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    """(``stats --json``, its stderr)."""
    capsys.readouterr()
    assert main(["stats", str(d), "--json"]) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out), cap.err


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("solidrec prepare: error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


# ----------------------------------------------------------------- degenerate semantic ids


def test_no_items_file_warns_and_stats_repeats_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    inter, items = _synth(tmp_path / "raw")
    with caplog.at_level("WARNING", logger="solidrec.data"):
        assert _prepare(inter, tmp_path / "p") == 0
    n = load_prepared(tmp_path / "p").num_items
    assert f"all {n:,} {ONE_ID}" in caplog.text and "--from-run RUN" in caplog.text
    warning = load_prepared(tmp_path / "p").manifest["params"]["semantic_warning"]
    assert warning.startswith(f"all {n:,} {ONE_ID}") and "no items file" in warning
    s, err = _stats_err(tmp_path / "p", capsys)
    assert s["semantic_ids"] == 1 and s["semantic_warning"] == warning
    assert err.strip() == f"solidrec stats: warning: {warning}"
    caplog.clear()
    with caplog.at_level("WARNING", logger="solidrec.data"):  # up to date: warned again
        assert _prepare(inter, tmp_path / "p") == 0
    assert "up to date" in capsys.readouterr().out and warning in caplog.text

    # with the items file: labels, no warning anywhere
    assert _prepare(inter, tmp_path / "q", "--items", str(items)) == 0
    assert "semantic_warning" not in load_prepared(tmp_path / "q").manifest["params"]
    s, err = _stats_err(tmp_path / "q", capsys)
    assert s["semantic_ids"] > 1 and s["semantic_warning"] is None and err == ""


def test_prepare_warning_reaches_stderr(tmp_path: Path) -> None:
    """The real CLI (its own logging set-up) prints the warning on stderr, exit 0."""
    inter, _ = _synth(tmp_path / "raw")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["prepare", "--format", "generic", "--input", str(inter), "--out", str(tmp_path / "p")]
    for argv in ([*args, "--neg-eval", "9", "--no-progress"], ["stats", str(tmp_path / "p")]):
        done = subprocess.run(
            [sys.executable, "-m", "solidrec", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert ONE_ID in done.stderr and "--from-run RUN" in done.stderr
        assert "#Semantic" in done.stdout


def test_one_label_for_all_items_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inter, items = _synth(tmp_path / "raw")
    # every synthetic path starts at "Synthetic"
    assert _prepare(inter, tmp_path / "p", "--items", str(items), "--category-level", "1") == 0
    _, err = _stats_err(tmp_path / "p", capsys)
    assert ONE_ID in err and "the data's only label is 'Synthetic'" in err
    assert "--category-level" in err


def _untitled_items(tmp_path: Path, seed: int = 2) -> tuple[Path, Path]:
    """Interactions and an items file with categories but no titles: every 4th item
    has a second path (another item's), 3% have none."""
    data = generate(SynthConfig(users=120, items=80, mean_len=8, seed=seed))
    inter, _ = write_generic(data, tmp_path / "raw")
    lines = []
    for i, path in enumerate(data.paths):
        paths = [path] if path else []
        other = data.paths[(i + 7) % len(data.paths)]
        if path and i % 4 == 0 and other and other != path:
            paths.append(other)
        lines.append(json.dumps({"item_id": f"i{i:06d}", "categories": paths}))
    items = tmp_path / "raw" / "untitled.jsonl"
    items.write_text("\n".join(lines) + "\n")
    return inter, items


def test_zero_embedding_ties_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    inter, items = _untitled_items(tmp_path)
    with caplog.at_level("WARNING", logger="solidrec.data"):
        assert _prepare(inter, tmp_path / "p", "--items", str(items)) == 0
    assert ZERO_TIES in caplog.text and "the first label in sorted order wins" in caplog.text
    ds = load_prepared(tmp_path / "p")
    assert ds.num_semantic > 1  # the labels still give ids: only the choices are blind
    _, err = _stats_err(tmp_path / "p", capsys)
    assert ZERO_TIES in err and "items with several labels and" in err
    assert "unlabeled items" in err and "--unlabeled unknown" in err

    # unlabeled items in their own id: only the multi-label choices are blind
    assert _prepare(inter, tmp_path / "u", "--items", str(items), "--unlabeled", "unknown") == 0
    _, err = _stats_err(tmp_path / "u", capsys)
    assert ZERO_TIES in err and "unlabeled items got" not in err


def test_assign_semantic_ids_reports_blind_choices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cats = [(("B",),), (("A",), ("B",)), (("A",),), ()]
    np.save(tmp_path / "zero.npy", np.zeros((4, 3), np.float32))
    cfg = SemanticConfig(embedding="id", item_embeddings=tmp_path / "zero.npy")
    res = assign_semantic_ids(4, None, cats, cfg, seed=0)
    assert res.semantic_id.tolist() == [0, 2, 1, 1, 1]  # ties: label order
    assert res.warning is not None and ZERO_TIES in res.warning
    assert "1 items with several labels and 1 unlabeled items" in res.warning
    # two labels, both items choosing the same: one id, said once, after the cause
    both = [(("A",), ("B",)), (("A",), ("B",))]
    (tmp_path / "ids.txt").write_text("x\ny\nz\nw\n")
    cfg = SemanticConfig(
        embedding="id", item_embeddings=tmp_path / "zero.npy", embedding_ids=tmp_path / "ids.txt"
    )
    res = assign_semantic_ids(2, None, both, cfg, seed=0, item_ids=["x", "y"])
    assert res.num_semantic == 1 and ZERO_TIES in res.warning and ONE_ID in res.warning
    # some choices blind only: counted in the log, no warning recorded
    emb = np.asarray([[1, 0, 0], [0, 0, 0], [2, 0, 0], [3, 0, 0]], np.float32)
    np.save(tmp_path / "some.npy", emb)
    some = SemanticConfig(embedding="id", item_embeddings=tmp_path / "some.npy")
    with caplog.at_level("WARNING", logger="solidrec.data"):
        res = assign_semantic_ids(4, None, cats, some, seed=0)
    assert res.warning is None and "1 of 2 items whose category is picked" in caplog.text
    # single labels need no embedding: nothing to report
    res = assign_semantic_ids(3, None, [(("B",),), (("A",),), (("B",),)], cfg, seed=0)
    assert res.warning is None


# ------------------------------------------------------------------------------ --from-run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dataset without items file, two tiny ID-model runs on it (seeds 1, 2), and the
    same interactions in reverse row order plus a user with two items no run knows, so
    the new dataset numbers its items differently."""
    tmp = tmp_path_factory.mktemp("from_run")
    inter, _ = _synth(tmp / "raw")
    assert _prepare(inter, tmp / "D") == 0
    for name, seed in (("R1", "1"), ("R2", "2")):
        train = ["train", "--data", str(tmp / "D"), "--out", str(tmp / name)]
        train += ["--generator", "none", "--epochs", "1", "--max-steps-per-epoch", "2"]
        train += ["--quiet", "--seed", seed, "--set", "batch_size=64", "threads=1"]
        assert main(train) == 0
    head, *rows = inter.read_text().splitlines()
    new = ["newbie,new-a,1", "newbie,new-b,2", "newbie,new-a,3"]
    other = tmp / "reordered.csv"
    other.write_text("\n".join([head, *new, *reversed(rows)]) + "\n")
    return {"D": tmp / "D", "R1": tmp / "R1", "R2": tmp / "R2", "input": other}


def _expected(run: Path, item_ids: np.ndarray, k: int, seed: int = 2024) -> np.ndarray:
    """Semantic ids by hand: the run's item table matched by id (unknown items: zero),
    k-means with prepare's seed, clusters numbered 1.. by their first item."""
    from solidrec.runs.checkpoint import load_checkpoint

    table = load_checkpoint(run / "model" / "weights.pt")["model"]["item_emb.weight"]
    ids = json.loads((run / "model" / "items.json").read_text())["item_id"]
    row = {x: i for i, x in enumerate(ids) if i > 0}
    emb = np.zeros((len(item_ids), table.shape[1]), np.float32)
    for i, x in enumerate(item_ids.tolist()):
        if x in row:
            emb[i] = table[row[x]].numpy()
    lab = kmeans(emb, k, seed)
    first: dict[int, int] = {}
    return np.asarray([0] + [first.setdefault(x, len(first) + 1) for x in lab.tolist()])


def test_from_run_is_kmeans_of_the_run_table_by_item_id(
    tmp_path: Path, runs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    flags = ["--semantic", "kmeans", "--clusters", "5", "--from-run", str(runs["R1"])]
    with caplog.at_level("WARNING", logger="solidrec.data"):
        assert _prepare(runs["input"], tmp_path / "p", *flags, "--embedding-feature") == 0
    ds = load_prepared(tmp_path / "p")
    base = load_prepared(runs["D"]).item_original_id
    assert ds.num_items == len(base) + 1  # base items and new-a, new-b (newbie's new items)
    known = [x for x in ds.item_original_id[1:].tolist() if not x.startswith("new-")]
    assert sorted(known) == sorted(base[1:].tolist()) and known != base[1:].tolist()
    expected = _expected(runs["R1"], ds.item_original_id[1:], 5)
    np.testing.assert_array_equal(ds.semantic_id, expected)
    assert ds.num_semantic == 5
    assert f"--from-run {runs['R1']}: 2 of {ds.num_items} items have no embedding" in caplog.text
    params = ds.manifest["params"]
    assert params["semantic"]["embedding"] == "id"  # implied by --from-run
    assert params["semantic"]["from_run"] == str((runs["R1"] / "model").resolve())
    assert "semantic_warning" not in params
    # the stored feature is the same matched table, new items zero
    emb = ds.item_embedding
    assert emb is not None and not emb[0].any()
    new = [i for i, x in enumerate(ds.item_original_id.tolist()) if x.startswith("new-")]
    assert len(new) == 2 and not emb[new].any()


def test_from_run_enters_the_fingerprint(
    tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--semantic", "kmeans", "--clusters", "4", "--embedding", "id"]
    assert _prepare(runs["input"], tmp_path / "p", *flags, "--from-run", str(runs["R1"])) == 0
    fp = load_prepared(tmp_path / "p").manifest["fingerprint"]
    files = {
        Path(f["path"]).name for f in load_prepared(tmp_path / "p").manifest["source"]["files"]
    }
    assert {"weights.pt", "items.json"} <= files
    capsys.readouterr()
    # RUN/model is the same table as RUN
    model = str(runs["R1"] / "model")
    assert _prepare(runs["input"], tmp_path / "p", *flags, "--from-run", model) == 0
    assert "up to date" in capsys.readouterr().out
    again = (*flags, "--from-run", str(runs["R2"]), "--force")  # other embeddings: replaces
    assert _prepare(runs["input"], tmp_path / "p", *again) == 0
    assert "written" in capsys.readouterr().out
    ds = load_prepared(tmp_path / "p")
    assert ds.manifest["fingerprint"] != fp
    np.testing.assert_array_equal(ds.semantic_id, _expected(runs["R2"], ds.item_original_id[1:], 4))


def test_from_run_option_errors_are_one_line(
    tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "emb.npy", np.ones((3, 2), np.float32))
    run = str(runs["R1"])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("manifest.json", "weights.pt", "items.json"):
        (damaged / name).write_bytes((runs["R1"] / "model" / name).read_bytes())
    items = json.loads((damaged / "items.json").read_text())
    items["item_id"][1], items["item_id"][2] = items["item_id"][2], items["item_id"][1]
    (damaged / "items.json").write_text(json.dumps(items))
    cases = [
        (["--from-run", run, "--item-embeddings", str(tmp_path / "emb.npy")], "pass one"),
        (["--from-run", run, "--embedding", "text"], "pass --embedding id (or fusion)"),
        (["--from-run", str(tmp_path / "nowhere")], "no trained model there"),
        (["--from-run", str(runs["D"])], "no trained model there"),  # a dataset, not a run
        (["--from-run", str(damaged)], "does not match manifest.json"),
        (["--from-run", run, "--embedding-key", "nope"], "no 2-D tensor 'nope'"),
    ]
    for flags, problem in cases:
        capsys.readouterr()
        assert _prepare(runs["input"], tmp_path / "p", "--semantic", "kmeans", *flags) == 2
        err = _one_line_error(capsys)
        assert "--from-run" in err and problem in err, (flags, err)
    assert not (tmp_path / "p").exists()


def test_train_repeats_the_warning_for_modes_reading_semantic_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPG trains on the semantic sequence: a constant one is worth a line before
    training; the id-only baseline reads none, so it stays quiet."""
    inter, _ = _synth(tmp_path / "raw")
    assert _prepare(inter, tmp_path / "p") == 0
    base = ["train", "--data", str(tmp_path / "p"), "--generator", "duet", "--epochs", "1"]
    base += ["--max-steps-per-epoch", "1", "--threads", "1", "--no-progress"]
    capsys.readouterr()
    assert main([*base, "--solid", "full", "--out", str(tmp_path / "full")]) == 0
    err = capsys.readouterr().err
    assert f"solidrec train: warning: {tmp_path / 'p'}: all " in err and ONE_ID in err
    assert main([*base, "--solid", "off", "--out", str(tmp_path / "off")]) == 0
    assert "warning" not in capsys.readouterr().err
