"""The user-facing surface: the Python API, trained-model directories, ``Recommender``,
``solidrec recommend``, ``torch.export`` of every mode, ``--device`` and ``--data``."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
import solidrec
import torch
from solidrec.cli import main as cli_main
from solidrec.config import ModelConfig, resolve_device
from solidrec.metrics import METRIC_KEYS
from solidrec.models import SolidModel
from solidrec.modes import SOLID_MODES, get_mode
from solidrec.recommend import Recommender, UnknownItemError
from solidrec.runs.layout import MODEL_DIR
from solidrec.runs.layout import MODEL_ITEMS as ITEMS
from solidrec.runs.model_dir import ModelDirError
from solidrec.testing import make_tiny_dataset, tiny_run_args

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli_main(tiny_run_args(tiny, out) + ["--quiet"]) == 0
    return out


def _manual_top(rec: Recommender, history: list[str], k: int, exclude: bool) -> list[str]:
    """Top-k by calling the model's forward on every item, the slow obvious way."""
    idx = [rec.index[h] for h in history]
    L = rec.history_len
    hist = torch.zeros(1, L, dtype=torch.long)
    hist[0, L - len(idx[-L:]) :] = torch.tensor(idx[-L:])
    items = torch.arange(1, rec.num_items + 1).unsqueeze(0)
    with torch.no_grad():
        logits = rec.model(hist, items)[0][0]
    order = [int(i) + 1 for i in logits.argsort(descending=True)]
    if exclude:
        order = [i for i in order if i not in idx]
    return [rec.item_ids[i] for i in order[:k]]


def test_recommend_equals_scoring_every_item_by_forward(run: Path) -> None:
    rec = Recommender.from_run(run, device="cpu")
    history = ["i3", "i9", "i15", "i21"]
    got = rec.recommend(history, k=7)
    assert [i for i, _ in got] == _manual_top(rec, history, 7, exclude=True)
    assert all(a[1] >= b[1] for a, b in zip(got, got[1:], strict=False))
    assert not set(history) & {i for i, _ in got}
    seen = rec.recommend(history, k=rec.num_items, exclude_seen=False)
    assert len(seen) == rec.num_items and set(history) <= {i for i, _ in seen}
    # Only the last L items count.
    long = [f"i{i}" for i in range(1, 30)]
    assert rec.recommend(long, k=5, exclude_seen=False) == rec.recommend(
        long[-rec.history_len :], k=5, exclude_seen=False
    )
    # The batch form is the single form, row by row.
    batch = rec.recommend_batch([history, ["i2"], long], k=4, batch_size=2)
    for got_row, h in zip(batch, (history, ["i2"], long), strict=True):
        single = rec.recommend(h, k=4)
        assert [i for i, _ in got_row] == [i for i, _ in single]
        assert [s for _, s in got_row] == pytest.approx([s for _, s in single], rel=1e-5)
    # k beyond what is left: every remaining item once.
    assert len(rec.recommend(["i1"], k=10_000)) == rec.num_items - 1


def test_unknown_ids_are_skipped_with_a_warning_or_refused(run: Path) -> None:
    rec = Recommender.from_run(run, device="cpu")
    with pytest.warns(UserWarning, match=r"1 item id\(s\) the model does not know: nope"):
        got = rec.recommend(["i3", "nope"], k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert got == rec.recommend(["i3"], k=3)
    with pytest.raises(UnknownItemError, match="nope, zzz"):
        rec.recommend(["i3", "nope", "zzz"], unknown="error")
    with pytest.raises(ValueError, match="no item the model knows"), pytest.warns(UserWarning):
        rec.recommend(["nope"])
    with pytest.raises(ValueError, match="unknown must be one of"):
        rec.recommend(["i3"], unknown="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rec.recommend(["i3"], k=0)
    with pytest.raises(TypeError, match="not one string"):
        rec.recommend("i3")


def test_model_directory_is_self_contained(run: Path, tmp_path: Path) -> None:
    """Copied anywhere, without the prepared dataset, the model directory serves the same
    recommendations; a damaged or foreign one is refused with its path."""
    base = Recommender.from_run(run, device="cpu").recommend(["i3", "i9"], k=5)
    moved = tmp_path / "served"
    shutil.copytree(run / MODEL_DIR, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["num_items"] == 60
    assert Recommender.from_run(moved, device="cpu").recommend(["i3", "i9"], k=5) == base
    items = json.loads((moved / ITEMS).read_text())
    items["item_id"][1] = "other"
    (moved / ITEMS).write_text(json.dumps(items))
    with pytest.raises(ModelDirError, match="items.json: content does not match"):
        Recommender.from_run(moved)
    with pytest.raises(ModelDirError, match="nothing: no such run directory"):
        Recommender.from_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="not a solidrec model directory"):
        Recommender.from_run(tmp_path / "empty")


def test_a_run_without_a_model_directory_loads_from_its_data(run: Path, tmp_path: Path) -> None:
    """Runs trained before model directories existed: config + dataset + best checkpoint."""
    base = Recommender.from_run(run, device="cpu").recommend(["i3", "i9"], k=5)
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns(MODEL_DIR, ".lock"))
    assert Recommender.from_run(old, device="cpu").recommend(["i3", "i9"], k=5) == base


@pytest.mark.parametrize(
    ("backbone", "solid", "stage"),
    [("sasrec", s, st) for s in SOLID_MODES for st in range(1, get_mode(s).stages + 1)]
    + [("din", "full", 2), ("gru4rec", "scl", 1), ("bert4rec", "full", 2)],
)
@pytest.mark.filterwarnings("ignore:The tensor attributes")  # the GRU's flat weights
def test_every_mode_exports(backbone: str, solid: str, stage: int) -> None:
    """``torch.export`` with dynamic batch and candidates gives the eager logits; failed
    for every mode with a codebook before quantisation stopped indexing by the mask."""
    torch.manual_seed(0)
    sem = torch.randint(1, 5, (41,))
    sem[0] = 0
    model = SolidModel(ModelConfig(backbone=backbone, generator="duet", solid=solid), sem, 4, 6)
    model.set_stage(stage)
    rec = Recommender(model, [""] + [f"i{i}" for i in range(1, 41)], 6)
    program = rec.export()
    hist = torch.randint(0, 41, (5, 6))
    hist[0] = 0
    hist[0, -1] = 3
    items = torch.randint(1, 41, (5, 11))
    with torch.no_grad():
        want = model(hist, items)
    got = program.module()(hist, items)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_cli_recommend(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec = Recommender.from_run(run, device="cpu")
    want = rec.recommend(["i3", "i9"], k=4)
    capsys.readouterr()
    assert cli_main(["recommend", str(run), "--history", "i3", "i9", "--k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[1] for ln in lines] == [i for i, _ in want]
    assert [ln.split("\t")[0] for ln in lines] == ["1", "2", "3", "4"]
    f = tmp_path / "histories.txt"
    f.write_text("i3 i9\ni2,i5\n")
    assert cli_main(["recommend", str(run), "--file", str(f), "--k", "3", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[0]["history"] == ["i3", "i9"] and rows[0]["items"] == [i for i, _ in want[:3]]
    assert rows[1]["items"] == [i for i, _ in rec.recommend(["i2", "i5"], k=3)]
    assert cli_main(["recommend", str(run), "--history", "i3", "nope"]) == 0
    assert "warning: --history: 1 item id(s) the model does not know: nope" in (
        capsys.readouterr().err
    )
    assert cli_main(["recommend", str(run), "--history", "nope", "--unknown", "error"]) == 2
    assert "error: --history: 1 item id(s) the model does not know: nope" in capsys.readouterr().err
    assert cli_main(["recommend", str(tmp_path / "missing"), "--history", "i3"]) == 2
    assert "missing: no such run directory" in capsys.readouterr().err


def test_evaluate_from_another_directory_and_with_data(
    run: Path, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    """config.yaml holds absolute paths, and ``--data`` points a run at a moved dataset
    (the run's own dataset only: the fingerprint is checked)."""
    saved = json.loads((run / "metrics.json").read_text())
    monkeypatch.chdir(tmp_path)
    assert os.path.isabs(solidrec.RunConfig.load(run / "config.yaml").data)
    capsys.readouterr()
    assert cli_main(["evaluate", str(run), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(out[k] == pytest.approx(saved[k], abs=1e-12) for k in METRIC_KEYS)
    moved = tmp_path / "moved"
    shutil.copytree(tiny, moved)
    assert solidrec.evaluate_run(run, data=moved, device="cpu") == pytest.approx(
        {k: saved[k] for k in METRIC_KEYS}, abs=1e-12
    )
    other = make_tiny_dataset(tmp_path / "other", seed=1)
    assert cli_main(["evaluate", str(run), "--data", str(other)]) == 2
    assert "is not the prepared dataset" in capsys.readouterr().err


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def _readme_python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's Python API example, as printed there, run in an empty directory."""
    monkeypatch.chdir(tmp_path)
    code = _readme_python_example()
    # The README trains for real; one short epoch keeps the test quick.
    code = code.replace("max_epochs=2", "max_epochs=1, max_steps_per_epoch=3")
    assert "max_steps_per_epoch=3" in code, "the README example changed: update this test"
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    recs = namespace["recs"]
    assert len(recs) == 5 and all(isinstance(i, str) and isinstance(s, float) for i, s in recs)
    assert set(namespace["metrics"]) >= set(METRIC_KEYS)


@pytest.mark.parametrize("rows", [7, 16384])
def test_target_dependent_score_all_in_chunks_equals_forward(rows: int) -> None:
    """DIN scores (history, candidate) pairs about ``rows`` at a time (bounded memory:
    each pair carries its own generated weights); any chunking gives forward's logits."""
    torch.manual_seed(0)
    sem = torch.randint(1, 5, (41,))
    sem[0] = 0
    model = SolidModel(ModelConfig(backbone="din", generator="duet", solid="full"), sem, 4, 6)
    model.set_stage(2)
    model.eval()
    hist = torch.randint(1, 41, (3, 6))
    got = model.score_all(hist, rows=rows)
    with torch.no_grad():
        want = model(hist, torch.arange(1, 41).expand(3, -1))[0]
    torch.testing.assert_close(got[:, 1:], want)
    assert torch.isneginf(got[:, 0]).all()


def test_report_over_a_folder_of_trained_runs(run: Path, capsys: pytest.CaptureFixture) -> None:
    """RUNDIR/model/ holds a config.yaml too: it is the run's served model, not a run."""
    capsys.readouterr()
    assert cli_main(["report", str(run.parent)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err, captured.err
    assert "| SASRec | Ours (DUET) |" in captured.out


def test_cli_recommend_file_skips_blank_lines_and_names_the_bad_history(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    f = tmp_path / "h.txt"
    f.write_text("i3 i9\n\ni2\n   \ni5\n")
    capsys.readouterr()
    assert cli_main(["recommend", str(run), "--file", str(f), "--json", "--batch-size", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    # A bad line is named; the good ones are still answered (exit 1: not all were).
    f.write_text("i3 i9\ni2\nnope\n")
    argv = ["recommend", str(run), "--file", str(f), "--batch-size", "2"]
    assert cli_main(argv) == 1
    out, err = capsys.readouterr()
    assert "line 3: no item the model knows" in err
    assert out.count("# line ") == 2 and "# line 1: i3 i9" in out
