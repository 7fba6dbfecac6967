"""Tests for stages.sources.fetch: downloads against a local HTTP server, and hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import stat
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.core.errors import DataError
from stages.sources.fetch import download, extract, verify

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


# ------------------------------------------------------------------ HTTP test server


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: a list of actions, one per request (the last repeats)."""

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            n = server.hits[self.path]
            server.hits[self.path] += 1
        plan = server.routes.get(self.path, [("status", 404)])
        action = plan[min(n, len(plan) - 1)]
        kind = action[0]
        if kind == "ok":
            body = action[1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "nolength":  # no Content-Length: the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(action[1])
            self.close_connection = True
        elif kind == "encoded":  # a server that labels a .gz body as gzip-encoded (the bytes stay the file's)
            body = action[1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            self.wfile.write(body)
        elif kind == "status":
            self.send_error(action[1])
        elif kind == "short":  # promise more bytes than we send, then hang up
            body, claimed = action[1], action[2]
            self.send_response(200)
            self.send_header("Content-Length", str(claimed))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
        elif kind == "slow":
            time.sleep(action[1])
            self.send_error(503)
        else:  # pragma: no cover
            raise AssertionError(kind)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that timed out and hung up is fine
            super().handle_error(request, client_address)


class _Server:
    def __init__(self) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.hits = Counter()
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def route(self, path: str, *actions: tuple) -> str:
        self.httpd.routes[path] = list(actions)
        return self.url(path)

    def hits(self, path: str) -> int:
        return self.httpd.hits[path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


FAST = {"backoff": 0.01, "timeout": 5.0, "progress": False}


# ------------------------------------------------------------------------- download


def test_download_ok_with_checksums(server, tmp_path, capsys):
    url = server.route("/d/x.tar.gz", ("ok", PAYLOAD))
    dest = tmp_path / "raw" / "x.tar.gz"
    out = download(url, dest, md5=MD5, sha256=SHA256.upper(), size=len(PAYLOAD), backoff=0.01)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["x.tar.gz"]
    err = capsys.readouterr().err  # not a terminal: no bar, one summary line
    assert err.startswith("x.tar.gz: 0.1 / 0.1 MB (100%) in ") and err.count("\n") == 1 and "\r" not in err


class _Terminal(io.StringIO):
    """A stderr that claims to be a terminal, so tqdm (``disable=None``) draws its bar."""

    def isatty(self) -> bool:
        return True


def test_download_bar_on_a_terminal_takes_its_total_from_size(server, tmp_path, monkeypatch):
    url = server.route("/bar.bin", ("nolength", PAYLOAD))
    monkeypatch.setattr(sys, "stderr", _Terminal())
    download(url, tmp_path / "bar.bin", size=len(PAYLOAD), backoff=0.01)
    err = sys.stderr.getvalue()
    assert "bar.bin: 100%" in err and "102k/102k" in err and "B/s" in err  # bytes, rate; total = size
    assert "MB (100%)" not in err  # the bar, not the log line


def test_download_without_progress_prints_nothing(server, tmp_path, capsys):
    url = server.route("/quiet.bin", ("ok", PAYLOAD))
    download(url, tmp_path / "quiet.bin", **FAST)
    assert capsys.readouterr().err == ""


def test_download_checksum_mismatch_removes_file(server, tmp_path):
    url = server.route("/x.bin", ("ok", PAYLOAD))
    dest = tmp_path / "x.bin"
    with pytest.raises(DataError) as err:
        download(url, dest, md5="0" * 32, **FAST)
    msg = str(err.value)
    assert msg == f"checksum mismatch for {dest}: expected md5 {'0' * 32}, got {MD5}"
    assert not dest.exists()
    assert _leftovers(tmp_path) == []
    assert server.hits("/x.bin") == 1  # a bad checksum is not retried


def test_download_size_mismatch(server, tmp_path):
    url = server.route("/x.bin", ("ok", PAYLOAD))
    with pytest.raises(DataError, match="size mismatch .*expected 5 bytes"):
        download(url, tmp_path / "x.bin", size=5, **FAST)
    assert _leftovers(tmp_path) == []


def test_download_refuses_a_body_larger_than_the_expected_size(server, tmp_path):
    url = server.route("/big.bin", ("nolength", PAYLOAD))  # no Content-Length: found out while it streams
    with pytest.raises(DataError, match=r"size mismatch for .*big\.bin: expected 1000 bytes, got more"):
        download(url, tmp_path / "big.bin", size=1000, **FAST)
    assert server.hits("/big.bin") == 1  # a wrong file: not retried
    assert _leftovers(tmp_path) == []


def test_download_keeps_the_bytes_a_server_labels_gzip_encoded(server, tmp_path):
    body = gzip.compress(PAYLOAD, mtime=0)
    url = server.route("/x.tar.gz", ("encoded", body))
    dest = download(url, tmp_path / "x.tar.gz", sha256=hashlib.sha256(body).hexdigest(), size=len(body), **FAST)
    assert dest.read_bytes() == body  # not decoded: the checksums are of the file as published


def test_download_retries_after_500s(server, tmp_path):
    url = server.route("/x.bin", ("status", 500), ("status", 502), ("ok", PAYLOAD))
    dest = download(url, tmp_path / "x.bin", sha256=SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits("/x.bin") == 3


def test_download_gives_up_after_retries(server, tmp_path):
    url = server.route("/x.bin", ("status", 503))
    with pytest.raises(DataError) as err:
        download(url, tmp_path / "x.bin", retries=3, **FAST)
    msg = str(err.value)
    assert f"cannot download {url} after 3 attempts: HTTP 503" in msg
    assert "set data.mirror to a folder holding x.bin" in msg
    assert "\n" not in msg
    assert server.hits("/x.bin") == 3
    assert _leftovers(tmp_path) == []


def test_download_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data/x.tar.gz"
    with pytest.raises(DataError) as err:
        download(url, tmp_path / "x.tar.gz", retries=2, **FAST)
    msg = str(err.value)
    assert "after 2 attempts" in msg and "data.mirror" in msg and "x.tar.gz" in msg
    assert _leftovers(tmp_path) == []


def test_download_truncated_body_retried_then_ok(server, tmp_path):
    url = server.route("/x.bin", ("short", PAYLOAD[:1000], len(PAYLOAD)), ("ok", PAYLOAD))
    dest = download(url, tmp_path / "x.bin", md5=MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits("/x.bin") == 2


def test_download_truncated_body_refused(server, tmp_path):
    url = server.route("/x.bin", ("short", PAYLOAD[:1000], len(PAYLOAD)))
    dest = tmp_path / "x.bin"
    with pytest.raises(DataError, match=r"after 2 attempts: incomplete read: got 1000 of 102400 bytes"):
        download(url, dest, retries=2, **FAST)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_download_timeout_retried(server, tmp_path):
    url = server.route("/x.bin", ("slow", 1.0), ("ok", PAYLOAD))
    dest = download(url, tmp_path / "x.bin", md5=MD5, backoff=0.01, timeout=0.2, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_404_not_retried(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(DataError) as err:
        download(url, tmp_path / "missing.bin", **FAST)
    assert "HTTP 404" in str(err.value) and "data.mirror" in str(err.value)
    assert server.hits("/missing.bin") == 1
    assert _leftovers(tmp_path) == []


def test_download_from_mirror(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.tar.gz").write_bytes(PAYLOAD)
    url = server.route("/a/b/x.tar.gz", ("ok", b"wrong"))
    dest = download(url, tmp_path / "raw" / "x.tar.gz", md5=MD5, mirror=mirror, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits("/a/b/x.tar.gz") == 0


def test_download_mirror_miss_and_bad_mirror_file(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    url = server.route("/x.tar.gz", ("ok", PAYLOAD))
    with pytest.raises(DataError, match=f"mirror file {mirror / 'x.tar.gz'} not found"):
        download(url, tmp_path / "raw" / "x.tar.gz", mirror=mirror, **FAST)
    (mirror / "x.tar.gz").write_bytes(b"corrupt")
    with pytest.raises(DataError, match=f"checksum mismatch for {mirror / 'x.tar.gz'}: expected md5"):
        download(url, tmp_path / "raw" / "x.tar.gz", md5=MD5, mirror=mirror, **FAST)
    assert server.hits("/x.tar.gz") == 0
    assert _leftovers(tmp_path / "raw") == []


def test_download_existing_verified_file_kept(server, tmp_path):
    url = server.route("/x.bin", ("ok", PAYLOAD))
    dest = tmp_path / "x.bin"
    dest.write_bytes(PAYLOAD)
    assert download(url, dest, md5=MD5, sha256=SHA256, **FAST) == dest
    assert server.hits("/x.bin") == 0
    # A present file that fails verification is fetched again.
    dest.write_bytes(b"stale")
    download(url, dest, md5=MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits("/x.bin") == 1


def test_verify(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(PAYLOAD)
    verify(f, md5=MD5, sha256=SHA256, size=len(PAYLOAD))
    with pytest.raises(DataError, match="expected sha256 0+, got " + SHA256):
        verify(f, sha256="0" * 64)
    with pytest.raises(DataError, match="not found"):
        verify(tmp_path / "nope", md5=MD5)


# -------------------------------------------------------------------------- archives


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        (_info("images", tarfile.DIRTYPE), None),
        (_info("images/a.jpg"), b"A" * 100),
        (_info("./annotations/list.txt"), b"a 1\n"),
    ]


def _assert_failed_cleanly(work: Path, dest: Path, allowed: set[str]) -> None:
    assert not dest.exists()
    assert set(_leftovers(work)) <= allowed
    assert _leftovers(dest.parent) == [] or dest.parent == work


@pytest.mark.parametrize("mode", ["w:gz", "w", "w:bz2", "w:xz"])
def test_extract_tar(tmp_path, mode):
    # Named .tar.gz whatever the compression: Oxford pets ships plain tar under that name.
    archive = _tar(tmp_path / "images.tar.gz", _good_members(), mode)
    dest = extract(archive, tmp_path / "out" / "images")
    assert (dest / "images" / "a.jpg").read_bytes() == b"A" * 100
    assert (dest / "annotations" / "list.txt").read_text() == "a 1\n"
    assert _leftovers(tmp_path / "out") == ["images"]


def test_extract_tar_decompresses_the_archive_once(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "a.tar.gz", _random_members())

    def rewind(self) -> None:
        raise AssertionError("the archive was decompressed a second time")

    monkeypatch.setattr(gzip._GzipReader, "_rewind", rewind)  # a backward seek in a gzip stream starts over
    dest = extract(archive, tmp_path / "out")
    assert sorted(p.name for p in dest.iterdir()) == [f"f{i}.bin" for i in range(4)]


def test_extract_zip(tmp_path):
    archive = tmp_path / "data.bin"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("d/", b"")
        zf.writestr("d/x.txt", b"hello" * 100)
        zf.writestr("y.txt", b"y")
    dest = extract(archive, tmp_path / "out")
    assert (dest / "d" / "x.txt").read_bytes() == b"hello" * 100
    assert (dest / "y.txt").read_bytes() == b"y"


def test_extract_single_gzip(tmp_path):
    raw = b"\x00\x00\x08\x03" + bytes(range(200))
    archive = tmp_path / "train-images-idx3-ubyte.gz"
    archive.write_bytes(gzip.compress(raw))
    dest = extract(archive, tmp_path / "mnist")
    assert _leftovers(dest) == ["train-images-idx3-ubyte"]
    assert (dest / "train-images-idx3-ubyte").read_bytes() == raw


def test_extract_bars_count_bytes_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    tar = _tar(tmp_path / "images.tar.gz", _good_members())
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("x.txt", b"x" * 300)
    (tmp_path / "one.gz").write_bytes(gzip.compress(b"y" * 50))
    for archive in (tar, tmp_path / "data.zip", tmp_path / "one.gz"):
        extract(archive, tmp_path / "quiet" / archive.name)
    assert capsys.readouterr().err == ""  # not a terminal: nothing drawn
    monkeypatch.setattr(sys, "stderr", _Terminal())
    for archive in (tar, tmp_path / "data.zip", tmp_path / "one.gz"):
        extract(archive, tmp_path / "shown" / archive.name)
    err = sys.stderr.getvalue()
    packed = tar.stat().st_size  # the archive's own bytes: one pass does not know the members' total up front
    assert "extract images.tar.gz: 100%" in err and f"{packed}/{packed}" in err
    assert "extract data.zip: 100%" in err and "300/300" in err
    assert "extract one.gz: 50.0B" in err  # single gzip: no declared size, a count without percentage


def test_extract_replaces_old_dest_only_when_complete(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    bad = tmp_path / "bad.tar"
    _tar(bad, [(_info("ok.txt"), b"x"), (_info("../evil"), b"x")], "w")
    with pytest.raises(DataError):
        extract(bad, dest)
    assert _leftovers(dest) == ["old.txt"]
    extract(_tar(tmp_path / "good.tar.gz", _good_members()), dest)
    assert _leftovers(dest) == ["annotations", "images"]


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (_info("../evil"), "'..'"),
        (_info("sub/../../evil"), "'..'"),
        (_info("ABSOLUTE"), "absolute path"),  # name filled in below
        (
            _info("link", tarfile.SYMTYPE, "/etc/passwd"),
            "symbolic link to '/etc/passwd'",
        ),
        (_info("rel_link", tarfile.SYMTYPE, "../../evil"), "symbolic link"),
        (_info("hard", tarfile.LNKTYPE, "ok.txt"), "hard link to 'ok.txt'"),
        (_info("null", tarfile.CHRTYPE), "is a special file"),  # tarfile.data_filter's refusal, as zip's
        (_info("disk", tarfile.BLKTYPE), "is a special file"),
        (_info("pipe", tarfile.FIFOTYPE), "is a special file"),
        (_info("odd", b"V"), "is a special file"),  # a type tarfile does not know (a GNU volume header)
    ],
)
def test_extract_refuses_hostile_tar_members(tmp_path, member, needle):
    work = tmp_path / "work"
    work.mkdir()
    if member.name == "ABSOLUTE":
        member.name = str(tmp_path / "abs_evil")
    data = b"evil" if member.isreg() else None
    archive = _tar(work / "a.tar.gz", [(_info("ok.txt"), b"fine"), (member, data)])
    dest = work / "out" / "dest"
    with pytest.raises(DataError) as err:
        extract(archive, dest)
    msg = str(err.value)
    assert repr(member.name) in msg and str(archive) in msg and needle in msg
    _assert_failed_cleanly(work, dest, {"a.tar.gz", "out"})
    assert not (tmp_path / "evil").exists() and not (tmp_path / "abs_evil").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize(
    ("name", "mode", "needle"),
    [
        ("../evil", 0o100644, "'..'"),
        ("/abs_evil", 0o100644, "absolute path"),
        ("link", stat.S_IFLNK | 0o777, "symbolic link"),
        ("dev", stat.S_IFCHR | 0o644, "special file"),
    ],
)
def test_extract_refuses_hostile_zip_members(tmp_path, name, mode, needle):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, b"/etc/passwd")
    dest = work / "out" / "dest"
    with pytest.raises(DataError) as err:
        extract(archive, dest)
    assert repr(name) in str(err.value) and needle in str(err.value)
    _assert_failed_cleanly(work, dest, {"a.zip", "out"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_extract_gzip_bomb(tmp_path):
    archive = tmp_path / "bomb.gz"
    with gzip.open(archive, "wb", compresslevel=1) as fh:
        chunk = bytes(1 << 20)
        for _ in range(50):
            fh.write(chunk)
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=r"bomb\.gz.*more than 1048576 bytes"):
        extract(archive, dest, max_bytes=1 << 20)
    _assert_failed_cleanly(tmp_path, dest, {"bomb.gz"})


def test_extract_tar_declared_size_over_limit(tmp_path):
    archive = _tar(
        tmp_path / "big.tar.gz",
        [(_info("small"), b"x"), (_info("huge.bin"), bytes(2 << 20))],
    )
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=r"'huge\.bin'.*declared sizes exceed 1048576"):
        extract(archive, dest, max_bytes=1 << 20)
    _assert_failed_cleanly(tmp_path, dest, {"big.tar.gz"})


def test_extract_zip_declared_size_over_limit(tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge.bin", bytes(2 << 20))
    with pytest.raises(DataError, match=r"'huge\.bin'.*declared sizes exceed"):
        extract(archive, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "out").exists()


def _zeros_gzip(path: Path, nbytes: int) -> Path:
    """A gzip of ``nbytes`` zeros (about 1000:1), written in pieces: the test never holds it unpacked."""
    with gzip.open(path, "wb", compresslevel=9) as fh:
        for _ in range(nbytes >> 20):
            fh.write(bytes(1 << 20))
    return path


def test_extract_gzip_bomb_stops_at_the_ratio_limit_well_below_max_bytes(tmp_path):
    archive = _zeros_gzip(tmp_path / "train-images-idx3-ubyte.gz", 16 << 20)  # ~16 KB on disk
    size = archive.stat().st_size
    dest = tmp_path / "out"
    # max_bytes stays at the 8 GiB default of params.yaml; only the floor is lowered for a small bomb
    with pytest.raises(DataError) as err:
        extract(archive, dest, max_bytes=8 << 30, ratio_floor=1 << 18)
    msg = str(err.value)
    assert f"refusing member 'train-images-idx3-ubyte' of {archive}" in msg
    assert f"more than {50 * size} bytes uncompressed (50 times the archive's {size} bytes" in msg
    assert "\n" not in msg
    _assert_failed_cleanly(tmp_path, dest, {archive.name})


def test_extract_small_archive_gets_the_floor_and_real_ratios_pass(tmp_path):
    archive = _zeros_gzip(tmp_path / "small.gz", 3 << 20)
    with pytest.raises(DataError, match=r"more than 2097152 bytes .*the floor for a small archive"):
        extract(archive, tmp_path / "out", ratio_floor=2 << 20)
    assert not (tmp_path / "out").exists()
    assert (extract(archive, tmp_path / "out", ratio_floor=4 << 20) / "small").stat().st_size == 3 << 20
    # IDX-like data (~2-8x) is far below the ratio limit even without the floor
    rng = __import__("random").Random(0)
    idx = bytes(rng.choice(b"\x00\x00\x00\x00\x00\x10\x80\xff") for _ in range(1 << 20))
    (tmp_path / "idx.gz").write_bytes(gzip.compress(idx))
    assert (extract(tmp_path / "idx.gz", tmp_path / "idx", ratio_floor=0) / "idx").read_bytes() == idx


def test_extract_tar_and_zip_bombs_refused_from_their_declared_sizes(tmp_path):
    tar = tmp_path / "bomb.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        info = _info("zeros.bin")
        info.size = 16 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    zarchive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zarchive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(16 << 20))
    for archive in (tar, zarchive):
        with pytest.raises(DataError, match=rf"'zeros\.bin' of {archive}: declared sizes exceed .* times the archive"):
            extract(archive, tmp_path / "out", ratio_floor=1 << 18)
        assert not (tmp_path / "out").exists()


def test_extract_known_unpacked_size_is_the_tightest_limit(tmp_path):
    archive = tmp_path / "t10k-labels-idx1-ubyte.gz"
    archive.write_bytes(gzip.compress(bytes(10_008 + 1)))  # one byte more than the official file
    with pytest.raises(DataError, match=r"more than 10008 bytes .*the known unpacked size of t10k-labels"):
        extract(archive, tmp_path / "out", expected_bytes=10_008)
    assert extract(archive, tmp_path / "out", expected_bytes=10_009).is_dir()


def test_extract_stage_knows_the_official_sizes_of_params_yaml():
    from stages.core import config
    from stages.extract import OFFICIAL_UNPACKED_BYTES

    official = {(f.name, f.size) for source in config.load().sources.values() for f in source.files}
    names = {name for name, _ in official}
    for name, size in OFFICIAL_UNPACKED_BYTES:
        assert name in names and ((name, size) in official or (name, None) in official), name


def test_extract_too_many_members(tmp_path):
    members = [(_info(f"f{i}"), b"x") for i in range(5)]
    archive = _tar(tmp_path / "many.tar", members, "w")
    with pytest.raises(DataError, match="more than 3 members"):
        extract(archive, tmp_path / "out", max_members=3)
    assert not (tmp_path / "out").exists()
    zarchive = tmp_path / "many.zip"
    with zipfile.ZipFile(zarchive, "w") as zf:
        for i in range(5):
            zf.writestr(f"f{i}", b"x")
    with pytest.raises(DataError, match="more than 3"):
        extract(zarchive, tmp_path / "out", max_members=3)
    assert extract(archive, tmp_path / "out", max_members=5).is_dir()


def _random_members(n: int = 4, size: int = 50_000) -> list[tuple[tarfile.TarInfo, bytes]]:
    rng = __import__("random").Random(0)
    return [(_info(f"f{i}.bin"), rng.randbytes(size)) for i in range(n)]


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_extract_truncated_tar(tmp_path, mode):
    full = _tar(tmp_path / "full.tar", _random_members(), mode).read_bytes()
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(full[: len(full) // 2])
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=f"corrupt or truncated archive {archive}"):
        extract(archive, dest)
    _assert_failed_cleanly(tmp_path, dest, {"full.tar", "cut.tar.gz"})


def test_extract_tar_gz_with_a_changed_byte_fails_its_crc(tmp_path):
    data = bytearray(_tar(tmp_path / "full.tar.gz", _random_members()).read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a member's (incompressible) data: only the gzip CRC tells
    archive = tmp_path / "flipped.tar.gz"
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"corrupt or truncated archive {archive}: CRC check failed"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_tar_cut_at_member_boundary(tmp_path):
    full = _tar(tmp_path / "full.tar", [(_info("a"), b"x" * 512), (_info("b"), b"y" * 512)], "w").read_bytes()
    archive = tmp_path / "cut.tar"
    archive.write_bytes(full[:2048])  # two complete members, no end-of-archive blocks
    with pytest.raises(DataError, match="corrupt or truncated archive .*end-of-archive"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_truncated_zip_and_gzip(tmp_path):
    zarchive = tmp_path / "cut.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.bin", os.urandom(20_000))
    zarchive.write_bytes(buf.getvalue()[:-30])
    with pytest.raises(DataError, match=f"{zarchive}"):
        extract(zarchive, tmp_path / "out")
    garchive = tmp_path / "cut.gz"
    garchive.write_bytes(gzip.compress(os.urandom(20_000))[:10_000])
    with pytest.raises(DataError, match=f"corrupt or truncated archive {garchive}"):
        extract(garchive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_random_bytes_and_missing(tmp_path):
    archive = tmp_path / "noise.tar.gz"
    archive.write_bytes(__import__("random").Random(1).randbytes(5000))
    with pytest.raises(DataError, match=f"{archive} is not a tar, zip or gzip archive"):
        extract(archive, tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        extract(tmp_path / "nope.tar", tmp_path / "out")
    assert _leftovers(tmp_path) == ["noise.tar.gz"]


# ----------------------------------------------------------------------- fuzzing


def _seed_archives() -> dict[str, bytes]:
    seeds = {}
    for mode in ("w:gz", "w"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tf:
            for info, data in _good_members():
                if data is not None:
                    info.size = len(data)
                tf.addfile(info, io.BytesIO(data) if data is not None else None)
        seeds[mode] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("d/", b"")
        zf.writestr("d/x.txt", b"hello" * 50)
    seeds["zip"] = buf.getvalue()
    seeds["gz"] = gzip.compress(b"idx" * 100)
    return seeds


SEEDS = _seed_archives()


@st.composite
def _mutated(draw) -> bytes:
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=_mutated())
def test_extract_fuzz_only_dataerror(blob):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        archive = work / "a.tar.gz"
        archive.write_bytes(blob)
        dest = work / "out" / "dest"
        try:
            extract(archive, dest, max_bytes=10 << 20, max_members=100)
        except DataError as e:
            assert "\n" not in str(e)
            assert not dest.exists()
            assert _leftovers(work / "out") == []
        else:
            assert dest.is_dir()
            assert _leftovers(work / "out") == ["dest"]
            for p in dest.rglob("*"):
                assert not p.is_symlink()
                assert os.path.realpath(p).startswith(os.path.realpath(dest) + os.sep)
        assert _leftovers(work) == ["a.tar.gz", "out"] or _leftovers(work) == ["a.tar.gz"]
        assert _leftovers(Path(tmp)) == ["work"]


def test_download_tries_each_url_in_order(server, tmp_path):
    from stages.core import config
    from stages.download import download_file

    params = config.load()
    params.data.download_retries = 1
    dead, alive = server.route("/gone/x.bin", ("status", 404)), server.route("/mirror/x.bin", ("ok", PAYLOAD))
    f = config.RemoteFile(url=[dead, alive], sha256=SHA256, size=len(PAYLOAD))
    download_file(params, f, tmp_path, mirror=None)
    assert (tmp_path / "x.bin").read_bytes() == PAYLOAD
    assert (server.hits("/gone/x.bin"), server.hits("/mirror/x.bin")) == (1, 1)
    f = config.RemoteFile(url=[dead, server.route("/also-gone/x.bin", ("status", 404))])
    with pytest.raises(DataError, match="x.bin: every URL failed; last: cannot download .*also-gone"):
        download_file(params, f, tmp_path / "other", mirror=None)
