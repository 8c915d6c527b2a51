"""What a user sees: config errors that name the key, training flags, progress output
piped and quiet, TensorBoard tags, resume changes recorded, ``-v`` anywhere."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from solidrec.cli import build_parser
from solidrec.cli import main as cli_main
from solidrec.config import RunConfig
from solidrec.testing import make_tiny_dataset, tiny_run_args

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def _train(tiny: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(tiny), "--out", str(out), "--backbone", "gru4rec",
        "--generator", "apg", "--epochs", "1", "--threads", "1", "--batch-size", "64",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "optim.lr=0.1"], "unknown config section 'optim'"),
        (["--set", "lr=abc"], "config key train.lr expects float, got 'abc'"),
        (["--set", "batchsize=8"], "did you mean 'train.batch_size'"),
        (["--set", "model.heads=two"], "config key model.heads expects int"),
        (["--set", "train.progress=maybe"], "train.progress expects bool"),
        (["--set", "max_epochs=0"], "train.max_epochs must be > 0, got 0"),
        (["--set", "patience=0"], "train.patience must be > 0"),
        (["--set", "tau=-1"], "model.tau must be >= 0"),
        (["--lr", "0"], "train.lr must be > 0"),
        (["--epochs", "0"], "train.max_epochs must be > 0"),
        (["--set", "model.tau"], "override must be key=value"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    """Each of these was a raw traceback (or, for max_epochs=0, a crash after training)."""
    assert cli_main(_train(tiny, tmp_path / "run", *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("solidrec train: error:") and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: sasrec\n", "'model' must be a mapping of its keys (backbone, generator"),
        ("model:\n  backbon: sasrec\n", "did you mean 'model.backbone'"),
        (
            "model:\n  dims: 64\ntrain:\n  lrr: 0.1\n",
            "keys 'model.dims' (did you mean 'model.dim'?), 'train.lrr' (did you mean 'train.lr'",
        ),
        ("trian:\n  lr: 0.1\n", "did you mean 'train'"),
        ("- a\n- b\n", "expected a mapping of keys"),
        ("model: [\n", "not valid YAML"),
        ("train:\n  lr: [1, 2]\n", "config key train.lr expects float"),
    ],
)
def test_bad_yaml_config_names_the_key(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    f = tmp_path / "cfg.yaml"
    f.write_text(text)
    assert cli_main(_train(tiny, tmp_path / "run", "--config", str(f))) == 2
    err = capsys.readouterr().err
    assert message in err and str(f) in err, err


def test_unknown_key_lists_the_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"valid keys: data, out, model\.backbone, .*train\.lr"):
        RunConfig().override(["nosuchkey=1"])


def test_training_flags_and_verbose_after_the_subcommand(tiny: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [*_train(tiny, tmp_path / "r"), "--lr", "5e-4", "--max-steps-per-epoch", "3", "-v"]
    )
    assert args.verbose and args.lr == 5e-4 and args.batch_size == 64
    assert build_parser().parse_args(["-v", "stats", "x"]).verbose
    assert not build_parser().parse_args(["stats", "x"]).verbose
    assert build_parser().parse_args(["stats", "x", "-v"]).verbose


def test_piped_output_one_line_per_epoch_and_quiet(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Piped (pytest's capture is not a terminal): no bar fragments, one summary line per
    epoch even with --no-progress (which used to print nothing at all); --quiet: none."""
    run = tmp_path / "run"
    argv = _train(tiny, run, "--solid", "full", "--no-progress", "--max-steps-per-epoch", "3")
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("stage ")]
    assert [ln.split(":")[0] for ln in lines] == ["stage 1 epoch 0", "stage 2 epoch 0"], err
    assert "it/s" not in err and "\r" not in err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["max_steps_per_epoch"] == 3 and cfg["train"]["batch_size"] == 64
    # Progress bars on (the default), but piped: still no fragments.
    assert cli_main(_train(tiny, tmp_path / "bars", "--max-steps-per-epoch", "3")) == 0
    err = capsys.readouterr().err
    assert "it/s" not in err and err.count("stage 1 epoch 0") == 1
    assert cli_main(_train(tiny, tmp_path / "quiet", "--quiet", "--max-steps-per-epoch", "3")) == 0
    captured = capsys.readouterr()
    assert "stage 1 epoch" not in captured.err
    assert json.loads(captured.out)["split"] == "test"  # the result still on stdout


def test_tensorboard_groups_tags_logs_steps_codebook_and_hparams(
    tiny: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is in requirements/dev.txt")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    argv = _train(tiny, run, "--solid", "full", "--quiet", "--max-steps-per-epoch", "4")
    assert cli_main(argv) == 0
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/codebook_loss", "valid/auc", "valid/ndcg@10"} <= tags
    assert {"epoch/train_loss", "epoch/train_codebook_loss"} <= tags
    assert len(acc.Scalars("train/loss")) == 8  # every step of both stages
    assert len(acc.Scalars("train/codebook_loss")) == 8
    assert len(acc.Scalars("valid/auc")) == 2
    hparams = list((run / "tb").rglob("events.out.tfevents.*"))
    assert len(hparams) >= 2, "add_hparams writes its own event file"
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert float(rows[0]["train_codebook_loss"]) == 0.0  # stage 1 trains no codebook
    assert float(rows[1]["train_codebook_loss"]) > 0.0


def test_schedule_change_on_resume_is_refused_or_extends_and_is_recorded(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Refused: config.yaml unchanged. Accepted (--allow-schedule-change) on a finished
    run: it trains the extra epoch from its selected weights, says so, and records the
    change in config.yaml and metrics.json. Nothing left to train: nothing rewritten."""
    run = tmp_path / "run"
    argv = _train(tiny, run, "--quiet", "--max-steps-per-epoch", "2", "--patience", "5")
    assert cli_main(argv) == 0
    before = (run / "config.yaml").read_text()
    capsys.readouterr()
    longer = [*argv, "--resume"]
    longer[longer.index("--epochs") + 1] = "2"
    assert cli_main(longer) == 2
    assert "--allow-schedule-change" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == before
    assert cli_main([*longer, "--allow-schedule-change"]) == 0
    err = capsys.readouterr().err
    assert "resuming with train.max_epochs 1 -> 2" in err, err
    assert len(list(csv.DictReader((run / "log.csv").open()))) == 2
    assert "max_epochs: 2" in (run / "config.yaml").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config_changes"][0]["changes"] == {"train.max_epochs": [1, 2]}
    after = (run / "config.yaml").read_text()
    assert cli_main([*longer, "--allow-schedule-change"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == after


# Search spaces whose choices are valid only beside their documented --set.
SPACE_BASES = {"tune_din_sampled.yaml": ["train.loss=sampled_softmax"]}


def test_shipped_configs_load_and_are_documented() -> None:
    docs = "".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    for f in sorted((REPO / "configs").glob("*.yaml")):
        assert f"configs/{f.name}" in docs, f"{f.name} is referenced nowhere in the docs"
        if f.name.startswith("tune_"):  # a search space (docs/TUNING.md), not a run config
            from solidrec.tune import load_space

            base = RunConfig()
            if f.name in SPACE_BASES:  # a space checked against the --set its header names
                with pytest.raises(ValueError, match=f.name):
                    load_space(f)
                base.override(SPACE_BASES[f.name])
            assert load_space(f, base)
            continue
        cfg = RunConfig.load(f)
        cfg.validate()
    sweep = RunConfig.load(REPO / "configs" / "scientific_sweep.yaml")
    results = (REPO / "docs" / "RESULTS.md").read_text()
    # It claims to be RESULTS.md's budget: the command there must say the same.
    assert f"--epochs {sweep.train.max_epochs} --patience {sweep.train.patience}" in results


def test_tiny_run_args_still_train(tiny: Path, tmp_path: Path) -> None:
    assert cli_main([*tiny_run_args(tiny, tmp_path / "r"), "--quiet"]) == 0


def test_select_metric_chooses_the_epoch(tiny: Path, tmp_path: Path) -> None:
    """train.select_metric=ndcg@10: the selected epoch is the best validation NDCG@10 of
    the last stage, and metrics.json names it."""
    run = tmp_path / "run"
    argv = _train(tiny, run, "--quiet", "--patience", "3", "--set", "select_metric=ndcg@10")
    argv[argv.index("--epochs") + 1] = "3"
    assert cli_main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "log.csv").open()))
    ndcg = [float(r["valid_ndcg@10"]) for r in rows]
    assert metrics["best_valid_ndcg@10"] == pytest.approx(max(ndcg), abs=1e-12)
    assert metrics["best_epoch"] == ndcg.index(max(ndcg))
    with pytest.raises(ValueError, match="train.select_metric must be one of"):
        cfg = RunConfig(data="d", out="o")
        cfg.override(["select_metric=mrr"])
        cfg.validate()
