"""Data fixtures for the solidrec tests: the real files in ../shared/data, prepared once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get(
        "SOLIDREC_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)
SCIENTIFIC = SHARED_DATA / "amazon-scientific"
MOVIELENS = SHARED_DATA / "movielens-latest-small"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SOLIDREC_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def scientific_dir() -> Path:
    return _need(SCIENTIFIC)


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    return _need(MOVIELENS)


@pytest.fixture(scope="session")
def scientific_prepared(tmp_path_factory: pytest.TempPathFactory, scientific_dir: Path) -> Path:
    from solidrec.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("sci") / "scientific"
    prepare(PrepareConfig(format="atomic", input=scientific_dir, out=out))
    return out


@pytest.fixture(scope="session")
def movielens_prepared(tmp_path_factory: pytest.TempPathFactory, movielens_dir: Path) -> Path:
    from solidrec.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("ml") / "movielens"
    prepare(PrepareConfig(format="movielens", input=movielens_dir, out=out))
    return out
