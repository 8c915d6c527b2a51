"""Mechanical checks of the committed documentation (run by tests/test_docs.py in `make test`).

    python tools/check_docs.py        # prints one line per problem; exit status 1 if any

1. No absolute path of one machine (/work/, /tmp/, /home/, /root/, /opt/, /Users/, C:\\)
   and no words about the machine or the task a text was written on ("this VM", "this
   machine", "issue 27") in a text file of the repository (*.md, *.yaml, *.yml, *.txt,
   *.mk, Makefile), except the entries of ALLOWED, each with its reason.
2. docs/RESULTS.md: every unsigned number with 3 or 4 decimals in its prose (0.3049,
   0.684) is a figure of a table, of RESULTS.md itself or of docs/results/*.md (a
   3-decimal one may be a 4-decimal table figure rounded). Signed numbers (+0.0054,
   −0.006, ±0.0007) are differences and spreads, derived from the tables, and not
   looked up.
3. docs/results/*.md: each file says the commit and date it was measured at and the CPU
   (or that the CPU was not recorded): "Measured at commit abc1234, date 2026-12-07, on
   CPU ..." or "...; CPU not recorded."
4. Every relative link or image of a Markdown file points at a file or folder that
   exists (the part before any #anchor).

The files are those git lists, tracked or new but not ignored (`git ls-files`); code
blocks and inline code are not prose for checks 2 and 4. Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = "docs/RESULTS.md"
RESULTS_DIR = "docs/results"

TEXT_SUFFIXES = {".md", ".yaml", ".yml", ".txt", ".mk"}
TEXT_NAMES = {"Makefile"}

# An absolute path starts at a separator no word, dot, slash or dash precedes, so URLs
# (https://host/home/...) and relative paths (runs/tmp/...) pass.
_ABS_PATH = re.compile(r"(?<![\w./~-])(?:/(?:work|tmp|home|root|opt|Users)/|[A-Za-z]:\\)")
_MACHINE_WORDS = re.compile(
    r"\bthis (?:[\w-]+ )?(?:VM|machine|box|host|session)\b|\bthe issue's\b|\bissue #?\d+",
    re.IGNORECASE,
)

# (path, the exact text matched): why that file must carry it. Keep this short.
ALLOWED: dict[tuple[str, str], str] = {}

_MEASURED = re.compile(
    r"^Measured at commit [0-9a-f]{7,40}\b.*?\bdate \d{4}-\d{2}-\d{2}\b"
    r".*(?:\bon CPU \S|\bCPU not recorded\b)",
    re.MULTILINE,
)

# A number with exactly 3 or 4 decimals, and the sign before it if any.
_FIGURE = re.compile(r"(?<![\w.])([+\-−±]?)(\d+\.\d{3,4})(?!\d|\.\d)")
_INLINE_CODE = re.compile(r"(`+).+?\1")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def repo_files(root: Path = ROOT) -> list[str]:
    """Paths (relative, POSIX) of the files git tracks or would add, that exist."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (root / p).is_file()})


def is_text_file(path: str) -> bool:
    p = Path(path)
    return p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES


def forbidden_text(path: str, text: str) -> list[str]:
    """Absolute paths and machine words in ``text`` (the file at ``path``) not in ALLOWED."""
    kinds = (
        (_ABS_PATH, "absolute path", "write it relative to the repository"),
        (_MACHINE_WORDS, "machine words", "name the CPU model (or the date) instead"),
    )
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for rx, what, fix in kinds:
            for m in rx.finditer(line):
                if (path, m.group(0)) not in ALLOWED:
                    found.append(f"{path}:{n}: {what} {m.group(0)!r}: {fix}")
    return found


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the prose of Markdown ``text``: fenced and indented code
    blocks left out, inline code spans blanked."""
    fence = None
    code = False  # inside an indented code block
    blank = True  # the previous line was blank
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        indented = line.startswith(("    ", "\t"))
        code = bool(stripped) and indented and (blank or code)
        blank = not stripped
        if not code and stripped:
            yield n, _INLINE_CODE.sub(" ", line)


def _is_table_row(line: str) -> bool:
    return line.lstrip().startswith("|")


def table_figures(texts: Iterable[str]) -> set[str]:
    """Every 3-4-decimal number in the table rows of the Markdown ``texts``."""
    figures = set()
    for text in texts:
        for line in text.splitlines():
            if _is_table_row(line):
                figures.update(m.group(2) for m in _FIGURE.finditer(line))
    return figures


def _known(figure: str, figures: set[str], rounded: set[str]) -> bool:
    return figure in figures or (len(figure.split(".")[1]) == 3 and figure in rounded)


def stale_figures(results_md: str, tables: Iterable[str]) -> list[str]:
    """The unsigned 3-4-decimal numbers of ``results_md``'s prose that are in none of its
    own tables nor in the tables of ``tables`` (the texts of docs/results/*.md)."""
    figures = table_figures([results_md, *tables])
    rounded = {f"{float(f):.3f}" for f in figures if len(f.split(".")[1]) == 4}
    found = []
    for n, line in prose_lines(results_md):
        if _is_table_row(line):
            continue
        for m in _FIGURE.finditer(line):
            sign, figure = m.groups()
            if not sign and not _known(figure, figures, rounded):
                found.append(
                    f"{RESULTS_MD}:{n}: {figure} is in no table of {RESULTS_MD} or "
                    f"{RESULTS_DIR}/*.md (a stale figure, or one to put in a table)"
                )
    return found


def missing_provenance(path: str, text: str) -> str | None:
    """A problem line if the results file ``text`` lacks its "Measured at" line."""
    if _MEASURED.search(text):
        return None
    return (
        f"{path}: no line 'Measured at commit <sha>, date <YYYY-MM-DD>, on CPU <model>' "
        "(or '...; CPU not recorded')"
    )


def broken_links(path: str, text: str, root: Path = ROOT) -> list[str]:
    """Relative links and images of the Markdown file ``path`` (relative to ``root``)
    whose target does not exist."""
    found = []
    here = (root / path).parent
    for n, line in prose_lines(text):
        targets = [m.group(1) for m in _LINK.finditer(line)]
        targets += [m.group(1) for m in _REF_LINK.finditer(line)]
        for target in targets:
            if target.startswith("#") or _SCHEME.match(target):
                continue
            file = target.split("#", 1)[0]
            if file.startswith("/"):
                found.append(f"{path}:{n}: link {target!r} is absolute: make it relative")
            elif not (here / file).exists():
                found.append(f"{path}:{n}: link {target!r} points at no file")
    return found


def check(root: Path = ROOT) -> list[str]:
    """Every problem of checks 1-4 in the repository at ``root``, one line each."""
    files = repo_files(root)
    texts = {p: (root / p).read_text(encoding="utf-8") for p in files if is_text_file(p)}
    problems = []
    for p, text in texts.items():
        problems += forbidden_text(p, text)
        if p.endswith(".md"):
            problems += broken_links(p, text, root)
    results = {p: t for p, t in texts.items() if re.fullmatch(rf"{RESULTS_DIR}/[^/]+\.md", p)}
    for p, text in results.items():
        problem = missing_provenance(p, text)
        if problem:
            problems.append(problem)
    if RESULTS_MD in texts:
        problems += stale_figures(texts[RESULTS_MD], results.values())
    return problems


def main() -> int:
    problems = check()
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
