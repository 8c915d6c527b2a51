"""A user's data and intent are never lost: prepare never deletes what it did not write,
repeated options accumulate, the softmax objective trains with the settings it needs,
an interrupt saves and says how to resume, recommend answers every good history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from solidrec.cli import build_parser
from solidrec.cli import main as cli_main
from solidrec.commands.train import resolve_config
from solidrec.config import RECIPES, RunConfig, TrainConfig
from solidrec.data.synth import SynthConfig, generate, write_generic
from solidrec.testing import make_tiny_dataset


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cfg = SynthConfig(users=150, items=200, mean_len=8.0)
    return write_generic(generate(cfg), tmp_path_factory.mktemp("raw") / "raw", "csv")


def _prepare(raw: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    inter, items = raw
    return [
        "prepare", "--format", "generic", "--input", str(inter), "--items", str(items),
        "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


# -- prepare never deletes what it did not write -----------------------------------------


def test_prepare_refuses_a_folder_holding_its_own_input(tmp_path: Path, capsys) -> None:
    data = generate(SynthConfig(users=60, items=150))
    inter, items = write_generic(data, tmp_path / "raw", "csv")
    before = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert cli_main(_prepare((inter, items), tmp_path / "raw")) == 2
    assert "contains the input" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == before
    # --force does not make it safe.
    assert cli_main(_prepare((inter, items), tmp_path / "raw", "--force")) == 2


def test_prepare_refuses_a_non_empty_folder_that_is_not_a_dataset(
    raw: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "scratch"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "keep.py").write_text("print(1)")
    for extra in ((), ("--force",)):
        assert cli_main(_prepare(raw, out, *extra)) == 2
        err = capsys.readouterr().err
        assert "is not empty (notes.txt, sub)" in err and "not a prepared dataset" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sub" / "keep.py").read_text() == "print(1)"
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    assert cli_main(_prepare(raw, tmp_path / "empty")) == 0


def test_replacing_a_dataset_of_other_inputs_needs_force_and_says_so(
    raw: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "data"
    assert cli_main(_prepare(raw, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    capsys.readouterr()
    # The same inputs and settings: up to date, no --force needed.
    assert cli_main(_prepare(raw, out)) == 0
    assert "up to date" in capsys.readouterr().out
    # Other settings: refused without --force, the old dataset untouched.
    assert cli_main(_prepare(raw, out, "--history-len", "5")) == 2
    err = capsys.readouterr().err
    assert "holds a dataset prepared from interactions.csv, items.jsonl" in err
    assert "--force" in err
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert cli_main(_prepare(raw, out, "--history-len", "5", "--force")) == 0
    assert f"replacing {out}" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] != manifest["fingerprint"]
    # A file of the user's inside a dataset: never deleted, not even with --force.
    (out / "README.txt").write_text("my notes")
    assert cli_main(_prepare(raw, out, "--force")) == 2
    assert "README.txt" in capsys.readouterr().err
    assert (out / "README.txt").read_text() == "my notes"


def test_prepare_refuses_a_file_as_out(raw: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    assert cli_main(_prepare(raw, tmp_path / "f")) == 2
    assert "not a directory" in capsys.readouterr().err


def test_report_groups_by_the_fingerprint_each_run_recorded(
    raw: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    data, run = tmp_path / "data", tmp_path / "runs" / "a"
    assert cli_main(_prepare(raw, data)) == 0
    train = ["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--quiet"]
    assert cli_main([*train, "--threads", "1", "--max-steps-per-epoch", "2"]) == 0
    recorded = json.loads((run / "model" / "manifest.json").read_text())["dataset_fingerprint"]
    assert cli_main(_prepare(raw, data, "--history-len", "4", "--force")) == 0
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert f"fingerprint {recorded[:12]}" in out
    assert "prepared again since" in err


# -- repeated options accumulate ---------------------------------------------------------


def _cfg(*argv: str) -> RunConfig:
    return resolve_config(build_parser().parse_args(["train", "--data", "d", "--out", "o", *argv]))


def test_repeated_set_flags_accumulate() -> None:
    cfg = _cfg("--set", "train.loss=softmax", "--set", "train.lr=0.0095", "--set", "model.dim=64")
    assert (cfg.train.loss, cfg.train.lr, cfg.model.dim) == ("softmax", 0.0095, 64)
    cfg = _cfg("--set", "dim=64", "heads=4", "--set", "lr=0.002")
    assert (cfg.model.dim, cfg.model.heads, cfg.train.lr) == (64, 4, 0.002)


def test_a_key_given_twice_with_different_values_is_an_error(capsys) -> None:
    with pytest.raises(ValueError, match=r"train.lr given twice: 'lr=0.1' and 'train.lr=0.2'"):
        _cfg("--set", "lr=0.1", "--set", "train.lr=0.2")
    # The same value twice is no conflict (1e-1 is 0.1 once typed).
    assert _cfg("--set", "lr=0.1", "--set", "train.lr=1e-1").train.lr == 0.1


@pytest.mark.parametrize(
    ("argv", "attr", "expected"),
    [
        (
            ["tune", "--out", "o", "--space", "s", "--set", "a=1", "--set", "b=2"],
            "set",
            ["a=1", "b=2"],
        ),
        (
            ["reproduce", "--data", "d", "--out", "o", "--set", "a=1", "--set", "b=2"],
            "set",
            ["a=1", "b=2"],
        ),
        (
            ["reproduce", "--data", "d", "--out", "o", "--seeds", "1", "--seeds", "2"],
            "seeds",
            [1, 2],
        ),
        (["reproduce", "--data", "d", "--out", "o"], "seeds", [2024]),
        (
            [
                "reproduce",
                "--data",
                "d",
                "--out",
                "o",
                "--backbones",
                "din",
                "--backbones",
                "sasrec",
            ],
            "backbones",
            ["din", "sasrec"],
        ),
        (["recommend", "r", "--history", "a b", "--history", "c"], "history", ["a b", "c"]),
        (["recommend", "r", "--item", "a b", "--item", "c,d"], "item", ["a b", "c,d"]),
    ],
)
def test_every_repeatable_option_accumulates(argv: list[str], attr: str, expected: list) -> None:
    assert getattr(build_parser().parse_args(argv), attr) == expected


def test_a_bare_typo_suggests_the_full_key() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'model.tau'"):
        RunConfig().override(["taus=0.02"])


# -- the softmax objective's recipe -------------------------------------------------------


def test_softmax_alone_takes_the_strong_recipe() -> None:
    cfg = _cfg("--set", "train.loss=softmax")
    assert cfg.train.recipe == "strong"
    for key, value in RECIPES["strong"].items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value, key
    # BCE keeps the paper's defaults.
    bce = _cfg()
    assert bce.train.recipe == "paper"
    assert (bce.train.lr, bce.train.select_metric) == (
        TrainConfig().lr,
        TrainConfig().select_metric,
    )


def test_keys_the_user_set_keep_their_values(tmp_path: Path) -> None:
    cfg = _cfg("--set", "loss=softmax", "--lr", "0.002", "--set", "weight_decay=0")
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.select_metric) == (
        0.002,
        0.0,
        "ndcg@10",
    )
    # Also a value equal to the default, set in a YAML config.
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"train": {"loss": "softmax", "lr": 0.001}}))
    cfg = resolve_config(
        build_parser().parse_args(["train", "--config", str(yml), "--data", "d", "--out", "o"])
    )
    assert (
        cfg.train.lr == 0.001 and cfg.train.weight_decay == RECIPES["strong"]["train.weight_decay"]
    )


def test_recipe_paper_keeps_the_papers_settings_for_softmax() -> None:
    cfg = _cfg("--set", "loss=softmax", "--recipe", "paper")
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.select_metric) == (1e-3, 0.0, "auc")


def test_recipe_picks_the_full_metric_under_full_ranking() -> None:
    cfg = _cfg("--set", "loss=softmax", "eval_protocol=full")
    assert cfg.train.select_metric == "full_ndcg@10"


def test_python_configs_get_the_recipe_for_keys_left_at_default() -> None:
    cfg = RunConfig(train=TrainConfig(loss="softmax", lr=0.005))
    values = cfg.apply_recipe()
    assert cfg.train.lr == 0.005 and values["train.weight_decay"] == 1e-3
    assert cfg.train.recipe == "strong"
    assert cfg.apply_recipe() == values  # idempotent


def test_the_run_states_its_recipe_and_records_it(tmp_path: Path, capsys) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--threads", "1"]
    assert cli_main([*argv, "--max-steps-per-epoch", "2", "--set", "loss=softmax"]) == 0
    err = capsys.readouterr().err
    assert "train.loss=softmax with recipe strong: train.lr=0.0097" in err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["recipe"] == "strong" and saved["train"]["lr"] == 0.0097
    # The run folder's own text log has the same lines, timed.
    log = (run / "train.log").read_text().splitlines()
    assert "with recipe strong" in log[0] and "stage 1 epoch 0: loss" in log[1]


# -- interrupts and resumes ---------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_cmd(data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "solidrec", "train", "--data", str(data), "--out", str(out),
        "--backbone", "sasrec", "--generator", "duet", "--epochs", "3", "--patience", "3",
        "--threads", "1", "--no-progress", "--set", "batch_size=32", "ckpt_every_steps=0",
    ]  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_says_how_to_resume_and_resume_alone_finishes(
    tmp_path: Path, signum: int
) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(data, ref), check=True, env=_env(), capture_output=True)
    expected = json.loads((ref / "metrics.json").read_text())

    run = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(data, run), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (run / "log.csv").exists():
        time.sleep(0.02)
    time.sleep(0.2)  # somewhere inside epoch 1
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    resume = f"solidrec train --resume --out {run}"
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"solidrec train: {signal.Signals(signum).name}: stopped at stage 1")
    assert f"saved in {run / 'checkpoints' / 'last.pt'}" in last and last.endswith(resume)
    assert not (run / "metrics.json").exists()
    assert last.removeprefix("solidrec train: ") in (run / "train.log").read_text()
    # The printed command alone continues the run to the uninterrupted run's metrics.
    cmd = [sys.executable, "-m", "solidrec", *resume.split()[1:]]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "metrics.json").read_text()) == expected


def test_resume_where_no_run_exists_is_an_error(tmp_path: Path, capsys) -> None:
    assert cli_main(["train", "--resume", "--out", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "holds no run to continue (no such directory)" in err
    assert not (tmp_path / "nope").exists()


def test_resume_differences_name_only_keys_the_user_set(tmp_path: Path, capsys) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--threads", "1", "--quiet"]
    assert cli_main([*argv, "--epochs", "1", "--max-steps-per-epoch", "2", "--solid", "full"]) == 0
    capsys.readouterr()
    # Nothing differs: finished, nothing to do (no codebook_init or other unset key).
    assert cli_main(["train", "--resume", "--out", str(run)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert cli_main(["train", "--resume", "--out", str(run), "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.001 (run) vs 0.01 (now)" in err and "codebook_init" not in err


# -- recommend ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory, raw: tuple[Path, Path]) -> Path:
    base = tmp_path_factory.mktemp("rec")
    data, run = base / "data", base / "run"
    assert cli_main(_prepare(raw, data)) == 0
    argv = ["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--quiet"]
    assert cli_main([*argv, "--threads", "1", "--max-steps-per-epoch", "3"]) == 0
    return run


def test_file_mode_answers_the_good_histories_and_names_the_bad(
    model_run: Path, raw: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    items = [json.loads(x)["item_id"] for x in raw[1].read_text().splitlines()[:3]]
    f = tmp_path / "h.txt"
    f.write_text(f"{items[0]} {items[1]}\nnope1,nope2\n\n{items[2]}\n")
    capsys.readouterr()
    assert cli_main(["recommend", str(model_run), "--file", str(f), "--k", "2", "--json"]) == 1
    out, err = capsys.readouterr()
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["source"] for r in rows] == ["line 1", "line 2", "line 4"]
    assert len(rows[0]["items"]) == 2 and len(rows[2]["items"]) == 2
    assert "no item the model knows" in rows[1]["error"]
    assert "line 2:" in err and "1 of 3 histories failed" in err
    assert all(len(r["titles"]) == 2 for r in (rows[0], rows[2]))  # the model has titles


def test_user_mode_and_titles(model_run: Path, capsys) -> None:
    data = yaml.safe_load((model_run / "config.yaml").read_text())["data"]
    from solidrec.data.prepared import load_prepared

    ds = load_prepared(data)
    user = str(ds.user_original_id[0])
    capsys.readouterr()
    assert cli_main(["recommend", str(model_run), "--user", user, "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(len(x.split("\t")) == 4 for x in lines)  # rank, id, score, title
    from solidrec.recommend import Recommender

    rec = Recommender.from_run(model_run, device="cpu")
    hist = rec.user_history(user)
    row = int((ds.test.user == 0).nonzero()[0][0])
    assert hist[-1] == str(ds.item_original_id[ds.test.candidates[row, 0]])
    assert lines[0].split("\t")[1] == rec.recommend(hist, k=1)[0][0]
    assert cli_main(["recommend", str(model_run), "--user", "no-such-user"]) == 2
    assert "user 'no-such-user' is not in" in capsys.readouterr().err


def test_help_text_has_no_markup(capsys) -> None:
    for command in ("report", "reproduce"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":data:" not in text and ":mod:" not in text, command


def test_recommend_names_a_missing_run_directory(tmp_path: Path, capsys) -> None:
    assert cli_main(["recommend", str(tmp_path / "nope"), "--history", "a"]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_comma_separated_categories_get_a_hint(tmp_path: Path, caplog) -> None:
    from solidrec.data.parsing import parse_categories

    f = tmp_path / "items.csv"
    with caplog.at_level("WARNING", logger="solidrec.data"):
        assert parse_categories("a, b, c", f, 2) == (("a, b, c",),)
        parse_categories("d, e", f, 3)  # once per file
        assert parse_categories("a|b", f, 4) == (("a", "b"),)
    hints = [r for r in caplog.records if "is read as one label" in r.getMessage()]
    assert len(hints) == 1 and "items.csv:2" in hints[0].getMessage()
