"""The ``solidrec`` CLI data commands, atomic writes, and the downloader (local server only)."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from solidrec.cli import main
from solidrec.data import PrepareConfig, load_prepared, prepare
from solidrec.data import prepared as prepared_mod
from solidrec.data.download import ChecksumError, download, fetch, resolve_source
from solidrec.data.io import sha256_file
from solidrec.data.prepared import FORMAT_VERSION


def test_synth_prepare_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "raw"),
                "--users",
                "300",
                "--items",
                "200",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    raw = tmp_path / "raw"
    args = [
        "prepare",
        "--format",
        "generic",
        "--input",
        str(raw / "interactions.csv"),
        "--items",
        str(raw / "items.jsonl"),
        "--out",
        str(tmp_path / "p"),
        "--no-progress",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["stats", str(tmp_path / "p"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["users"] == 300 and s["items"] <= 200 and s["semantic_ids"] >= 2
    ds = load_prepared(tmp_path / "p")
    assert (
        s["interactions"]
        == ds.manifest["counts"]["interactions"]
        == ds.train.rows // 5 + 2 * 300 + 300
    )
    # drifting but coherent interests: consecutive items often share a semantic id
    sem = ds.semantic_id[ds.test.hist]
    same = (sem[:, 1:] == sem[:, :-1]).mean()
    assert same > 0.5


def test_synth_is_seeded(tmp_path: Path) -> None:
    for d in ("a", "b"):
        main(["synth", "--out", str(tmp_path / d), "--users", "50", "--items", "40", "--seed", "1"])
    assert (tmp_path / "a/interactions.csv").read_bytes() == (
        tmp_path / "b/interactions.csv"
    ).read_bytes()
    assert (tmp_path / "a/items.jsonl").read_bytes() == (tmp_path / "b/items.jsonl").read_bytes()


def test_prepare_cli_reports_malformed_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id\nu,i\nu\n")
    assert (
        main(["prepare", "--format", "generic", "--input", str(bad), "--out", str(tmp_path / "p")])
        == 2
    )
    assert f"{bad}, line 3: expected 2 fields, found 1" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert main(["stats", str(tmp_path)]) == 2


def test_crash_while_writing_leaves_no_dataset(
    tmp_path: Path, movielens_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = PrepareConfig(format="movielens", input=movielens_dir, out=tmp_path / "ml")
    calls = {"n": 0}
    real = prepared_mod.write_npz

    def flaky(path, arrays):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(path, arrays)

    monkeypatch.setattr(prepared_mod, "write_npz", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    assert not (tmp_path / "ml").exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(prepared_mod, "write_npz", real)
    assert not prepare(cfg).skipped
    # a damaged array file is detected through the content hash and rebuilt
    with open(tmp_path / "ml" / "test.npz", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    assert not prepare(cfg).skipped
    assert prepare(cfg).skipped


def test_format_version_is_checked(
    tmp_path: Path, movielens_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = PrepareConfig(format="movielens", input=movielens_dir, out=tmp_path / "ml")
    prepare(cfg)
    mpath = tmp_path / "ml" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    for version in (None, FORMAT_VERSION - 1, FORMAT_VERSION + 1):  # - 1: one row per candidate
        manifest["format_version"] = version
        mpath.write_text(json.dumps(manifest))
        with pytest.raises(FileNotFoundError, match=f"reads format_version {FORMAT_VERSION}"):
            load_prepared(tmp_path / "ml")
        assert main(["stats", str(tmp_path / "ml")]) != 0
        assert "--force" in capsys.readouterr().err
        # prepare does not take another version's dataset for up to date
        assert not prepare(cfg).skipped
        manifest = json.loads(mpath.read_text())
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_prepared(tmp_path)


def test_tiny_dataset_is_a_prepared_dataset(tmp_path: Path) -> None:
    from solidrec.testing import make_tiny_dataset

    ds = load_prepared(make_tiny_dataset(tmp_path / "tiny"))
    assert ds.manifest["format_version"] == FORMAT_VERSION and ds.manifest["fingerprint"]
    assert ds.manifest["counts"]["train_rows"] == ds.train.rows == 864
    assert ds.train.item.shape == ds.train.label.shape == (288, 3)  # one row per history
    assert (ds.num_users, ds.num_items, ds.num_semantic, ds.history_len) == (48, 60, 6, 5)


# ------------------------------------------------------------------------ downloader


class _Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                data = server.files.get(self.path.lstrip("/"))
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server({})
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _movielens_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "ml-latest-small/ratings.csv",
            "userId,movieId,rating,timestamp\n1,10,4.0,5\n1,11,3.0,6\n1,12,3.0,7\n2,10,1.0,1\n2,12,2.0,2\n2,13,2.0,3\n",
        )
        zf.writestr(
            "ml-latest-small/movies.csv",
            "movieId,title,genres\n10,A (1990),Drama\n11,B (1991),Comedy|Drama\n"
            "12,C,(no genres listed)\n13,D,Drama\n",
        )
    return buf.getvalue()


def test_download_movielens_extract_and_checksum_record(server: _Server, tmp_path: Path) -> None:
    server.files["ml-latest-small.zip"] = _movielens_zip()
    out = tmp_path / "dl"
    assert (
        main(
            [
                "download",
                "movielens-latest-small",
                "--out",
                str(out),
                "--base-url",
                server.url,
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads((out / "checksums.json").read_text())
    assert record == {"ml-latest-small.zip": sha256_file(out / "ml-latest-small.zip")}
    raw = out / "ml-latest-small"
    assert (raw / "ratings.csv").exists()
    prepare(
        PrepareConfig(format="movielens", input=raw, out=tmp_path / "p", neg_eval=1, neg_train=1)
    )
    assert load_prepared(tmp_path / "p").manifest["counts"]["interactions"] == 6
    # a changed remote file no longer matches the recorded checksum
    (out / "ml-latest-small.zip").unlink()
    server.files["ml-latest-small.zip"] = _movielens_zip() + b"tampered"
    with pytest.raises(ChecksumError, match="sha256"):
        download("movielens-latest-small", out, base_url=server.url)


def test_download_restarts_unverifiable_part(server: _Server, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400
    src = resolve_source("amazon2018:Toys")
    assert src.files == ("categoryFilesSmall/Toys.csv", "metaFiles2/meta_Toys.json.gz")
    server.files.update({src.files[0]: payload, src.files[1]: b"meta"})
    out = tmp_path / "amz"
    out.mkdir()
    # a .part without a recorded validator (NAME.part.json) may be another version of
    # the file: it is downloaded afresh, not resumed (resuming: tests/solidrec/test_download.py)
    (out / "Toys.csv.part").write_bytes(payload[:30000])
    files = download("amazon2018:Toys", out, base_url=server.url)
    assert [f.name for f in files] == ["Toys.csv", "meta_Toys.json.gz"]
    assert (out / "Toys.csv").read_bytes() == payload
    assert server.ranges == [None, None]
    assert not (out / "Toys.csv.part").exists()
    # nor is a .part as long as the remote file taken as complete
    (out / "x.part").write_bytes(b"junk")
    fetch(server.url + "metaFiles2/meta_Toys.json.gz", out / "x")
    assert (out / "x").read_bytes() == b"meta"
    with pytest.raises(ValueError):
        resolve_source("nonsense")


def test_atomic_single_inter_file_is_fingerprinted(tmp_path: Path) -> None:
    """--input D.inter: the fingerprint covers D.inter (it missed it, so an edited file
    was wrongly 'up to date')."""
    from solidrec.data import PrepareConfig
    from solidrec.data.pipeline import _input_files

    (tmp_path / "D.inter").write_text("user_id:token\titem_id:token\n")
    (tmp_path / "D.item").write_text("")
    (tmp_path / "E.inter").write_text("")
    cfg = PrepareConfig(format="atomic", input=tmp_path / "D.inter", out=tmp_path / "out")
    assert [f.name for f in _input_files(cfg)] == ["D.inter", "D.item"]
