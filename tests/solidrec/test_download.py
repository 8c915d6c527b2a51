"""The downloader against a local HTTP server that can misbehave on demand (no internet).

Each test names the defect it guards: stale or foreign ``.part`` files, resumes across
a changed remote file, short and long bodies, unverified files pinned as trusted,
zip bombs and unsafe members, and error messages.
"""

from __future__ import annotations

import io
import json
import socket
import stat
import struct
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from solidrec.cli import main
from solidrec.data import download as dl
from solidrec.data.download import ArchiveError, ChecksumError, DownloadError, download, fetch
from solidrec.data.io import sha256_file

# ------------------------------------------------------------------------ the server


@dataclass
class Remote:
    """One served file and its validators (``None``: header not sent)."""

    data: bytes
    etag: str | None = None
    last_modified: str | None = None


class Server:
    """Serves :attr:`files` with Range / If-Range support; the flags make it misbehave."""

    def __init__(self) -> None:
        self.files: dict[str, Remote] = {}
        self.requests: list[dict[str, str | None]] = []
        self.truncate_at: int | None = None  # send this many body bytes, then close
        self.ignore_range = False  # answer every request 200 with the whole file
        self.ignore_if_range = False  # honour Range even when If-Range does not match
        self.omit_length = False  # no Content-Length (body ends when the connection closes)
        self.extra = b""  # bytes sent after the announced body
        self.fail_status: int | None = None  # answer every request with this error
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                server.requests.append({"Range": rng, "If-Range": if_range})
                if server.fail_status is not None:
                    self.send_error(server.fail_status)
                    return
                f = server.files.get(self.path.lstrip("/"))
                if f is None:
                    self.send_error(404)
                    return
                data, start, partial = f.data, 0, False
                # RFC 9110 If-Range: serve the range only if the validator still matches
                fresh = if_range is None or if_range in (f.etag, f.last_modified)
                if rng and not server.ignore_range and (fresh or server.ignore_if_range):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    partial = True
                body = data[start:]
                self.send_response(206 if partial else 200)
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if not server.omit_length:
                    self.send_header("Content-Length", str(len(body)))
                if f.etag is not None:
                    self.send_header("ETag", f.etag)
                if f.last_modified is not None:
                    self.send_header("Last-Modified", f.last_modified)
                self.end_headers()
                if server.truncate_at is not None:
                    body = body[: server.truncate_at]
                self.wfile.write(body + server.extra)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
TOYS = "categoryFilesSmall/Toys.csv"
META = "metaFiles2/meta_Toys.json.gz"
LM1 = "Mon, 01 Jan 2024 00:00:00 GMT"
LM2 = "Tue, 02 Jan 2024 00:00:00 GMT"


def _serve_toys(server: Server, data: bytes = PAYLOAD, **validators: str | None) -> None:
    server.files[TOYS] = Remote(data, **validators)
    server.files[META] = Remote(b"meta", etag='"m"')


def _write_part(out: Path, name: str, data: bytes, meta: dict[str, object] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.part").write_bytes(data)
    if meta is not None:
        (out / f"{name}.part.json").write_text(json.dumps(meta))


def _record(out: Path) -> dict[str, str]:
    p = out / "checksums.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _cli(out: Path, url: str, source: str = "amazon2018:Toys") -> list[str]:
    return ["download", source, "--out", str(out), "--base-url", url, "--no-progress"]


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------- defect 1: stale .part longer than remote


@pytest.mark.parametrize("with_meta", [True, False], ids=["validator-stored", "bare-part"])
def test_stale_part_longer_than_remote_is_discarded(
    server: Server, tmp_path: Path, with_meta: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = PAYLOAD[:1000]
    _serve_toys(server, remote, etag='"v1"')
    out = tmp_path / "amz"
    # a .part longer than the remote file: the server answers the range with 416
    meta = {"url": server.url + TOYS, "etag": '"v1"', "last_modified": None, "total": 9000}
    _write_part(out, "Toys.csv", b"x" * 5000, meta if with_meta else None)
    assert main(_cli(out, server.url)) == 0, capsys.readouterr().err
    assert (out / "Toys.csv").read_bytes() == remote
    assert not (out / "Toys.csv.part").exists() and not (out / "Toys.csv.part.json").exists()
    assert _record(out)["Toys.csv"] == sha256_file(out / "Toys.csv")
    # the last request for the file downloaded it whole
    assert server.requests[-2]["Range"] is None


# ------------------------------------------- defect 2: resume must not splice versions


@pytest.mark.parametrize(
    "case", ["if-range-honoured", "if-range-ignored", "range-ignored", "no-validator-stored"]
)
def test_resume_onto_changed_remote_restarts(server: Server, tmp_path: Path, case: str) -> None:
    v1 = PAYLOAD
    v2 = bytes(reversed(PAYLOAD))  # same length: only the validators tell them apart
    _serve_toys(server, v2, etag='"v2"')
    server.ignore_if_range = case == "if-range-ignored"
    server.ignore_range = case == "range-ignored"
    out = tmp_path / "amz"
    meta = {"url": server.url + TOYS, "etag": '"v1"', "last_modified": None, "total": len(v1)}
    _write_part(out, "Toys.csv", v1[:30000], None if case == "no-validator-stored" else meta)
    download("amazon2018:Toys", out, base_url=server.url)
    assert (out / "Toys.csv").read_bytes() == v2
    assert _record(out)["Toys.csv"] == sha256_file(out / "Toys.csv")


def test_resume_changed_last_modified_restarts(server: Server, tmp_path: Path) -> None:
    _serve_toys(server, bytes(reversed(PAYLOAD)), last_modified=LM2)
    server.ignore_if_range = True  # only the Last-Modified of the 206 shows the change
    out = tmp_path / "amz"
    meta = {"url": server.url + TOYS, "etag": None, "last_modified": LM1, "total": len(PAYLOAD)}
    _write_part(out, "Toys.csv", PAYLOAD[:30000], meta)
    download("amazon2018:Toys", out, base_url=server.url)
    assert (out / "Toys.csv").read_bytes() == bytes(reversed(PAYLOAD))


@pytest.mark.parametrize(
    "validators",
    [{"etag": '"v1"'}, {"etag": 'W/"weak"', "last_modified": LM1}],
    ids=["strong-etag", "weak-etag-uses-last-modified"],
)
def test_interrupted_download_resumes_with_if_range(
    server: Server, tmp_path: Path, validators: dict[str, str]
) -> None:
    _serve_toys(server, **validators)
    out = tmp_path / "amz"
    server.truncate_at = 30000
    with pytest.raises(DownloadError, match="kept .*Toys.csv.part"):
        download("amazon2018:Toys", out, base_url=server.url)
    assert (out / "Toys.csv.part").stat().st_size == 30000
    assert json.loads((out / "Toys.csv.part.json").read_text())["total"] == len(PAYLOAD)
    assert _record(out) == {}  # nothing trusted from an incomplete download
    server.truncate_at = None
    download("amazon2018:Toys", out, base_url=server.url)
    expected_if_range = validators["etag"] if "W/" not in validators["etag"] else LM1
    assert server.requests[1] == {"Range": "bytes=30000-", "If-Range": expected_if_range}
    assert (out / "Toys.csv").read_bytes() == PAYLOAD
    assert not (out / "Toys.csv.part").exists() and not (out / "Toys.csv.part.json").exists()


def test_interrupted_download_without_validator_is_not_kept(server: Server, tmp_path: Path) -> None:
    _serve_toys(server)  # no ETag, no Last-Modified: a resume could not be checked
    out = tmp_path / "amz"
    server.truncate_at = 30000
    with pytest.raises(DownloadError, match="removed .*Toys.csv.part"):
        download("amazon2018:Toys", out, base_url=server.url)
    assert not (out / "Toys.csv.part").exists()


def test_long_body_is_rejected(server: Server, tmp_path: Path) -> None:
    # a 206 without Content-Length whose body runs past the announced total
    _serve_toys(server, etag='"v1"')
    server.omit_length = True
    server.extra = b"trailing junk"
    out = tmp_path / "amz"
    meta = {"url": server.url + TOYS, "etag": '"v1"', "last_modified": None, "total": len(PAYLOAD)}
    _write_part(out, "Toys.csv", PAYLOAD[:30000], meta)
    with pytest.raises(DownloadError, match="more than the announced .*removed"):
        download("amazon2018:Toys", out, base_url=server.url)
    assert not (out / "Toys.csv").exists() and not (out / "Toys.csv.part").exists()
    assert _record(out) == {}


def test_short_body_is_rejected(server: Server, tmp_path: Path) -> None:
    _serve_toys(server, etag='"v1"')
    server.truncate_at = 100
    with pytest.raises(DownloadError, match="100 of 102400 bytes"):
        fetch(server.url + TOYS, tmp_path / "Toys.csv")
    assert not (tmp_path / "Toys.csv").exists()


# ------------------------------------- defect 3: nothing pinned before it is verified


def test_non_zip_archive_rejected_not_pinned(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["ml-latest-small.zip"] = Remote(b"<html>mirror error page</html>", etag='"e"')
    out = tmp_path / "ml"
    assert main(_cli(out, server.url, "movielens-latest-small")) == 2
    err = capsys.readouterr().err
    assert "ml-latest-small.zip" in err and "not a zip" in err and "Traceback" not in err
    assert _record(out) == {}
    # set aside, so that the next run downloads it afresh instead of trusting it
    assert not (out / "ml-latest-small.zip").exists()
    assert (out / "ml-latest-small.zip.bad").exists()
    server.files["ml-latest-small.zip"] = Remote(_zip({"ml-latest-small/ratings.csv": b"a\n"}))
    assert main(_cli(out, server.url, "movielens-latest-small")) == 0
    assert _record(out) == {"ml-latest-small.zip": sha256_file(out / "ml-latest-small.zip")}


def test_known_sha256_mismatch_is_not_pinned(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_toys(server, etag='"v1"')
    monkeypatch.setitem(dl.KNOWN_SHA256, "Toys.csv", "0" * 64)
    with pytest.raises(ChecksumError, match="Toys.csv"):
        download("amazon2018:Toys", tmp_path, base_url=server.url)
    assert (tmp_path / "Toys.csv.bad").exists() and _record(tmp_path) == {}


# ------------------------------------------------------ defect 4: extraction limits


def test_zip_bomb_ratio_rejected(server: Server, tmp_path: Path) -> None:
    bomb = _zip({"ml-latest-small/ratings.csv": bytes(4 << 20)})  # 4 MiB of zeros, ~4 KB
    assert len(bomb) < 20_000
    server.files["ml-latest-small.zip"] = Remote(bomb)
    out = tmp_path / "ml"
    with pytest.raises(ArchiveError, match="compression ratio"):
        download("movielens-latest-small", out, base_url=server.url)
    assert not (out / "ml-latest-small").exists() and _record(out) == {}
    assert [p.name for p in out.iterdir()] == ["ml-latest-small.zip.bad"]


def test_extract_total_size_cap(server: Server, tmp_path: Path) -> None:
    server.files["ml-latest-small.zip"] = Remote(
        _zip({"ml-latest-small/a.csv": b"a" * 600, "ml-latest-small/b.csv": b"b" * 600})
    )
    out = tmp_path / "ml"
    with pytest.raises(ArchiveError, match="1200 bytes.*limit of 1000"):
        download("movielens-latest-small", out, base_url=server.url, max_extract_bytes=1000)
    assert not (out / "ml-latest-small").exists() and _record(out) == {}
    assert dl.MAX_EXTRACT_BYTES >= 20 << 30


def _lie_about_size(data: bytes, declared: int) -> bytes:
    """Rewrite the central directory's uncompressed size of the (only) member."""
    buf = bytearray(data)
    cd = buf.rindex(b"PK\x01\x02")
    struct.pack_into("<I", buf, cd + 24, declared)
    return bytes(buf)


def test_declared_size_lie_rejected(server: Server, tmp_path: Path) -> None:
    real = bytes(range(256)) * 4000  # ~1 MB, compresses poorly enough to pass the ratio cap
    server.files["ml-latest-small.zip"] = Remote(
        _lie_about_size(_zip({"ml-latest-small/ratings.csv": real}), 1000)
    )
    out = tmp_path / "ml"
    with pytest.raises(ArchiveError, match="ml-latest-small.zip"):
        download("movielens-latest-small", out, base_url=server.url)
    assert not (out / "ml-latest-small").exists() and _record(out) == {}


def test_actual_bytes_are_counted(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a zip reader that trusted the local header (not the central directory) could
    # produce more bytes than declared: the extractor counts what it writes
    server.files["ml-latest-small.zip"] = Remote(_zip({"ml-latest-small/ratings.csv": b"ok"}))
    real_open = zipfile.ZipFile.open

    def lying_open(self: zipfile.ZipFile, name: object, mode: str = "r", **kw: object) -> object:
        if mode == "r":
            return io.BytesIO(b"z" * 5000)
        return real_open(self, name, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    out = tmp_path / "ml"
    with pytest.raises(ArchiveError, match="more than the 2 bytes it declares"):
        download("movielens-latest-small", out, base_url=server.url)
    assert not (out / "ml-latest-small").exists() and _record(out) == {}


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("ml-latest-small/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize(
    "archive",
    [
        _zip({"../evil.csv": b"x"}),
        _zip({"ml-latest-small/../../evil.csv": b"x"}),
        _zip({"/tmp/evil.csv": b"x"}),
        _zip({"checksums.json": b"{}"}),
        _symlink_zip(),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "overwrites-record", "symlink"],
)
def test_unsafe_members_refused(server: Server, tmp_path: Path, archive: bytes) -> None:
    server.files["ml-latest-small.zip"] = Remote(archive)
    out = tmp_path / "a" / "ml"
    with pytest.raises(ArchiveError, match="member"):
        download("movielens-latest-small", out, base_url=server.url)
    assert sorted(p.name for p in out.iterdir()) == ["ml-latest-small.zip.bad"]
    assert not (tmp_path / "evil.csv").exists() and not (tmp_path / "a" / "evil.csv").exists()


def test_reextraction_replaces_previous_tree(server: Server, tmp_path: Path) -> None:
    server.files["ml-latest-small.zip"] = Remote(_zip({"ml-latest-small/ratings.csv": b"new"}))
    out = tmp_path / "ml"
    (out / "ml-latest-small").mkdir(parents=True)
    (out / "ml-latest-small" / "ratings.csv").write_bytes(b"old")
    download("movielens-latest-small", out, base_url=server.url)
    assert (out / "ml-latest-small" / "ratings.csv").read_bytes() == b"new"
    assert sorted(p.name for p in out.iterdir()) == [
        "checksums.json",
        "ml-latest-small",
        "ml-latest-small.zip",
    ]


# ------------------------------------------------ defect 6: one clear error message


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("solidrec download: error: ")
    return err


def test_cli_http_error_names_path(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve_toys(server)
    server.fail_status = 500
    out = tmp_path / "amz"
    assert main(_cli(out, server.url)) == 2
    err = _one_line_error(capsys)
    assert str(out / "Toys.csv") in err and "HTTP 500" in err and "nothing kept" in err


def test_cli_connection_refused_names_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "amz"
    assert main(_cli(out, f"http://127.0.0.1:{port}/")) == 2
    err = _one_line_error(capsys)
    assert str(out / "Toys.csv") in err and "refused" in err.lower()


def test_cli_interrupted_download_says_part_kept(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve_toys(server, etag='"v1"')
    server.truncate_at = 500
    out = tmp_path / "amz"
    assert main(_cli(out, server.url)) == 2
    err = _one_line_error(capsys)
    assert f"kept {out / 'Toys.csv.part'} (500 of 102400 bytes)" in err and "resume" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_cli_disk_full_names_path(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve_toys(server, etag='"v1"')
    out = tmp_path / "amz"
    out.mkdir()
    (out / "Toys.csv.part").symlink_to("/dev/full")  # every write fails with ENOSPC
    assert main(_cli(out, server.url)) == 2
    err = _one_line_error(capsys)
    assert str(out / "Toys.csv.part") in err and "No space left" in err
    assert not (out / "Toys.csv").exists() and _record(out) == {}


def test_cli_corrupt_checksum_record_names_path(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve_toys(server)
    out = tmp_path / "amz"
    out.mkdir()
    (out / "checksums.json").write_text("{not json")
    assert main(_cli(out, server.url)) == 2
    err = _one_line_error(capsys)
    assert str(out / "checksums.json") in err


def test_killed_extraction_leftovers_are_removed(server: Server, tmp_path: Path) -> None:
    """A downloader killed mid-extraction leaves .NAME.tmp-PID-* (a dead pid) in OUT;
    the next download removes it, and repairs a swap cut between its two renames."""
    server.files["ml-latest-small.zip"] = Remote(_zip({"ml-latest-small/ratings.csv": b"a\n"}))
    out = tmp_path / "ml"
    out.mkdir()
    dead = 2**22 + 4321  # above the default pid_max: no live process has it
    stale = out / f".ml-latest-small.zip.tmp-{dead}-x"
    (stale / "ml-latest-small").mkdir(parents=True)
    (stale / "ml-latest-small" / "big.csv").write_bytes(b"0" * 1000)
    orphan = out / f".ml-latest-small.old-{dead}"  # the old tree, target missing
    orphan.mkdir()
    (orphan / "ratings.csv").write_bytes(b"old\n")
    assert main(_cli(out, server.url, "movielens-latest-small")) == 0
    assert not stale.exists() and not orphan.exists()
    assert (out / "ml-latest-small" / "ratings.csv").read_bytes() == b"a\n"
