"""Download, resume, md5 and safe extraction, against a local HTTP server on 127.0.0.1.

Nothing here contacts any other address: the server is started by the test and the
official URL is replaced by the local one.
"""
import hashlib
import io
import os
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tinyalex.data import cifar, load_dataset
from tinyalex.data.download import download, safe_extract
from tinyalex.data.synthetic import write_cifar_archive
from tinyalex.errors import DataError


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.body``; honours Range; can drop the connection or fail."""

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if srv.fail_status:
            self.send_error(srv.fail_status)
            return
        body, start = srv.body, 0
        wanted = self.headers.get("Range")
        if wanted and srv.honour_range:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if srv.drops > 0:                     # promise everything, send part, hang up
            srv.drops -= 1
            self.wfile.write(rest[:len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.body, srv.ranges, srv.drops, srv.fail_status, srv.honour_range = b"", [], 0, 0, True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/cifar-10-python.tar.gz"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small official-format archive: (bytes, md5, arrays written)."""
    path = tmp_path_factory.mktemp("src") / "cifar-10-python.tar.gz"
    md5, arrays = write_cifar_archive(str(path), per_batch=6, n_test=8)
    return path.read_bytes(), md5, arrays


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_success_then_load(server, archive, tmp_path, monkeypatch):
    body, md5, arrays = archive
    server.body = body
    monkeypatch.setattr(cifar, "CIFAR10_URL", server.url)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5)
    ds = load_dataset(None, data_dir=str(tmp_path), val_size=10)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == body
    assert not (tmp_path / "cifar-10-python.tar.gz.part").exists()
    assert sorted(os.listdir(tmp_path / "cifar-10-batches-py")) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
    assert len(ds.train_y) + len(ds.val_y) == 30 and len(ds.val_y) == 10
    np.testing.assert_array_equal(ds.test_x, arrays["test_x"])
    np.testing.assert_array_equal(ds.test_y, arrays["test_y"])
    assert ds.classes == arrays["classes"]
    # the second call neither downloads nor extracts
    server.body = b"changed"
    again = load_dataset(None, data_dir=str(tmp_path), val_size=10)
    np.testing.assert_array_equal(again.train_x, ds.train_x)
    assert len(server.ranges) == 1


def test_resume_after_connection_dropped_mid_file(server, tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    server.body, server.drops = body, 2
    dest = tmp_path / "file.bin"
    download(server.url, str(dest), _md5(body), progress=False)
    assert dest.read_bytes() == body
    # first request from scratch, then two resumes from where each transfer stopped
    assert server.ranges == [None, "bytes=150000-", "bytes=225000-"]


def test_resume_a_part_file_left_by_an_earlier_run(server, tmp_path):
    body = np.random.default_rng(1).bytes(100_000)
    server.body = body
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(body[:40_000])
    download(server.url, str(dest), _md5(body), progress=False)
    assert dest.read_bytes() == body and server.ranges == ["bytes=40000-"]


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    body = np.random.default_rng(2).bytes(50_000)
    server.body, server.honour_range = body, False
    (tmp_path / "f.part").write_bytes(b"x" * 1000)      # stale bytes must not be kept
    download(server.url, str(tmp_path / "f"), _md5(body), progress=False)
    assert (tmp_path / "f").read_bytes() == body


def test_gives_up_after_retries_and_keeps_the_part_file(server, tmp_path):
    body = np.random.default_rng(3).bytes(80_000)
    server.body, server.drops = body, 10
    with pytest.raises(DataError, match="run again to resume") as e:
        download(server.url, str(tmp_path / "f"), _md5(body), retries=1, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "f").exists()
    assert 0 < (tmp_path / "f.part").stat().st_size < len(body)


def test_md5_mismatch_removes_the_partial_file(server, tmp_path):
    server.body = b"not the archive" * 1000
    with pytest.raises(DataError, match="md5 mismatch.*removed the partial file"):
        download(server.url, str(tmp_path / "f"), "0" * 32, progress=False)
    assert os.listdir(tmp_path) == []


def test_server_error(server, tmp_path):
    server.fail_status = 500
    with pytest.raises(DataError, match="HTTP 500.*by hand"):
        download(server.url, str(tmp_path / "f"), "0" * 32, progress=False)
    assert os.listdir(tmp_path) == []


def test_no_network_says_where_to_put_the_archive(tmp_path, monkeypatch):
    with socket.socket() as s:                 # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cifar, "CIFAR10_URL", f"http://127.0.0.1:{port}/x.tar.gz")
    with pytest.raises(DataError) as e:
        load_dataset(None, data_dir=str(tmp_path))
    message = str(e.value)
    assert "no network" in message and "by hand" in message
    assert str(tmp_path / "cifar-10-python.tar.gz") in message
    assert os.listdir(tmp_path) == []


def test_download_false_and_no_archive(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found.*put it at"):
        load_dataset(None, data_dir=str(tmp_path), download=False)


def test_archive_put_there_by_hand_is_md5_checked(tmp_path, archive):
    body, md5, _ = archive
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(body[:-100])    # truncated copy
    with pytest.raises(DataError, match="has md5 .* expected c58f3010"):
        load_dataset(None, data_dir=str(tmp_path), download=False)


# --- safe extraction -------------------------------------------------------------------

def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"") -> str:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("fine/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return str(path)


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize("member, reason", [
    (_member("/tmp/tinyalex-evil"), "absolute path"),
    (_member("fine/../../tinyalex-evil"), r"\.\."),
    (_member("fine/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (_member("fine/hard", tarfile.LNKTYPE, "fine/ok.txt"), "is a link"),
    (_member("fine/dev", tarfile.CHRTYPE), "not a regular file"),
])
def test_safe_extract_refuses_dangerous_members(tmp_path, member, reason):
    archive = _tar_with(tmp_path, member, b"evil")
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=reason):
        safe_extract(archive, str(dest))
    assert os.listdir(dest) == []              # not even the harmless member
    assert not (tmp_path / "tinyalex-evil").exists()


def test_safe_extract_ok(tmp_path, archive):
    body, _, _ = archive
    (tmp_path / "a.tar.gz").write_bytes(body)
    assert safe_extract(str(tmp_path / "a.tar.gz"), str(tmp_path / "out")) == [
        "cifar-10-batches-py"]
    assert sorted(os.listdir(tmp_path / "out")) == ["cifar-10-batches-py"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_archive(tmp_path, archive, damage):
    body, _, _ = archive
    data = body[:len(body) // 2] if damage == "truncated" else b"\x1f\x8b" + bytes(5000)
    (tmp_path / "a.tar.gz").write_bytes(data)
    with pytest.raises(DataError, match="truncated or corrupt"):
        safe_extract(str(tmp_path / "a.tar.gz"), str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []
