"""Errors raised for malformed input data."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """Malformed input: names the file, the 1-based line (or row) and the problem."""

    def __init__(
        self, path: str | Path, line: int | None, problem: str, unit: str = "line"
    ) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, {unit} {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")
