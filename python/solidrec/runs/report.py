"""Finished runs as Table-1-style tables (the library behind ``solidrec report``):
:func:`collect` groups runs by the dataset fingerprint each recorded and by config
(mean ± std over seeds), :func:`format_tables` renders Markdown, :func:`rows`,
:func:`to_csv` and :func:`to_json` the same rows, :func:`write_curves` training-curve
PNGs from each run's log.csv."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from solidrec.config import RESUME_FREE_KEYS, resolved_config
from solidrec.data.io import atomic_write
from solidrec.data.prepared import MANIFEST
from solidrec.machine import measured_line
from solidrec.metrics import FULL_METRIC_KEYS, METRIC_KEYS, PROTOCOLS
from solidrec.modes import MODES
from solidrec.paper import (
    BACKBONE_NAMES,
    DSR_NAMES,
    SCIENTIFIC_TABLE1,
    is_paper_dataset,
    settings_off_paper,
)
from solidrec.runs.layout import CONFIG, METRICS, MODEL_DIR, MODEL_MANIFEST, RunDir

Warn = Callable[[str], None]
#: Columns every table has; the differing config fields come after them.
_MODEL_KEYS = ("model.backbone", "model.generator", "model.solid")
_METRIC_HEAD = [
    c.upper() if c in ("auc", "uauc") else c.replace("ndcg", "NDCG").replace("recall", "Recall")
    for c in METRIC_KEYS
]
#: Full-ranking columns a table shows when its runs evaluated that protocol.
_FULL_SHOWN = ("full_recall@10", "full_ndcg@10", "full_recall@20", "full_ndcg@20")


def _head(key: str) -> str:
    if key in METRIC_KEYS:
        return _METRIC_HEAD[METRIC_KEYS.index(key)]
    return "full " + key.removeprefix("full_").replace("ndcg", "NDCG").replace("recall", "Recall")


class ReportError(Exception):
    """Nothing (or nothing valid) to report: ``solidrec report`` exits 2 with the message."""


def _warn(msg: str) -> None:
    print(f"solidrec report: warning: {msg}", file=sys.stderr)


@dataclass(frozen=True)
class Dataset:
    """The prepared dataset of some runs: its fingerprint, or (its manifest unreadable)
    the ``data:`` path the runs name, which is then their only identity."""

    key: str
    name: str
    fingerprint: str | None
    paper: bool  # the paper's Scientific under its protocol (solidrec.paper)


@dataclass
class Run:
    """A finished run: its flat effective config (``section.key``), test metrics, data."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    dataset: Dataset
    epochs: tuple[int, ...] = ()  # epochs trained in each stage (log.csv); () unknown
    measured: str = ""  # commit, date and CPU (cost.json; solidrec.machine.measured_line)

    @property
    def seed(self) -> Any:
        return self.config.get("train.seed")


@dataclass
class Group:
    """Runs that differ in their seed only."""

    config: dict[str, Any]  # without the seed and the result-free keys
    runs: list[Run] = field(default_factory=list)

    @property
    def backbone(self) -> str:
        return str(self.config.get("model.backbone"))

    @property
    def dsr(self) -> str:
        """The paper's name of the (generator, solid) pair, or a descriptive one."""
        gs = (str(self.config.get("model.generator")), str(self.config.get("model.solid")))
        return DSR_NAMES.get(gs, f"{gs[0].upper()} solid={gs[1]}")

    def epochs(self) -> list[float] | None:
        """Mean epochs trained per stage over the runs (the training budget used: a
        SOLID model's two stages against its generator's one); None if a log is
        missing or the runs have different numbers of stages."""
        per = [r.epochs for r in self.runs]
        if not per or not per[0] or any(len(e) != len(per[0]) for e in per):
            return None
        return [float(np.mean(col)) for col in zip(*per, strict=True)]

    def select_metric(self) -> str:
        return str(self.config.get("train.select_metric", "auc"))

    def valid(self) -> tuple[float, float | None] | None:
        """The best validation value of the run's selection metric (what early stopping
        and ``solidrec tune`` chose on), (mean, sample std; None for a single run);
        None if a run's metrics.json lacks it (runs from before it was written)."""
        key = f"best_valid_{self.select_metric()}"
        v = [r.metrics.get(key) for r in self.runs]
        if any(x is None for x in v):
            return None
        a = np.array(v, dtype=float)
        return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else None

    def stats(self) -> dict[str, tuple[float, float | None]]:
        """Metric -> (mean, sample std; None for a single run)."""
        out = {}
        for m in METRIC_KEYS + FULL_METRIC_KEYS:
            v = np.array([float(r.metrics.get(m, math.nan)) for r in self.runs])
            out[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None)
        return out


@dataclass
class Table:
    """One dataset's groups; ``columns``: the config fields that differ between them;
    ``common``: fields equal in all of them that differ from another table's."""

    dataset: Dataset
    paths: list[str]  # the runs' data: paths
    groups: list[Group]
    columns: list[str]
    common: dict[str, Any] = field(default_factory=dict)

    def paper_row(self, g: Group) -> tuple[float, ...] | None:
        """The paper's numbers for ``g``: only on its dataset and with its settings."""
        if not self.dataset.paper or settings_off_paper(g.config):
            return None
        return SCIENTIFIC_TABLE1.get((g.backbone, g.dsr))


#: Keys that never change results, and the seed (mean ± std is taken over seeds).
RESULT_FREE_KEYS = RESUME_FREE_KEYS | {"train.seed"}


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories (those with metrics.json or config.yaml) at or under ``paths``;
    :class:`ReportError` for a path that does not exist or holds none."""
    found: dict[Path, Path] = {}  # resolved (a run named twice counts once) -> as given
    for p in paths:
        if not p.exists():
            raise ReportError(f"{p}: no such file or directory")
        if p.is_file():
            if p.name not in (METRICS, CONFIG):
                raise ReportError(f"{p}: not a run directory")
            p = p.parent
        if (p / METRICS).exists() or (p / CONFIG).exists():
            dirs = [p]
        else:
            dirs = sorted(
                {
                    f.parent
                    for n in (METRICS, CONFIG)
                    for f in p.rglob(n)
                    if f.parent.name != MODEL_DIR  # a run's served model, not a run
                }
            )
        if not dirs:
            raise ReportError(f"{p}: no run directory (metrics.json and config.yaml) under it")
        for d in dirs:
            found.setdefault(d.resolve(), d)
    return list(found.values())


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    """A saved config as flat ``section.key`` values the run computed with: fields added
    since it was written take their defaults (what the run did), ``codebook_init`` is
    resolved by the mode table (as resumes compare them; ``auto`` where it is the mode's)."""
    eff = resolved_config(cfg)
    mode = MODES.get(str(eff.get("model.solid")))
    if mode is not None and eff["model.codebook_init"] == mode.resolve_codebook_init("auto"):
        # The mode's own init (None without a codebook) follows from ``solid``: as a
        # column it would only repeat the solid mode, so it reads as the config's "auto".
        eff["model.codebook_init"] = "auto"
    return eff


class _Datasets:
    """Each ``data:`` path resolved once: a missing or unreadable manifest warns once."""

    def __init__(self, warn: Warn) -> None:
        self.warn, self.cache = warn, {}  # data dir -> Dataset

    def get(self, data: str, out: str, run: Path, recorded: str | None = None) -> Dataset:
        """The dataset of ``run``: the one whose fingerprint the run recorded when it
        trained (``recorded``), named from ``data`` while that still holds it."""
        found = self._on_disk(data, out, run)
        if recorded and found.fingerprint and found.fingerprint != recorded:
            self.warn(
                f"{run}: {data} was prepared again since this run trained on it (fingerprint "
                f"{found.fingerprint[:12]} now, {recorded[:12]} then); the run is grouped "
                "under the fingerprint it recorded"
            )
            return Dataset(f"fp:{recorded}", f"{found.name} (as prepared then)", recorded, False)
        if recorded and found.fingerprint is None:
            return Dataset(f"fp:{recorded}", found.name, recorded, False)
        return found

    def _on_disk(self, data: str, out: str, run: Path) -> Dataset:
        if not data:
            self.warn(f"{run}: its config.yaml names no data; grouped as data ''")
            return Dataset("path:", "(no data path)", None, False)
        where = Path(data)
        if not where.is_absolute() and not where.exists():
            # A relative data: is relative to where training ran, which the relative out:
            # tells when the run is still at that place (``cd runs; solidrec report x``).
            tail, parts = Path(out).parts, run.resolve().parts
            if out and not Path(out).is_absolute() and parts[len(parts) - len(tail) :] == tail:
                where = Path(*parts[: len(parts) - len(tail)]) / data
        if where not in self.cache:
            try:
                manifest = json.loads((where / MANIFEST).read_text())
                fp = manifest["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                why = "not found" if isinstance(e, FileNotFoundError) else f"unreadable ({e!r})"
                self.warn(
                    f"{where / MANIFEST} (data of {run}) {why}: runs on {data!r} are "
                    "grouped by that path, not by the dataset's fingerprint"
                )
                self.cache[where] = Dataset(f"path:{data}", data, None, False)
            else:
                name = str(manifest.get("name") or where.name)
                self.cache[where] = Dataset(f"fp:{fp}", name, fp, is_paper_dataset(manifest))
        return self.cache[where]


def _load(run: Path, datasets: _Datasets, warn: Warn) -> Run | None:
    try:
        metrics = json.loads(RunDir(run).metrics.read_text())
    except FileNotFoundError:
        warn(f"{run}: no metrics.json (not finished); skipped")
        return None
    except (OSError, ValueError) as e:
        warn(f"{run}: unreadable metrics.json ({e}); skipped")
        return None
    try:
        cfg = yaml.safe_load(RunDir(run).config.read_text())
    except FileNotFoundError:
        warn(f"{run}: no config.yaml (its settings are unknown); skipped")
        return None
    except (OSError, yaml.YAMLError) as e:
        warn(f"{run}: unreadable config.yaml ({e}); skipped")
        return None
    if not isinstance(cfg, dict) or not isinstance(metrics, dict):
        warn(f"{run}: config.yaml or metrics.json is not a mapping; skipped")
        return None
    try:
        flat = _flat(cfg)
    except (TypeError, ValueError, AttributeError) as e:
        warn(f"{run}: config.yaml is not a run config ({e}); skipped")
        return None
    data, out = str(cfg.get("data") or ""), str(cfg.get("out") or "")
    dataset = datasets.get(data, out, run, _recorded_fingerprint(run))
    return Run(run, flat, metrics, dataset, _epochs(RunDir(run).log_csv), _measured(run))


def _measured(run: Path) -> str:
    """Where and when ``run`` was trained (cost.json's ``measured``), "" if unrecorded."""
    try:
        p = json.loads(RunDir(run).cost.read_text()).get("measured")
    except (OSError, ValueError, AttributeError):
        return ""
    return measured_line(p) if isinstance(p, dict) else ""


def _recorded_fingerprint(run: Path) -> str | None:
    """The fingerprint of the dataset a finished run trained on (its model directory's
    manifest), or None (a run from before model directories, or an unreadable one)."""
    try:
        fp = json.loads((RunDir(run).model / MODEL_MANIFEST).read_text()).get("dataset_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return fp if isinstance(fp, str) and fp else None


def _epochs(log: Path) -> tuple[int, ...]:
    """Epochs trained per stage, from a run's log.csv (one row per epoch); () if it
    cannot be read."""
    try:
        with open(log, newline="") as f:
            stages = [int(float(row["stage"])) for row in csv.DictReader(f)]
    except (OSError, KeyError, TypeError, ValueError):
        return ()
    return tuple(stages.count(s) for s in sorted(set(stages)))


def _fmt_epochs(epochs: list[float] | None) -> str:
    if epochs is None:
        return "–"
    return "+".join(f"{e:.0f}" if float(e).is_integer() else f"{e:.1f}" for e in epochs)


def _hashable(v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        return json.dumps(v, sort_keys=True, default=str)
    return v


def _value_order(v: Any) -> tuple:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, v, "")
    return (1, 0, str(v))


def _varying(groups: list[Group]) -> list[str]:
    """The config fields (beyond the model columns) that differ between ``groups``."""
    keys = dict.fromkeys(k for g in groups for k in g.config)
    return [
        k
        for k in keys
        if k not in _MODEL_KEYS and len({_hashable(g.config.get(k)) for g in groups}) > 1
    ]


def _table(dataset: Dataset, runs: list[Run], free: frozenset[str], warn: Warn) -> Table:
    groups: dict[tuple, Group] = {}
    for r in runs:
        config = {k: v for k, v in r.config.items() if k not in free}
        key = tuple(sorted((k, _hashable(v)) for k, v in config.items()))
        g = groups.setdefault(key, Group(config))
        for other in g.runs:
            if other.seed == r.seed:
                warn(f"{other.path} and {r.path}: same config and seed; both counted")
        g.runs.append(r)
    columns = _varying(list(groups.values()))
    backbones = {b: i for i, b in enumerate(BACKBONE_NAMES)}
    dsr = list(DSR_NAMES.values())

    def order(g: Group) -> tuple:
        return (
            backbones.get(g.backbone, len(backbones)),
            g.backbone,
            dsr.index(g.dsr) if g.dsr in dsr else len(dsr),
            g.dsr,
            *(_value_order(g.config.get(c)) for c in columns),
        )

    paths = sorted({_shown_path(str(r.config.get("data", ""))) for r in runs})
    return Table(dataset, paths, sorted(groups.values(), key=order), columns)


def _shown_path(path: str) -> str:
    """A data path as a report shows it: relative to the working directory when it lies
    under it, else its folder's name (a committed report must not carry one machine's
    absolute paths)."""
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return p.name  # outside it: the folder's name (the fingerprint identifies it)
    return path


def collect(paths: Iterable[Path], warn: Warn = _warn) -> list[Table]:
    """The finished runs at or under ``paths`` grouped into one :class:`Table` per
    dataset. Runs without metrics.json or config.yaml are skipped with a warning;
    :class:`ReportError` if a path does not exist or holds no finished run."""
    paths = list(paths)
    datasets = _Datasets(warn)
    runs = []
    for p in paths:
        loaded = [r for d in find_runs([p]) if (r := _load(d, datasets, warn))]
        if not loaded:
            raise ReportError(f"{p}: no finished run (metrics.json and config.yaml) in it")
        runs += loaded
    unique = list({r.path.resolve(): r for r in runs}.values())  # named twice: once
    by_data: dict[str, list[Run]] = {}
    for r in unique:
        by_data.setdefault(r.dataset.key, []).append(r)
    free = RESULT_FREE_KEYS
    tables = []
    for rs in by_data.values():
        # One fingerprint prepared under several names: the table names them all.
        names = ", ".join(sorted({r.dataset.name for r in rs}))
        tables.append(_table(replace(rs[0].dataset, name=names), rs, free, warn))
    # Tables side by side compare only with these in view.
    report_wide = _varying([g for t in tables for g in t.groups])
    for t in tables:
        t.common = {c: t.groups[0].config.get(c) for c in report_wide if c not in t.columns}
    # The paper's dataset first, then by name: a stable order whatever the paths' order.
    return sorted(tables, key=lambda t: (not t.dataset.paper, t.dataset.name, t.dataset.key))


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, bool) or v is None else str(v)


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _md_row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def _heading(t: Table) -> str:
    d = t.dataset
    if d.fingerprint is None:
        return f"## {d.name} (no readable manifest.json: runs grouped by this data path)"
    where = ", ".join(t.paths)
    paper = " — the paper's Amazon Scientific" if d.paper else ""
    return f"## {d.name}{paper} (fingerprint {d.fingerprint[:12]}, {where})"


def format_tables(tables: list[Table], paper: bool = True) -> str:
    """Markdown: per table a heading naming the dataset, then one row per group (and the
    paper's row under it where it applies)."""
    # Where and when: one line per distinct commit/date/CPU (none if no run recorded it).
    measured = [r.measured for t in tables for g in t.groups for r in g.runs]
    out = sorted({m for m in measured if m})
    if out and not all(measured):
        n = measured.count("")
        out.append(f"({n} run(s) here trained before solidrec recorded commit, date and CPU.)")
    out = ["\n".join(out)] if out else []
    for t in tables:
        # The selection metric's validation value beside the test metrics: rows are
        # chosen on it, so a test difference it does not show is likely seed noise.
        selects = {g.select_metric() for g in t.groups}
        only = selects.pop() if len(selects) == 1 else None
        valid_head = "valid"
        if only in METRIC_KEYS + FULL_METRIC_KEYS:
            valid_head += " " + _head(only)
        full = [k for k in _FULL_SHOWN if any(k in r.metrics for g in t.groups for r in g.runs)]
        shown = [*METRIC_KEYS, *full]
        head = ["SR Model", "DSR Model", *t.columns, "n", *map(_head, shown), valid_head, "epochs"]
        lines = [_heading(t), ""]
        lines += [
            f"AUC to Recall@20: {PROTOCOLS['sampled']}."
            + (f" Columns *full …*: {PROTOCOLS['full']}." if full else ""),
            "",
        ]
        if t.common:
            same = ", ".join(f"{k} = {_fmt(v)}" for k, v in t.common.items())
            lines += [f"Every row here: {same}.", ""]
        lines += [_md_row(head), "|" + "---|" * len(head)]
        off: set[str] = set()
        for g in t.groups:
            stats = g.stats()
            extra = [_fmt(g.config.get(c)) for c in t.columns]
            cells = [BACKBONE_NAMES.get(g.backbone, g.backbone), g.dsr, *extra, str(len(g.runs))]
            cells += [_cell(*stats[m]) for m in shown]
            valid = g.valid()
            vcell = "–" if valid is None else _cell(*valid)
            if valid is not None and only is None:
                vcell = f"{g.select_metric()} {vcell}"
            lines.append(_md_row([*cells, vcell, _fmt_epochs(g.epochs())]))
            ref = t.paper_row(g) if paper else None
            if ref:
                vals = [f"*{v:.4f}*" for v in ref] + ["–"] * (len(shown) - len(ref))
                lines.append(_md_row(["", "*paper*", *[""] * (len(t.columns) + 1), *vals, "", ""]))
            elif paper and t.dataset.paper and (g.backbone, g.dsr) in SCIENTIFIC_TABLE1:
                off.update(settings_off_paper(g.config))
        if off:
            keys = ", ".join(sorted(off))
            note = f"No *paper* row beside runs whose {keys} differ from the paper's settings"
            lines += ["", note + " (solidrec.paper.PAPER_SETTINGS)."]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def format_runs(paths: list[Path], paper: bool = True) -> str:
    """The Markdown report of the finished runs at or under ``paths``."""
    return format_tables(collect(paths), paper)


def rows(tables: list[Table], paper: bool = True) -> list[dict[str, Any]]:
    """One flat dict per group: dataset, model, the config fields that differ anywhere in
    the report, n, seeds, ``<metric>_mean`` / ``<metric>_std`` (None for one run), and
    ``paper_<metric>`` (with ``paper``) where the paper's row applies; plus ``runs`` and
    ``config`` (the full group config)."""
    columns = _varying([g for t in tables for g in t.groups])
    out = []
    for t in tables:
        for g in t.groups:
            row: dict[str, Any] = {
                "dataset": t.dataset.name,
                "dataset_fingerprint": t.dataset.fingerprint,
                "paper_dataset": t.dataset.paper,
                "backbone": g.backbone,
                "generator": g.config.get("model.generator"),
                "solid": g.config.get("model.solid"),
                "dsr_model": g.dsr,
                **{c: g.config.get(c) for c in columns},
                "n": len(g.runs),
                "seeds": sorted((r.seed for r in g.runs), key=_value_order),
            }
            for m, (mean, std) in g.stats().items():
                row[f"{m}_mean"], row[f"{m}_std"] = mean, std
            valid = g.valid()
            row["select_metric"] = g.select_metric()
            row["valid_mean"], row["valid_std"] = valid if valid is not None else (None, None)
            row["epochs_per_stage"] = g.epochs()
            if paper:
                ref = t.paper_row(g) or ()
                for i, m in enumerate(METRIC_KEYS):
                    row[f"paper_{m}"] = ref[i] if i < len(ref) else None
            row["runs"] = [str(r.path) for r in g.runs]
            row["config"] = g.config
            out.append(row)
    return out


def _finite(v: Any) -> Any:
    """Strict JSON has no NaN: a metric that is NaN (e.g. one-class AUC) becomes null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def to_csv(table_rows: list[dict[str, Any]]) -> str:
    """CSV of :func:`rows` (``runs`` and ``config`` left out, seeds space-separated)."""
    if not table_rows:
        return ""
    names = [k for k in table_rows[0] if k not in ("runs", "config")]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in table_rows:
        epochs = r.get("epochs_per_stage") or []
        w.writerow(
            {
                **r,
                "seeds": " ".join(map(str, r["seeds"])),
                "epochs_per_stage": " ".join(f"{e:g}" for e in epochs),
            }
        )
    return buf.getvalue()


def to_json(table_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document of :func:`rows`: ``{"metrics": [...], "rows": [...]}``."""
    clean = [{k: _finite(v) for k, v in r.items()} for r in table_rows]
    return {"metrics": list(METRIC_KEYS + FULL_METRIC_KEYS), "protocols": PROTOCOLS, "rows": clean}


# --------------------------------------------------------------------------- curves


def _read_log(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        data: dict[str, list[float]] = {}
        for row in csv.DictReader(f):
            for k, v in row.items():
                try:
                    data.setdefault(k, []).append(float(v))
                except (TypeError, ValueError):
                    data.setdefault(k, []).append(math.nan)
    return data


def _labels(paths: list[Path]) -> list[str]:
    """The shortest unique path tails, as file names (``overlay`` is taken)."""
    parts = [p.parts for p in paths]
    for depth in range(1, max(map(len, parts), default=1) + 1):
        names = ["_".join(p[-depth:]) for p in parts]
        names = [re.sub(r"[^A-Za-z0-9._+-]", "_", n) for n in names]
        if len(set(names)) == len(names) and "overlay" not in names:
            return names
    return [f"{i}-{n}" for i, n in enumerate(names)]


def _panels() -> list[tuple[str, str]]:
    return [("train_loss", "train loss")] + [
        (f"valid_{m}", f"valid {h}") for m, h in zip(METRIC_KEYS, _METRIC_HEAD, strict=True)
    ]


def _figure() -> tuple[Any, list[Any]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(
            "--curves needs matplotlib: pip install matplotlib (or the bench extra: "
            "pip install -e '.[bench]')"
        ) from None
    # An Agg canvas of our own: no display needed and pyplot's global state left alone.
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(14, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(2, 4).ravel())
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write(path, buf.getvalue())


def write_curves(runs: list[Run], out_dir: Path, warn: Warn = _warn) -> list[Path]:
    """A PNG per run (train loss and validation metrics per epoch, from its log.csv;
    dotted lines where a stage begins) and ``overlay.png`` with every run; returns them."""
    logs = {}
    for r in runs:
        try:
            logs[r.path] = _read_log(RunDir(r.path).log_csv)
        except OSError as e:
            warn(f"{r.path}: no training curve ({e.strerror or e}); skipped")
    if not logs:
        raise ReportError("--curves: no run has a log.csv")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    overlay, oaxes = _figure()
    for label, log in zip(_labels(list(logs)), logs.values(), strict=True):
        fig, axes = _figure()
        x = np.arange(1, len(next(iter(log.values()), [])) + 1)
        stages = log.get("stage", [])
        starts = [i + 1 for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
        for ax, oax, (col, title) in zip(axes, oaxes, _panels(), strict=False):
            ys = log.get(col)
            if ys is not None:
                ax.plot(x, ys, marker="o")
                oax.plot(x, ys, label=label)
            for n, s in enumerate(starts, 2):
                ax.axvline(s - 0.5, color="grey", linestyle=":")
                ax.annotate(f"stage {n}", (s - 0.5, 1), xycoords=("data", "axes fraction"),
                            xytext=(2, -10), textcoords="offset points", fontsize=7,
                            color="grey")  # fmt: skip
            ax.set(title=title, xlabel="epoch")
        axes[-1].axis("off")
        fig.suptitle(label)
        written.append(out_dir / f"{label}.png")
        _save(fig, written[-1])
    for oax, (col, title) in zip(oaxes, _panels(), strict=False):
        oax.set(title=title, xlabel="epoch")
        if col == "train_loss":
            # Softmax (~7) and BCE (~0.4) losses on one axis: a log scale shows both.
            oax.set_yscale("log")
            oax.set_title(f"{title} (log scale)")
    oaxes[-1].axis("off")
    handles, names = oaxes[0].get_legend_handles_labels()
    oaxes[-1].legend(handles, names, loc="center", fontsize="small")
    overlay.suptitle("all runs")
    written.append(out_dir / "overlay.png")
    _save(overlay, written[-1])
    return written
