"""``solidrec tune`` / :func:`solidrec.tune.run_study`: grid, random and TPE studies on the
tiny dataset, a killed study resumed, the validation objective, space-file errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from solidrec.cli import main  # noqa: E402
from solidrec.evaluate import evaluate_run  # noqa: E402
from solidrec.metrics import METRIC_KEYS  # noqa: E402
from solidrec.testing import make_tiny_dataset  # noqa: E402
from solidrec.tune import check_grid, load_space, read_trials, run_study  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: Every trial: one short epoch, a checkpoint every step (for the kill test), one thread.
FAST = [
    "train.max_epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=64",
    "train.threads=1", "train.progress=false", "train.ckpt_every_steps=1",
]  # fmt: skip
GRID = "model.lam: [0.01, 0.5]\nmodel.tau: {type: categorical, choices: [0.001, 0.1]}\n"
CONTINUOUS = (
    "model.tau: {type: float, low: 0.001, high: 0.1, log: true}\n"
    "train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
    "model.dim: {type: int, low: 16, high: 64, step: 16}\n"
)


def _argv(data: Path, out: Path, space: Path, *extra: str) -> list[str]:
    return [
        "tune", "--data", str(data), "--out", str(out), "--space", str(space),
        "--sampler", "grid", "--metric", "uauc", "--quiet", *extra, "--set", *FAST,
    ]  # fmt: skip


def _space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _study(out: Path):
    import optuna

    return optuna.load_study(study_name="solidrec-tune", storage=f"sqlite:///{out}/study.db")


def _mtimes(out: Path, numbers: list[int]) -> dict[int, int]:
    return {n: (out / "trials" / f"{n:04d}" / "metrics.json").stat().st_mtime_ns for n in numbers}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tune") / "data")


@pytest.fixture(scope="module")
def grid_study(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A finished 2x2 grid study: (study dir, space file, the command's stdout)."""
    tmp = tmp_path_factory.mktemp("grid")
    space = _space(tmp / "space.yaml", GRID)
    out = tmp / "study"
    capture = subprocess.run(
        [sys.executable, "-m", "solidrec", *_argv(data, out, space)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert capture.returncode == 0, capture.stderr
    return out, space, capture.stdout


def test_grid_study_trains_every_point_into_a_run_directory(
    grid_study: tuple[Path, Path, str], data: Path, capsys: pytest.CaptureFixture
) -> None:
    out, space, stdout = grid_study
    study = _study(out)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    points = {(t.params["model.lam"], t.params["model.tau"]) for t in trials}
    assert points == {(a, b) for a in (0.01, 0.5) for b in (0.001, 0.1)}
    for t in trials:
        run = out / "trials" / f"{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run)
        assert (run / "metrics.json").exists() and (run / "config.yaml").exists()
        assert set(t.user_attrs["valid"]) == set(METRIC_KEYS) == set(t.user_attrs["test"])
    best = json.loads((out / "best.json").read_text())
    top = max(trials, key=lambda t: t.user_attrs["valid"]["uauc"])
    assert best["trial"] == top.number and best["metric"] == "uauc"
    assert best["params"] == top.params
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("number,state,model.lam,model.tau,valid_auc")
    assert "valid uauc" in stdout and f"best: trial {top.number}" in stdout

    # The same command again: nothing left to train, nothing retrained.
    before = _mtimes(out, [0, 1, 2, 3])
    assert main(_argv(data, out, space)) == 0
    assert len(_study(out).get_trials()) == 4 and _mtimes(out, [0, 1, 2, 3]) == before
    assert "best: trial" in capsys.readouterr().out


def test_objective_is_the_validation_metric(grid_study: tuple[Path, Path, str]) -> None:
    out = grid_study[0]
    best = json.loads((out / "best.json").read_text())
    run = Path(best["run_dir"])
    valid = evaluate_run(run, split="valid")
    test = json.loads((run / "metrics.json").read_text())
    assert best["split"] == "valid"
    assert best["value"] == pytest.approx(valid["uauc"], abs=1e-12)
    assert best["valid"] == pytest.approx(valid, abs=1e-12)
    assert best["test"] == pytest.approx({k: test[k] for k in METRIC_KEYS})
    assert best["value"] != test["uauc"]  # the test metric is recorded, never the objective


#: ``solidrec tune ARGS...`` that dies (os._exit(137), as SIGKILL) early in the third
#: trial's training, after it has written a checkpoint or two.
KILL_IN_THIRD_TRIAL = """
import sys
import solidrec.train.loop as loop
from solidrec.cli import main
from solidrec.testing import die_before_replace
real, calls = loop.train, [0]
def train(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:
        die_before_replace(4)
    return real(*args, **kwargs)
loop.train = train
sys.exit(main(sys.argv[1:]))
"""


def test_killed_study_resumes_without_losing_or_repeating_trials(
    grid_study: tuple[Path, Path, str], data: Path, tmp_path: Path
) -> None:
    space = _space(tmp_path / "space.yaml", GRID)
    out = tmp_path / "study"
    argv = _argv(data, out, space)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_THIRD_TRIAL, *argv],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert killed.returncode == 137, killed.stderr
    states = [t.state.name for t in _study(out).get_trials()]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING"]
    assert (out / "trials" / "0002" / "checkpoints").is_dir()
    before = _mtimes(out, [0, 1])

    assert main(argv) == 0
    trials = _study(out).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 4, [(t.number, t.state.name) for t in trials]
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4  # the grid, no repeats
    assert _mtimes(out, [0, 1]) == before  # finished trials were not retrained
    dead, retry = trials[2], trials[3]
    assert dead.state.name == "FAIL" and dead.user_attrs["interrupted"] is True
    assert "interrupted" in dead.user_attrs["error"]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == dead.params
    # The retry continued the killed run (moved under its own number) to the result an
    # uninterrupted study got for that point.
    assert not (out / "trials" / "0002").exists()
    assert (out / "trials" / "0003" / "metrics.json").exists()
    reference = {
        tuple(sorted(t.params.items())): t.value for t in _study(grid_study[0]).get_trials()
    }
    for t in done:
        assert t.value == pytest.approx(reference[tuple(sorted(t.params.items()))], abs=1e-9)


def test_ctrl_c_stops_the_study_and_the_rerun_retries_that_trial(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import solidrec.train.loop as loop

    space = _space(tmp_path / "space.yaml", "model.lam: [0.01, 0.5]\n")
    out = tmp_path / "study"
    real, calls = loop.train, [0]

    def train(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train", train)
    assert main(_argv(data, out, space)) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert [t.state.name for t in _study(out).get_trials()] == ["COMPLETE", "FAIL"]
    assert main(_argv(data, out, space)) == 0
    trials = _study(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert "trial 1 was interrupted; queued to run again" in capsys.readouterr().err


def test_a_crashing_trial_is_recorded_and_the_study_goes_on(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Each value is valid alone; dim 30 with 4 heads is not (checked when the trial runs).
    space = _space(tmp_path / "space.yaml", "model.heads: [4]\nmodel.dim: [30, 32]\n")
    out = tmp_path / "study"
    assert main(_argv(data, out, space)) == 0
    trials = _study(out).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert "model.dim (30) must be a multiple of model.heads (4)" in trials[0].user_attrs["error"]
    assert json.loads((out / "best.json").read_text())["trial"] == 1
    captured = capsys.readouterr()
    assert "trial 0 failed: ValueError: model.dim (30)" in captured.err
    assert "FAIL" in captured.out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model.taux: [0.1, 0.2]\n", "model.taux"),
        ("lr_rate: {type: float, low: 0.1, high: 1}\n", "lr_rate"),
        ("model.tau: {type: floaty, low: 0.1, high: 1}\n", "model.tau: type must be one of"),
        ("model.tau: {type: float, low: 0.1, high: 0.01}\n", "model.tau: low (0.1) must be <"),
        ("model.tau: {type: float, low: 0, high: 0.1, log: true}\n", "model.tau: log needs low"),
        ("model.tau: {type: float, low: x, high: 0.1}\n", "model.tau: low must be a number"),
        ("model.tau: {type: float, low: 0.1}\n", "model.tau: type float needs low and high"),
        ("model.tau: {type: float, low: 0.01, high: 0.1, steps: 2}\n", "unknown field(s) steps"),
        ("model.lam: {type: float, low: -1, high: 1}\n", "model.lam: model.lam must be >= 0"),
        ("model.dim: {type: float, low: 16, high: 64}\n", "model.dim: model.dim is an int key"),
        ("model.dim: {type: int, low: 16, high: 60, step: 16}\n", "must be a multiple of step"),
        ("model.solid: [off, full]\n", "model.solid: choice False is a YAML boolean"),
        ("model.backbone: [sasrec, lstm]\n", "model.backbone: backbone must be one of"),
        ("model.lam: []\n", "model.lam: choices must be a non-empty list"),
        ("model.lam: 0.1\n", "model.lam: expected a spec"),
        ("out: [a, b]\n", "out: out cannot be tuned"),
        ("- model.lam\n", "expected a mapping of config keys"),
        ("model.lam: [0.1\n", "not valid YAML"),
        ("model.tau: {type: float, low: 0.001, high: 0.1}\n", "model.tau: --sampler grid needs"),
        ("model.dim: {type: int, low: 16, high: 64}\n", "model.dim: --sampler grid needs"),
    ],
)
def test_bad_space_is_one_line_naming_the_key(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, text: str, expected: str
) -> None:
    space = _space(tmp_path / "space.yaml", text)
    out = tmp_path / "study"
    assert main(_argv(data, out, space)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("solidrec tune: error: "), err
    assert expected in err
    assert not out.exists()  # refused before anything was created


def test_other_command_errors(
    grid_study: tuple[Path, Path, str], data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out, space, _ = grid_study
    cases = [
        (_argv(data, out, space, "--trials", "5"), "--trials 5 exceeds the grid's 4 points"),
        (_argv(data, tmp_path / "x", tmp_path / "nope.yaml"), "nope.yaml: no such space file"),
        (_argv(data, out, space)[:-8] + ["--metric", "auc", "--set", *FAST], "maximising valid"),
        ([*_argv(data, out, space), "model.dim=16"], "base config differs from the study's: "),
        (["tune", "--out", str(tmp_path / "r"), "--space", str(space), "--sampler", "random",
          "--data", str(data)], "--trials N is required with --sampler random"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    # Another tuner holds the study: exit 1, as for a locked run.
    from solidrec.runs.lock import RunLock

    with RunLock(out):
        assert main(_argv(data, out, space)) == 1
    assert "is in use by pid" in capsys.readouterr().err
    # Trial runs without their study: not silently mixed into a new one.
    (tmp_path / "lost" / "trials" / "0000").mkdir(parents=True)
    assert main(_argv(data, tmp_path / "lost", space)) == 2
    assert "study.db is missing" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    assert main(_argv(data, tmp_path / "y", space)) == 2
    assert "pip install optuna" in capsys.readouterr().err


def _params(study) -> list[dict]:
    return [t.params for t in study.get_trials()]


def test_random_and_tpe_are_reproducible_for_a_seed(data: Path, tmp_path: Path) -> None:
    space = _space(tmp_path / "space.yaml", CONTINUOUS)

    def study(name: str, sampler: str, trials: int, seed: int = 7):
        return run_study(
            tmp_path / name, space, data=data, overrides=FAST, metric="auc",
            sampler=sampler, trials=trials, seed=seed, quiet=True, log=None,
        )  # fmt: skip

    first = study("r1", "random", 3)
    assert [t.state.name for t in first.get_trials()] == ["COMPLETE"] * 3
    assert len({t.params["model.tau"] for t in first.get_trials()}) == 3
    # Extended to 4 trials later, it draws what a 4-trial study draws in one go.
    extended = study("r1", "random", 4)
    assert _params(extended) == _params(study("r2", "random", 4))
    assert _params(study("r3", "random", 2, seed=8)) != _params(first)[:2]
    for t in extended.get_trials():
        assert 16 <= t.params["model.dim"] <= 64 and t.params["model.dim"] % 16 == 0
        assert 1e-4 <= t.params["train.lr"] <= 1e-2
    assert _params(study("t1", "tpe", 2)) == _params(study("t2", "tpe", 2))


def test_figure5_space_is_the_papers_grid() -> None:
    space = load_space(REPO / "configs" / "tune_figure5.yaml")
    assert check_grid(space) == 25
    assert space["model.lam"].choices == (0.01, 0.05, 0.1, 0.5, 1.0)
    assert space["model.tau"].choices == (0.001, 0.005, 0.01, 0.05, 0.1)


def test_grid_plot_draws_every_finished_point(tmp_path: Path, capsys) -> None:
    """Figure 5's drawing from trials.csv: one circle per COMPLETE grid point; failed
    trials left out; a missing study or parameter is one line, exit 2."""
    from solidrec.tune import grid_table

    study = tmp_path / "study"
    study.mkdir()
    rows = ["number,state,model.lam,model.tau,test_uauc,test_ndcg@10,test_recall@10"]
    values = {}
    for n, (lam, tau) in enumerate([(0.1, 0.01), (0.1, 0.05), (1.0, 0.01), (1.0, 0.05)]):
        values[(lam, tau)] = 0.7 + n / 100
        rows.append(f"{n},COMPLETE,{lam},{tau},{0.7 + n / 100},{0.2 + n / 100},{0.4}")
    rows.append("4,FAIL,0.5,0.01,,,")
    (study / "trials.csv").write_text("\n".join(rows) + "\n")
    xs, ys, cells = grid_table(read_trials(study), "model.lam", "model.tau", "uauc")
    assert xs == [0.1, 1.0] and ys == [0.01, 0.05] and cells == values
    out = tmp_path / "fig5.png"
    assert main(["tune-plot", str(study), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["tune-plot", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no trials" in capsys.readouterr().err
    assert main(["tune-plot", str(study), "--out", str(out), "--x", "model.dim"]) == 2
    assert "no parameter 'model.dim'" in capsys.readouterr().err


def test_plot_of_a_one_parameter_study_draws_the_metric_against_it(tmp_path: Path) -> None:
    """A 1-D study (history length, say) is drawn as the metric against its parameter,
    not the parameter against itself; --y naming it again is the same."""
    import solidrec.tune.output as tune

    study = tmp_path / "study"
    study.mkdir()
    rows = ["number,state,model.history_len,test_uauc,test_ndcg@10,test_recall@10"]
    rows += [f"{n},COMPLETE,{h},{0.7 + n / 100},{0.2},{0.4}" for n, h in enumerate((10, 20, 50))]
    (study / "trials.csv").write_text("\n".join(rows) + "\n")
    drawn = []
    real = tune._plot_line
    tune._plot_line = lambda *a, **k: drawn.append(a[2]) or real(*a, **k)
    try:
        for extra in ([], ["--y", "model.history_len"]):
            out = tmp_path / f"h{len(extra)}.png"
            argv = ["tune-plot", str(study), "--out", str(out), "--x", "model.history_len"]
            assert main([*argv, *extra]) == 0
            assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        tune._plot_line = real
    assert drawn == ["model.history_len", "model.history_len"]
