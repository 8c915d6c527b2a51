"""The documentation's mechanical checks (tools/check_docs.py) pass on the repository, and
each check fails on a doctored input."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_docs", ROOT / "tools" / "check_docs.py")
check_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_docs)


def _results_tables() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs/results").glob("*.md"))]


def test_repository_docs_pass():
    assert check_docs.check(ROOT) == []


def test_results_files_exist_and_are_checked():
    files = check_docs.repo_files(ROOT)
    results = [p for p in files if p.startswith("docs/results/") and p.endswith(".md")]
    assert results, "no docs/results/*.md: the provenance check would check nothing"
    assert "docs/RESULTS.md" in files


def _first_prose_figure(text: str) -> tuple[int, str]:
    """The line number and the first unsigned 4-decimal figure of ``text``'s prose."""
    for n, line in check_docs.prose_lines(text):
        if line.lstrip().startswith("|"):
            continue
        for m in check_docs._FIGURE.finditer(line):
            if not m.group(1) and len(m.group(2).split(".")[1]) == 4:
                return n, m.group(2)
    pytest.fail("RESULTS.md prose quotes no 4-decimal figure")


def test_a_figure_changed_by_one_digit_fails():
    text = (ROOT / check_docs.RESULTS_MD).read_text(encoding="utf-8")
    tables = _results_tables()
    assert check_docs.stale_figures(text, tables) == []
    known = check_docs.table_figures([text, *tables])
    # The first figure of the prose, its last digit changed to one that no table holds.
    n, figure = _first_prose_figure(text)
    lines = text.splitlines()
    doctored = next(
        d for d in (figure[:-1] + c for c in "0123456789") if d != figure and d not in known
    )
    original = lines[n - 1]
    assert figure in original
    lines[n - 1] = original.replace(figure, doctored, 1)
    problems = check_docs.stale_figures("\n".join(lines), tables)
    assert len(problems) == 1
    assert f":{n}: {doctored} " in problems[0]


def test_signed_differences_are_not_looked_up():
    tables = ["| a | 0.3044 ± 0.0016 |\n|---|---|\n| b | 0.2990 ± 0.0041 |"]
    prose = "Ours 0.3044 against 0.2990 (+0.0054, −0.0054, ±0.0041); rounded 0.304.\n"
    assert check_docs.stale_figures(prose, tables) == []
    assert len(check_docs.stale_figures(prose + "A lost figure: 0.3045.\n", tables)) == 1


def test_code_is_not_prose():
    text = "Prose.\n\n    solidrec train --set train.lr=0.0097\n\nAnd `0.1234` inline.\n"
    assert check_docs.stale_figures(text, []) == []
    assert len(check_docs.stale_figures(text + "But 0.1234 here.\n", [])) == 1


@pytest.mark.parametrize(
    "line",
    [
        "trained in /work/main/runs/x",
        "see `/tmp/out`",
        "(/home/user/data)",
        "/root/.cache",
        "on C:\\data",
        "about 2 hours on this VM",
        "on this 2-core machine",
        "as the issue's item 3 asks",
        "the target of issue 27",
    ],
)
def test_absolute_paths_and_machine_words_fail(line):
    assert len(check_docs.forbidden_text("docs/X.md", f"text\n{line}\n")) == 1


@pytest.mark.parametrize(
    "line",
    [
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        "runs/tmp/x and ../shared/data/amazon-scientific",
        "AMD EPYC, 2 cores, AVX2",
        "the build machine's CPU",
    ],
)
def test_urls_relative_paths_and_cpu_names_pass(line):
    assert check_docs.forbidden_text("docs/X.md", line) == []


def test_allowed_entries_have_reasons():
    for (path, text), reason in check_docs.ALLOWED.items():
        assert path and text and reason.strip()


@pytest.mark.parametrize(
    "text, ok",
    [
        ("Measured at commit 0871891, date 2026-12-07, on CPU AMD EPYC (2 cores).\n", True),
        ("Measured at commit fbda38e, date 2026-11-23; CPU not recorded.\n", True),
        ("Measured at commit fbda38e; CPU not recorded.\n", False),  # no date
        ("Measured at commit fbda38e, date 2026-11-23.\n", False),  # no CPU
        ("## scientific (fingerprint 867102adddbc, runs/data/scientific)\n", False),
    ],
)
def test_results_files_need_a_provenance_line(text, ok):
    assert (check_docs.missing_provenance("docs/results/x.md", text) is None) is ok


def test_broken_relative_links_fail(tmp_path):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "table.md").write_text("x")
    text = (
        "[ok](results/table.md#anchor) ![ok](results) [web](https://example.org/x) [here](#a)\n"
        "`[code](missing.md)`\n\n    [indented code](missing.md)\n\n"
        "[gone](results/gone.md) [abs](/docs/results/table.md)\n"
    )
    problems = check_docs.broken_links("docs/R.md", text, tmp_path)
    assert len(problems) == 2
    assert all(re.match(r"docs/R\.md:6: link", p) for p in problems)
