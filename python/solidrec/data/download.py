"""Resumable, verified downloads of public datasets.

Sources: ``movielens-latest-small``, ``movielens-25m``, ``movielens-32m`` (GroupLens
zips, extracted), ``amazon2018:CATEGORY`` (Amazon Review Data 2018 ratings CSV +
meta JSON lines, e.g. ``amazon2018:Industrial_and_Scientific``) and
``amazon2014:CATEGORY`` (2014 5-core reviews + meta, e.g. ``amazon2014:Electronics``).
The base URL is overridable (``--base-url``) for mirrors and tests.

What is verified, in order:

1. **Transfer.** A file downloads to ``NAME.part``; ``NAME.part.json`` beside it
   records the URL, the server's validator (a strong ``ETag``, else ``Last-Modified``)
   and the announced total length. A later run resumes with ``Range`` + ``If-Range``
   and appends only to a ``206`` whose ``Content-Range`` starts at the ``.part``'s
   size, has the recorded total and whose validators equal the recorded ones. Anything
   else (no record, no validator, a ``200``, a ``416``, another total, another
   validator, a ``.part`` not shorter than the total) discards the ``.part`` and
   downloads from byte 0, so two versions of a file are never spliced. The bytes
   received must equal the announced length (``Content-Length`` of a ``200``,
   ``Content-Range`` total of a ``206``): a short or long body is rejected. When a
   server announces no length, the length cannot be checked (only the checksum can).
2. **Checksum.** The file's sha256 must equal ``KNOWN_SHA256[name]`` if present, else
   the sum recorded in ``OUT/checksums.json`` by an earlier run (trust on first use).
   A mismatch moves the file to ``NAME.bad``.
3. **Archive.** A zip must open as a zip, every member path must stay inside ``OUT``
   (no absolute paths, no ``..``, no symlink members, nothing replacing
   ``checksums.json`` or a downloaded file), the uncompressed total must stay under
   ``max_extract_bytes`` (default :data:`MAX_EXTRACT_BYTES`, 20 GiB) and no member over
   :data:`RATIO_MIN_BYTES` may expand more than :data:`MAX_COMPRESSION_RATIO` times.
   The sizes are checked as declared before extraction and again on the bytes
   actually written, since declared sizes can lie. Extraction goes to a temporary
   directory in ``OUT`` that replaces the previous tree only when complete. A rejected
   archive moves to ``NAME.bad`` (the next run downloads it afresh).
4. **Pinning.** Only a file that passed 1-3 has its sum written to ``checksums.json``.
   A file already present under its final name counts as downloaded (only step 1
   renames a ``.part`` into place) and goes through 2-4.

Errors are :class:`DownloadError` (an ``OSError``: network, disk, inconsistent
server), :class:`ChecksumError` and :class:`ArchiveError` (a ``ValueError``), each with
one message naming the path and saying what was kept.

:data:`KNOWN_SHA256` is empty: the publishers list no sha256 sums, and the project's
read-only data copy (``../shared/data``) holds only extracted or converted files
(the ml-latest-small CSVs, the Scientific atomic files), not any downloaded file
itself, so the project can state no sum of a remote file.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import stat
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from solidrec.data.io import clean_stale_temps, replace_path, sha256_file, tmp_prefix, write_json

#: sha256 of remote files (by file name) where known. Empty: no publisher lists sums
#: and ../shared/data holds none of the downloaded files themselves (see above).
KNOWN_SHA256: dict[str, str] = {}

#: Default cap on the total uncompressed bytes extracted from one zip. Generous (the
#: largest MovieLens zips expand to about a gigabyte) but finite: a zip bomb fails
#: here instead of filling the disk. Override with ``download(..., max_extract_bytes=)``.
MAX_EXTRACT_BYTES = 20 << 30
#: Largest uncompressed/compressed ratio of one member. Text CSVs deflate ~3-10x; a
#: ratio in the hundreds only comes from degenerate (bomb-like) content.
MAX_COMPRESSION_RATIO = 200
#: Members smaller than this are exempt from the ratio cap (tiny or empty files can
#: have huge ratios harmlessly).
RATIO_MIN_BYTES = 1 << 20

_RECORD = "checksums.json"


class ChecksumError(RuntimeError):
    """A downloaded file's sha256 differs from the expected one."""


class DownloadError(OSError):
    """A download failed (network, disk, inconsistent server); the message names the
    path and says whether the ``.part`` was kept for resuming or removed. An
    ``OSError`` so that callers catching I/O errors catch it."""


class ArchiveError(ValueError):
    """A downloaded archive is not a zip, unsafe, or over the extraction limits."""


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


# ------------------------------------------------------------------------ transfer


class _Inconsistent(Exception):
    """The server's answer does not fit the download so far (message: why)."""


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _reason(e: BaseException) -> str:
    """A short human reason for an exception, without Python's reprs."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        r = e.reason
        return _reason(r) if isinstance(r, BaseException) else str(r)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed early ({len(e.partial)} bytes of the last read)"
    return str(e) or type(e).__name__


def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: treated as "no validator stored"
    return meta if isinstance(meta, dict) else None


def _can_resume(meta: dict[str, Any] | None, url: str, have: int) -> bool:
    """Whether a ``.part`` of ``have`` bytes may be resumed: it needs a record of the
    same URL with a validator and a total longer than what we have."""
    if meta is None or meta.get("url") != url:
        return False
    total = meta.get("total")
    validator = meta.get("etag") or meta.get("last_modified")
    return isinstance(total, int) and 0 < have < total and isinstance(validator, str)


def _strong_etag(headers: http.client.HTTPMessage) -> str | None:
    # If-Range requires a strong validator (RFC 9110 13.1.5); a weak ETag is unusable.
    etag = headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else None


def _int_header(headers: http.client.HTTPMessage, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise _Inconsistent(f"malformed {name} header {value!r}")
    return int(value)


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _check_partial(headers: http.client.HTTPMessage, meta: dict[str, Any], have: int) -> None:
    """Raise :class:`_Inconsistent` unless a 206 continues exactly the recorded file."""
    m = _CONTENT_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
    if m is None:
        raise _Inconsistent(f"206 with unusable Content-Range {headers.get('Content-Range')!r}")
    start, end, total = int(m[1]), int(m[2]), m[3]
    if start != have or total == "*" or int(total) != meta["total"] or end != meta["total"] - 1:
        raise _Inconsistent(
            f"206 for bytes {start}-{end}/{total}, expected {have}-{meta['total'] - 1}/"
            f"{meta['total']}"
        )
    length = _int_header(headers, "Content-Length")
    if length is not None and length != end - start + 1:
        raise _Inconsistent(f"206 Content-Length {length} != range length {end - start + 1}")
    # A server that ignores If-Range still shows the new version in its validators.
    etag, modified = _strong_etag(headers), headers.get("Last-Modified")
    if meta.get("etag") and etag is not None and etag != meta["etag"]:
        raise _Inconsistent(f"ETag changed from {meta['etag']} to {etag}")
    if meta.get("last_modified") and modified is not None and modified != meta["last_modified"]:
        raise _Inconsistent(f"Last-Modified changed from {meta['last_modified']} to {modified}")


def _copy_body(
    resp: http.client.HTTPResponse,
    part: Path,
    *,
    append: bool,
    have: int,
    total: int | None,
    chunk: int,
    progress: bool,
    desc: str,
) -> int:
    """Write the body to ``part``; return the file's size. Stops at the first byte past
    ``total`` (a long body) rather than writing an unbounded stream."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            desc=desc,
            leave=False,
            disable=None,
        )
    size = have
    try:
        with open(part, "ab" if append else "wb") as f:
            while block := resp.read(chunk):
                size += len(block)
                if total is not None and size > total:
                    raise _Inconsistent(f"server sent more than the announced {total} bytes")
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return size


def _fetch_once(url: str, dest: Path, *, progress: bool, chunk: int, timeout: float) -> None:
    part, meta_path = _part_paths(dest)
    # Two attempts: a resume the server cannot continue consistently falls back to one
    # fresh download; the fresh attempt never resumes, so there is no third.
    for _attempt in range(2):
        meta = _read_meta(meta_path)
        have = part.stat().st_size if part.exists() else 0
        resume = have > 0 and _can_resume(meta, url, have)
        req = urllib.request.Request(url, headers={"User-Agent": "solidrec"})
        if resume:
            assert meta is not None
            req.add_header("Range", f"bytes={have}-")
            req.add_header("If-Range", meta["etag"] or meta["last_modified"])
        else:
            # A .part without a usable record is of unknown origin: never append to it
            # (the "wb" below truncates it).
            meta_path.unlink(missing_ok=True)
            have = 0
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and resume:
                # The .part is not a prefix of the current remote file (it is as long
                # or longer): it belongs to another version. Start over.
                e.close()
                meta_path.unlink(missing_ok=True)
                continue
            raise
        with resp:
            if resume and resp.status == 206:
                assert meta is not None
                try:
                    _check_partial(resp.headers, meta, have)
                except _Inconsistent:
                    meta_path.unlink(missing_ok=True)
                    continue
                total: int | None = meta["total"]
                append = True
            elif resp.status == 200:
                # The whole file: either we asked for it, or If-Range said the remote
                # changed, or the server ignores ranges. Start over from byte 0.
                have, append = 0, False
                total = _int_header(resp.headers, "Content-Length")
                # Record the validator before the first byte lands, so that an
                # interruption leaves a .part that can be resumed safely.
                write_json(
                    meta_path,
                    {
                        "url": url,
                        "etag": _strong_etag(resp.headers),
                        "last_modified": resp.headers.get("Last-Modified"),
                        "total": total,
                    },
                )
            else:
                raise _Inconsistent(f"unexpected HTTP status {resp.status}")
            try:
                size = _copy_body(
                    resp,
                    part,
                    append=append,
                    have=have,
                    total=total,
                    chunk=chunk,
                    progress=progress,
                    desc=dest.name,
                )
            except _Inconsistent:
                # A body longer than announced: the server cannot be trusted about this
                # file, so neither can the bytes already kept. Forget the validator so
                # that the .part is removed rather than resumed.
                meta_path.unlink(missing_ok=True)
                raise
        if total is not None and size != total:
            raise _Inconsistent(f"incomplete download ({size} of {total} bytes)")
        os.replace(part, dest)
        meta_path.unlink(missing_ok=True)
        return
    raise _Inconsistent("the server's answers to a resumed and a fresh request disagree")


def _settle_part(url: str, dest: Path) -> str:
    """After a failed transfer: keep a resumable ``.part``, remove any other; say which."""
    part, meta_path = _part_paths(dest)
    if not part.exists() and not part.is_symlink():
        meta_path.unlink(missing_ok=True)
        return "nothing kept"
    try:
        size = part.stat().st_size
    except OSError:
        size = 0
    meta = _read_meta(meta_path)
    if _can_resume(meta, url, size):
        assert meta is not None
        return f"kept {part} ({size} of {meta['total']} bytes) to resume; run again to continue"
    try:
        part.unlink()
        meta_path.unlink(missing_ok=True)
    except OSError as e:
        return f"could not remove {part} ({_reason(e)}); delete it by hand"
    return f"removed {part} (it could not be resumed safely)"


def fetch(
    url: str, dest: Path, *, progress: bool = False, chunk: int = 1 << 20, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous ``.part``
    only when the server proves it is the same file (see the module docstring).

    Raises :class:`DownloadError` naming ``dest`` and saying what was kept."""
    dest = Path(dest)
    try:
        _fetch_once(url, dest, progress=progress, chunk=chunk, timeout=timeout)
    except (_Inconsistent, OSError, http.client.HTTPException, ValueError) as e:
        # ValueError: a malformed URL (e.g. a bad --base-url) from urllib.
        raise DownloadError(
            f"downloading {url} to {dest} failed: {_reason(e)}; {_settle_part(url, dest)}"
        ) from e
    return dest


# ------------------------------------------------------------------------ extraction


def _member_parts(zpath: Path, info: zipfile.ZipInfo, reserved: frozenset[str]) -> tuple[str, ...]:
    """The path components of a member, or :class:`ArchiveError` if it is unsafe."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{zpath}: member {name!r} is a symlink")
    if name.startswith("/") or "\\" in name or re.match(r"[A-Za-z]:", name):
        raise ArchiveError(f"{zpath}: member {name!r} has an absolute or Windows path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts or ".." in parts:
        raise ArchiveError(f"{zpath}: unsafe member path {name!r}")
    if parts[0] in reserved:
        raise ArchiveError(f"{zpath}: member {name!r} would replace the downloader's own file")
    return parts


def _check_declared(zpath: Path, infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise ArchiveError(
            f"{zpath}: declares {declared} bytes uncompressed, over the limit of {max_bytes} "
            "bytes (max_extract_bytes)"
        )
    for i in infos:
        if i.file_size > RATIO_MIN_BYTES and i.file_size > MAX_COMPRESSION_RATIO * max(
            i.compress_size, 1
        ):
            raise ArchiveError(
                f"{zpath}: member {i.filename!r} declares a compression ratio over "
                f"{MAX_COMPRESSION_RATIO}:1 ({i.file_size} from {i.compress_size} bytes)"
            )


def _copy_member(
    zpath: Path, info: zipfile.ZipInfo, src: BinaryIO, dst: BinaryIO, budget: int
) -> int:
    """Copy one member, counting the bytes actually produced; returns the count."""
    n = 0
    while block := src.read(1 << 20):
        n += len(block)
        if n > info.file_size:
            raise ArchiveError(
                f"{zpath}: member {info.filename!r} expands to more than the "
                f"{info.file_size} bytes it declares"
            )
        if n > budget:
            raise ArchiveError(f"{zpath}: extraction exceeds the limit (max_extract_bytes)")
        if n > RATIO_MIN_BYTES and n > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise ArchiveError(
                f"{zpath}: member {info.filename!r} exceeds the compression ratio "
                f"{MAX_COMPRESSION_RATIO}:1"
            )
        dst.write(block)
    return n


def _safe_extract(
    zpath: Path,
    out: Path,
    *,
    max_bytes: int = MAX_EXTRACT_BYTES,
    reserved: frozenset[str] = frozenset(),
) -> None:
    """Extract ``zpath`` into ``out`` within the limits, all or nothing."""
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as e:
        # crafted or damaged central directories can raise any of these
        raise ArchiveError(f"{zpath}: not a zip file ({e})") from e
    with zf:
        infos = zf.infolist()
        members = [(i, _member_parts(zpath, i, reserved | {_RECORD})) for i in infos]
        _check_declared(zpath, infos, max_bytes)
        # A fresh directory in out: same filesystem, so moving the result is a rename,
        # and a failure leaves the previous tree untouched.
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(zpath.name), dir=out))
        try:
            root = tmp.resolve()
            written = 0
            for info, parts in members:
                target = tmp.joinpath(*parts)
                # Belt and braces: nothing we create can point outside tmp.
                if root not in target.resolve().parents:
                    raise ArchiveError(f"{zpath}: unsafe member path {info.filename!r}")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        written += _copy_member(zpath, info, src, dst, max_bytes - written)
                except (zipfile.BadZipFile, EOFError, NotImplementedError, struct.error) as e:
                    # damaged data (bad CRC, truncated) or an unsupported compression
                    raise ArchiveError(f"{zpath}: member {info.filename!r}: {e}") from e
            for entry in sorted(tmp.iterdir()):
                replace_path(entry, out / entry.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------ download


def _read_record(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DownloadError(
            f"cannot read the checksum record {path}: {_reason(e)}; fix or delete it "
            "(deleting it forgets the trusted sums)"
        ) from e
    if not isinstance(record, dict):
        raise DownloadError(f"the checksum record {path} is not a JSON object; fix or delete it")
    return record


def _set_aside(dest: Path) -> Path:
    bad = dest.with_name(dest.name + ".bad")
    os.replace(dest, bad)
    return bad


def download(
    spec: str,
    out: str | Path,
    *,
    base_url: str | None = None,
    progress: bool = False,
    max_extract_bytes: int = MAX_EXTRACT_BYTES,
) -> list[Path]:
    """Download, verify, (for zips) extract and then pin source ``spec`` into ``out``.

    Raises :class:`DownloadError`, :class:`ChecksumError` or :class:`ArchiveError`
    with a one-line message; nothing is recorded in ``checksums.json`` for a file that
    failed any check."""
    src = resolve_source(spec)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {out}: {_reason(e)}; nothing kept") from e
    # Extractions and swaps of a downloader that was killed (a dead pid in the name).
    clean_stale_temps(out)
    base = (base_url or src.base_url).rstrip("/") + "/"
    record_path = out / _RECORD
    record = _read_record(record_path)
    names = [Path(rel).name for rel in src.files]
    # Top-level names a zip member must not replace: our downloads and their side files.
    reserved = frozenset(
        n + suffix for n in names for suffix in ("", ".part", ".part.json", ".bad")
    )
    results: list[Path] = []
    for rel, name in zip(src.files, names, strict=True):
        dest = out / name
        expected = KNOWN_SHA256.get(name) or record.get(name)
        if not dest.exists():
            fetch(base + rel, dest, progress=progress)
        try:
            digest = sha256_file(dest)
        except OSError as e:
            raise DownloadError(f"cannot read {dest}: {_reason(e)}; kept it, not trusted") from e
        if expected is not None and digest != expected:
            bad = _set_aside(dest)
            raise ChecksumError(
                f"{dest}: sha256 {digest} != expected {expected} (moved to {bad.name}; "
                "nothing recorded)"
            )
        if src.extract_zip:
            try:
                _safe_extract(dest, out, max_bytes=max_extract_bytes, reserved=reserved)
            except ArchiveError as e:
                # Set aside so that the next run downloads afresh rather than reusing it.
                bad = _set_aside(dest)
                raise ArchiveError(f"{e}; moved to {bad.name}, checksum not recorded") from e
            except OSError as e:
                raise DownloadError(
                    f"extracting {dest} into {out} failed: {_reason(e)}; removed the partial "
                    f"extraction, kept {dest} (checksum not recorded)"
                ) from e
        if name not in record:
            record[name] = digest
            try:
                write_json(record_path, record)
            except OSError as e:
                raise DownloadError(
                    f"cannot write the checksum record {record_path}: {_reason(e)}; kept {dest} "
                    "(checksum not recorded)"
                ) from e
        results.append(dest)
    return results
