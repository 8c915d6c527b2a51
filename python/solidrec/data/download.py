"""Resumable, checksummed downloads of public datasets.

Sources: ``movielens-latest-small``, ``movielens-25m``, ``movielens-32m`` (GroupLens
zips, extracted), ``amazon2018:CATEGORY`` (Amazon Review Data 2018 ratings CSV +
meta JSON lines, e.g. ``amazon2018:Industrial_and_Scientific``) and
``amazon2014:CATEGORY`` (2014 5-core reviews + meta, e.g. ``amazon2014:Electronics``).

Checksums: a file with a sha256 in :data:`KNOWN_SHA256` is verified against it. The
publishers do not list sha256 sums for these files, so otherwise the sum is recorded
in ``OUT/checksums.json`` on first download (trust on first use) and every later
download into that directory must match it. Downloads go to ``NAME.part`` and resume
with an HTTP Range request; the base URL is overridable (``--base-url``) for mirrors
and tests.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from solidrec.data.io import sha256_file, write_json

#: sha256 of remote files (by file name) where known.
KNOWN_SHA256: dict[str, str] = {}


class ChecksumError(RuntimeError):
    """A downloaded file's sha256 differs from the expected one."""


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: files relative to ``base_url``."""

    name: str
    base_url: str
    files: tuple[str, ...]
    extract_zip: bool = False
    prepare_format: str = ""


_MOVIELENS = "https://files.grouplens.org/datasets/movielens/"
_AMAZON2018 = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/"
_AMAZON2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"


def resolve_source(spec: str) -> Source:
    """``movielens-latest-small`` / ``movielens-25m`` / ``movielens-32m`` /
    ``amazon2018:CATEGORY`` / ``amazon2014:CATEGORY``."""
    if spec.startswith("movielens-"):
        variant = spec.removeprefix("movielens-")
        if variant not in ("latest-small", "25m", "32m"):
            raise ValueError(f"unknown MovieLens variant {variant!r}")
        return Source(
            spec, _MOVIELENS, (f"ml-{variant}.zip",), extract_zip=True, prepare_format="movielens"
        )
    kind, _, category = spec.partition(":")
    if not category or "/" in category:
        raise ValueError(
            f"unknown source {spec!r}; e.g. movielens-latest-small, amazon2018:Electronics"
        )
    if kind == "amazon2018":
        files = (f"categoryFilesSmall/{category}.csv", f"metaFiles2/meta_{category}.json.gz")
        return Source(spec, _AMAZON2018, files, prepare_format="amazon2018")
    if kind == "amazon2014":
        return Source(
            spec,
            _AMAZON2014,
            (f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"),
            prepare_format="amazon2014",
        )
    raise ValueError(f"unknown source {spec!r}")


def fetch(
    url: str, dest: Path, *, progress: bool = False, chunk: int = 1 << 20, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with a Range request."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "solidrec"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch
            os.replace(part, dest)
            return dest
        raise
    with resp:
        if have and resp.status != 206:
            have = 0  # server ignored the Range header: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                leave=False,
                disable=None,
            )
        with open(part, "ab" if have else "wb") as f:
            while block := resp.read(chunk):
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()
    if total is not None and part.stat().st_size != total:
        raise OSError(
            f"{url}: incomplete download ({part.stat().st_size} of {total} bytes); "
            "run again to resume"
        )
    os.replace(part, dest)
    return dest


def _safe_extract(zpath: Path, out: Path) -> None:
    root = out.resolve()
    with zipfile.ZipFile(zpath) as zf:
        for member in zf.namelist():
            target = (out / member).resolve()
            if root != target and root not in target.parents:
                raise ValueError(f"{zpath}: unsafe member path {member!r}")
        zf.extractall(out)


def download(
    spec: str, out: str | Path, *, base_url: str | None = None, progress: bool = False
) -> list[Path]:
    """Download (and verify, and for zips extract) source ``spec`` into ``out``."""
    src = resolve_source(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = (base_url or src.base_url).rstrip("/") + "/"
    record_path = out / "checksums.json"
    record: dict[str, str] = json.loads(record_path.read_text()) if record_path.exists() else {}
    results: list[Path] = []
    for rel in src.files:
        name = Path(rel).name
        dest = out / name
        expected = KNOWN_SHA256.get(name) or record.get(name)
        if not dest.exists():
            fetch(base + rel, dest, progress=progress)
        digest = sha256_file(dest)
        if expected is not None and digest != expected:
            bad = dest.with_name(dest.name + ".bad")
            os.replace(dest, bad)
            raise ChecksumError(
                f"{name}: sha256 {digest} != expected {expected} (moved to {bad.name})"
            )
        if name not in record:
            record[name] = digest
            write_json(record_path, record)
        if src.extract_zip:
            _safe_extract(dest, out)
        results.append(dest)
    return results
