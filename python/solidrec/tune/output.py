"""A study's results: the trials table (``trials.csv``), the best trial (``best.json``),
the printed summary, and the grid/line plots of ``solidrec tune-plot``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solidrec.data.io import atomic_write, write_json
from solidrec.metrics import FULL_METRIC_KEYS, METRIC_KEYS
from solidrec.runs.layout import BEST_JSON, TRIALS_CSV
from solidrec.tune.common import SETTINGS_ATTR, STUDY_METRICS, import_optuna

if TYPE_CHECKING:
    import optuna


def fmt_value(v: Any) -> str:
    """A parameter value as tables and messages show it (floats to 4 digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def study_settings(study: optuna.Study) -> dict[str, Any]:
    """What a solidrec study records: ``metric``, ``space``, base ``config``."""
    return study.user_attrs.get(SETTINGS_ATTR, {})


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial of highest validation metric (lowest number on ties)."""
    optuna = import_optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat row per trial: number, state, params, valid_* and test_* metrics,
    run_dir, retry_of, error, seconds."""
    keys = list(study_settings(study).get("space", {}))
    trials = study.get_trials(deepcopy=False)
    # Full-ranking columns only in a study that evaluated them (every row the same keys).
    full = any(k in (t.user_attrs.get("valid") or {}) for t in trials for k in FULL_METRIC_KEYS)
    metrics = STUDY_METRICS if full else METRIC_KEYS
    rows = []
    for t in trials:
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        row.update({k: t.params.get(k) for k in keys})
        for split in ("valid", "test"):
            m = t.user_attrs.get(split) or {}
            row.update({f"{split}_{k}": m.get(k) for k in metrics})
        row["run_dir"] = t.user_attrs.get("run_dir")
        row["retry_of"] = t.user_attrs.get("retry_of")
        row["error"] = t.user_attrs.get("error")
        row["seconds"] = round(t.duration.total_seconds(), 1) if t.duration else None
        rows.append(row)
    return rows


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """best.json's content: the best trial's number, value, params, metrics, run_dir."""
    best = best_trial(study)
    if best is None:
        return None
    settings = study_settings(study)
    return {
        "metric": settings.get("metric"),
        "split": "valid",
        "value": best.value,
        "trial": best.number,
        "params": best.params,
        "run_dir": best.user_attrs.get("run_dir"),
        "valid": best.user_attrs.get("valid"),
        "test": best.user_attrs.get("test"),
        "complete_trials": len(study.get_trials(deepcopy=False, states=(best.state,))),
    }


def write_results(study: optuna.Study, study_dir: str | Path) -> None:
    """``STUDY_DIR/trials.csv`` (every trial) and ``STUDY_DIR/best.json`` (if any trial
    completed), each written atomically."""
    study_dir = Path(study_dir)
    rows = trial_rows(study)
    if rows:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write(study_dir / TRIALS_CSV, buf.getvalue())
    best = best_summary(study)
    if best is not None:
        write_json(study_dir / BEST_JSON, best)


def format_trials(study: optuna.Study) -> str:
    """The trials as a text table (number, state, params, validation metric, note)
    and a last line naming the best trial."""
    settings = study_settings(study)
    metric = settings.get("metric", "value")
    keys = list(settings.get("space", {}))
    head = ["trial", "state", *keys, f"valid {metric}", "note"]
    lines = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("error") or ""
        if t.user_attrs.get("retry_of") is not None:
            note = f"retry of {t.user_attrs['retry_of']}" + (f"; {note}" if note else "")
        if len(note) > 70:
            note = note[:67] + "..."
        value = "" if t.value is None else f"{t.value:.4f}"
        params = ["" if k not in t.params else fmt_value(t.params[k]) for k in keys]
        lines.append([str(t.number), t.state.name, *params, value, note])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *lines]
    ]
    best = best_trial(study)
    if best is None:
        text.append("best: none (no trial completed)")
    else:
        shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items())
        text.append(
            f"best: trial {best.number}, valid {metric} {best.value:.4f} ({shown}); "
            f"run {best.user_attrs.get('run_dir')}"
        )
    return "\n".join(text)


#: The paper's Figure 5: metric -> colour (UAUC blue, NDCG@10 green, Recall@10 orange).
GRID_PLOT_METRICS = {"uauc": "Blues", "ndcg@10": "Greens", "recall@10": "Oranges"}


def read_trials(study_dir: str | Path) -> list[dict[str, Any]]:
    """``STUDY_DIR/trials.csv`` as rows (strings as written; see :func:`trial_rows`)."""
    path = Path(study_dir) / TRIALS_CSV
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trials (run solidrec tune into {study_dir} first)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def grid_table(
    rows: list[dict[str, Any]], x: str, y: str, metric: str, split: str = "test"
) -> tuple[list[float], list[float], dict[tuple[float, float], float]]:
    """(x values, y values, {(x, y): metric}) over the COMPLETE trials of a 2-D grid."""
    col = f"{split}_{metric}"
    cells: dict[tuple[float, float], float] = {}
    for r in rows:
        if r.get("state") != "COMPLETE" or not r.get(col):
            continue
        if x not in r or y not in r:
            raise ValueError(f"the study has no parameter {x if x not in r else y!r}")
        cells[(float(r[x]), float(r[y]))] = float(r[col])
    xs = sorted({k[0] for k in cells})
    ys = sorted({k[1] for k in cells})
    return xs, ys, cells


def _plot_line(
    fig: Any,
    rows: list[dict[str, Any]],
    x: str,
    metrics: Sequence[str],
    split: str,
    study_dir: str | Path,
    out: str | Path,
) -> Path:
    """One panel per metric: its value against the one parameter ``x``, best marked."""
    for i, metric in enumerate(metrics):
        col = f"{split}_{metric}"
        points = sorted((float(r[x]), float(r[col])) for r in rows if x in r and r.get(col))
        if not points:
            raise ValueError(f"{study_dir}: no finished trial with {x} and {split}_{metric}")
        ax = fig.add_subplot(1, len(metrics), i + 1)
        xs, vs = zip(*points, strict=True)
        ax.plot(range(len(xs)), vs, marker="o")
        best = max(range(len(vs)), key=vs.__getitem__)
        ax.scatter([best], [vs[best]], marker="x", color="red", s=60, zorder=3)
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set(xlabel=x, title=f"{split} {metric}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(out, buf.getvalue())
    return Path(out)


def plot_grid(
    study_dir: str | Path,
    out: str | Path,
    x: str = "model.lam",
    y: str = "model.tau",
    metrics: Sequence[str] = tuple(GRID_PLOT_METRICS),
    split: str = "test",
) -> Path:
    """The paper's Figure 5 drawing of a 2-D grid study: one panel per metric, a circle
    per grid point whose radius and colour depth grow with the value (scaled between the
    panel's min and max), the value printed beside it. Written as PNG to ``out``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (or the bench extra)"
        ) from None
    from matplotlib import colormaps

    rows = read_trials(study_dir)
    fig = Figure(figsize=(4.2 * len(metrics), 4.0))
    FigureCanvasAgg(fig)
    done = [r for r in rows if r.get("state") == "COMPLETE"]
    if x == y or (done and all(y not in r for r in done)):
        # A 1-D study (or one axis asked for twice): the metric against x, not x vs x.
        return _plot_line(fig, done, x, metrics, split, study_dir, out)
    for i, metric in enumerate(metrics):
        xs, ys, cells = grid_table(rows, x, y, metric, split)
        if not cells:
            raise ValueError(f"{study_dir}: no finished trial with {split}_{metric}")
        ax = fig.add_subplot(1, len(metrics), i + 1)
        lo, hi = min(cells.values()), max(cells.values())
        cmap = colormaps[GRID_PLOT_METRICS.get(metric, "Purples")]
        for (a, b), v in cells.items():
            t = (v - lo) / (hi - lo) if hi > lo else 1.0
            px, py = xs.index(a), ys.index(b)
            ax.scatter(px, py, s=80 + 900 * t, color=cmap(0.25 + 0.75 * t), edgecolors="k")
            ax.annotate(f"{v:.4f}", (px, py), textcoords="offset points", xytext=(0, -24),
                        ha="center", fontsize=7)  # fmt: skip
        best = max(cells, key=cells.__getitem__)
        ax.scatter(xs.index(best[0]), ys.index(best[1]), marker="x", color="red", s=40)
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.set_ylim(-0.6, len(ys) - 0.4)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{split} {metric} ({lo:.4f}-{hi:.4f})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(out, buf.getvalue())
    return Path(out)
