"""Downloads against a local HTTP server: .part + resume with Range/If-Range, verification of every cached file
(size, SHA-256, announced length, structure), healing of damaged cache entries, a cache keyed by source, one
download at a time across processes, and offline errors that say where to put the file."""

import hashlib
import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from esmfold_lite.cli import main
from esmfold_lite.weights import download, registry
from esmfold_lite.weights.download import (
    ChecksumError,
    DownloadError,
    cache_dir,
    checkpoint_path,
    download_file,
    fetch,
    url_cache_path,
)


def checkpoint_bytes(seed: int) -> bytes:
    """A small real ``torch.save`` zip (~256 kB)."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.randn(64_000, generator=torch.Generator().manual_seed(seed))}}, buffer)
    return buffer.getvalue()


PAYLOAD = checkpoint_bytes(0)
OTHER = checkpoint_bytes(1)  # served under /b/: same file name, another source
SPLICED = PAYLOAD[:100_000] + OTHER[100_000:150_000] + PAYLOAD[150_000:]  # same length, another file's bytes inside


class Handler(BaseHTTPRequestHandler):
    """Serves checkpoints, honouring ``Range: bytes=N-`` and ``If-Range``; records every request.

    Per path: ``/b/...`` OTHER, ``oversize.pt`` PAYLOAD + 4 bytes, ``spliced.pt`` SPLICED, ``missing.pt`` 404, else
    PAYLOAD (``Handler.payload`` when set). ``no_length`` omits Content-Length; ``drop_after`` cuts the body after
    that many bytes; ``release`` (an Event) holds the body until it is set, ``started`` is set once a body is due.
    """

    requests: list = []
    payload: bytes | None = None
    no_length = False
    drop_after: int | None = None
    release: threading.Event | None = None
    started = threading.Event()

    def content(self) -> bytes | None:
        if self.path.endswith("/missing.pt"):
            return None
        if self.path.startswith("/b/"):
            return OTHER
        if self.path.endswith("/oversize.pt"):
            return PAYLOAD + b"junk"
        if self.path.endswith("/spliced.pt"):
            return SPLICED
        return self.payload or PAYLOAD

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        data = self.content()
        if data is None:
            self.send_error(404)
            return
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and self.headers.get("If-Range") not in (None, etag):
            match = None  # the file changed since the partial download: send all of it
        start = int(match.group(1)) if match else 0
        if match and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if match else 200)
        self.send_header("ETag", etag)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if not self.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        type(self).started.set()
        if self.release is not None:
            self.release.wait(timeout=30)
        self.wfile.write(body if self.drop_after is None else body[: self.drop_after])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.requests, Handler.payload, Handler.no_length, Handler.drop_after = [], None, False, None
    Handler.release, Handler.started = None, threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    if Handler.release is not None:
        Handler.release.set()
    httpd.shutdown()
    httpd.server_close()


def ranges():
    return [requested for _, requested, _ in Handler.requests]


def record_of(path):
    return json.loads(path.with_name(path.name + ".download.json").read_text())


def test_download_writes_part_then_renames_and_records(server, tmp_path):
    dest = tmp_path / "model.pt"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert download_file(f"{server}/model.pt", dest, sha256=sha, size_bytes=len(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.pt.part").exists()
    record = record_of(dest)
    assert record["url"] == f"{server}/model.pt" and record["size"] == len(PAYLOAD) and record["sha256"] == sha
    assert ranges() == [None]
    download_file(f"{server}/model.pt", dest, progress=False)  # cached and verified: no request
    assert ranges() == [None]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "model.pt"
    Handler.drop_after = 1000  # the connection drops after 1000 bytes of the announced length
    with pytest.raises(DownloadError, match="again resumes it"):
        download_file(f"{server}/model.pt", dest, progress=False)
    assert (tmp_path / "model.pt.part").read_bytes() == PAYLOAD[:1000]
    assert not dest.exists()
    Handler.drop_after = None
    download_file(f"{server}/model.pt", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert ranges() == [None, "bytes=1000-"]
    assert Handler.requests[1][2] is not None  # If-Range: a changed file is sent whole, never spliced
    assert dest.read_bytes() == PAYLOAD


def test_resume_after_the_file_changed_restarts_instead_of_splicing(server, tmp_path):
    dest = tmp_path / "model.pt"
    Handler.drop_after = 100_000
    with pytest.raises(DownloadError, match="again resumes it"):
        download_file(f"{server}/model.pt", dest, progress=False)
    Handler.drop_after, Handler.payload = None, OTHER  # a new version appears on the server
    download_file(f"{server}/model.pt", dest, progress=False)
    assert dest.read_bytes() == OTHER


def test_part_from_another_url_is_not_resumed(server, tmp_path):
    dest = tmp_path / "model.pt"
    Handler.drop_after = 100_000
    with pytest.raises(DownloadError):
        download_file(f"{server}/b/model.pt", dest, progress=False)
    Handler.drop_after = None
    download_file(f"{server}/a/model.pt", dest, progress=False)
    assert ranges() == [None, None]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_download(server, tmp_path):
    dest = tmp_path / "model.pt"
    url = f"{server}/model.pt"
    (tmp_path / "model.pt.part").write_bytes(PAYLOAD)  # a run killed between the last byte and the rename
    (tmp_path / "model.pt.part.download.json").write_text(json.dumps({"url": url, "total": len(PAYLOAD)}))
    download_file(url, dest, progress=False)
    assert ranges() == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_cut_without_content_length_is_never_kept_and_next_call_heals(server, tmp_path):
    dest = tmp_path / "model.pt"
    Handler.no_length, Handler.drop_after = True, 200_000  # the server closes early and never said the length
    with pytest.raises(ChecksumError, match="did not say its length.*no end record"):
        download_file(f"{server}/model.pt", dest, progress=False)
    assert not dest.exists() and not (tmp_path / "model.pt.part").exists()
    Handler.drop_after = None  # the whole file, still without Content-Length: the structure shows it is complete
    assert download_file(f"{server}/model.pt", dest, progress=False).read_bytes() == PAYLOAD


@pytest.mark.parametrize("no_length", [False, True], ids=["with-length", "no-length"])
def test_oversize_and_spliced_files_are_rejected(server, tmp_path, no_length):
    Handler.no_length = no_length
    with pytest.raises(ChecksumError, match=r"end record is \+4 bytes from the end"):
        download_file(f"{server}/oversize.pt", tmp_path / "oversize.pt", progress=False)
    with pytest.raises(ChecksumError, match="CRC"):
        download_file(f"{server}/spliced.pt", tmp_path / "spliced.pt", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_known_size_mismatch_stops_before_downloading(server, tmp_path):
    with pytest.raises(ChecksumError, match=f"has {len(PAYLOAD) + 4} bytes, but the checkpoint has {len(PAYLOAD)}"):
        download_file(f"{server}/oversize.pt", tmp_path / "model.pt", size_bytes=len(PAYLOAD), progress=False)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "model.pt.part").exists()


def test_checksum_mismatch_deletes_the_file(server, tmp_path):
    dest = tmp_path / "model.pt"
    with pytest.raises(ChecksumError, match="SHA-256 .*expected 0000") as error:
        download_file(f"{server}/model.pt", dest, sha256="0" * 64, progress=False)
    assert str(dest) in str(error.value)
    assert not dest.exists() and not (tmp_path / "model.pt.part").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:5000]),  # truncated
        lambda path: path.write_bytes(path.read_bytes()[:150_000] + b"\0" * 1000 + path.read_bytes()[151_000:]),
        lambda path: path.write_bytes(SPLICED),  # same size, tensor bytes of another file
        lambda path: path.with_name(path.name + ".download.json").unlink() or path.write_bytes(PAYLOAD[:-10]),
    ],
    ids=["truncated", "zeroed-bytes", "spliced", "cut-without-record"],
)
def test_damaged_cached_file_is_downloaded_again(server, tmp_path, caplog, damage):
    dest = tmp_path / "model.pt"
    download_file(f"{server}/model.pt", dest, progress=False)
    damage(dest)
    assert download.cached_problem(dest, f"{server}/model.pt") is not None
    with caplog.at_level(logging.WARNING, logger="esmfold_lite.weights.download"):
        assert download_file(f"{server}/model.pt", dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert len(Handler.requests) == 2
    assert re.search(r"model.pt is not usable \(.+\); downloading it again", caplog.text)


def test_touched_cached_file_is_rehashed_not_downloaded(server, tmp_path):
    dest = tmp_path / "model.pt"
    download_file(f"{server}/model.pt", dest, progress=False)
    dest.write_bytes(dest.read_bytes())  # same contents, new modification time
    download_file(f"{server}/model.pt", dest, progress=False)
    assert len(Handler.requests) == 1
    assert record_of(dest)["mtime_ns"] == dest.stat().st_mtime_ns


def test_same_file_name_from_two_urls_gives_two_cache_entries(server, tmp_path):
    first = fetch(f"{server}/a/model.pt", tmp_path, progress=False)
    second = fetch(f"{server}/b/model.pt", tmp_path, progress=False)
    assert first.name == second.name == "model.pt" and first != second
    assert first.read_bytes() == PAYLOAD and second.read_bytes() == OTHER
    assert first.parent.name.startswith("127.0.0.1_") and first.parent.parent == tmp_path / "checkpoints"
    assert fetch(f"{server}/a/model.pt", tmp_path, progress=False).read_bytes() == PAYLOAD
    assert len(Handler.requests) == 2
    official = registry.get("esm2_t6_8M_UR50D")
    assert url_cache_path(official.url, tmp_path) == checkpoint_path(official.filename, tmp_path)


DOWNLOADER = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from esmfold_lite.weights.download import download_file
print(download_file(sys.argv[1], sys.argv[2], progress=False))
"""


@pytest.mark.slow
def test_two_processes_download_one_file_once(server, tmp_path):
    url, dest = f"{server}/model.pt", tmp_path / "model.pt"
    Handler.release = threading.Event()
    command = [sys.executable, "-c", DOWNLOADER, url, str(dest)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert Handler.started.wait(timeout=60)  # the first process is inside its download, holding the lock
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = second.stderr.readline()
    assert "waiting for another process" in waiting
    Handler.release.set()
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(dest)] * 2
    assert dest.read_bytes() == PAYLOAD
    assert len(Handler.requests) == 1


def test_http_error_says_where_to_put_the_file(server, tmp_path):
    url = f"{server}/missing.pt"
    with pytest.raises(DownloadError, match="HTTP 404") as error:
        download_file(url, tmp_path / "missing.pt", progress=False)
    assert url in str(error.value) and str(tmp_path / "missing.pt") in str(error.value)
    assert error.value.url == url and error.value.dest == tmp_path / "missing.pt"


def test_offline_error_names_url_and_cache_path(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setattr(registry, "MODEL_URL", f"http://127.0.0.1:{closed_port}/models/{{}}.pt")
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path / "home"))
    expected_path = tmp_path / "home" / "checkpoints" / "esm2_t6_8M_UR50D.pt"
    assert checkpoint_path("esm2_t6_8M_UR50D.pt") == expected_path
    with pytest.raises(DownloadError) as error:
        fetch("esm2_t6_8M_UR50D", progress=False, timeout=5)
    message = str(error.value)
    assert f"http://127.0.0.1:{closed_port}/models/esm2_t6_8M_UR50D.pt" in message
    assert f"put it at\n  {expected_path}" in message
    assert "Connection refused" in message and "Errno" not in message  # the reason in words, not errno's number
    assert main(["weights", "download", "esm2_t6_8M_UR50D"]) == 1


def test_fetch_registry_name_gets_companion_and_cli_lists_it(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(registry, "MODEL_URL", f"{server}/models/{{}}.pt")
    monkeypatch.setattr(registry, "REGRESSION_URL", f"{server}/regression/{{}}-contact-regression.pt")
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path))
    assert main(["weights", "download", "esmfold_v1"]) == 0  # + its language model and that one's regression
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.suffix == ".pt")
    assert files == ["esm2_t36_3B_UR50D-contact-regression.pt", "esm2_t36_3B_UR50D.pt", "esmfold_3B_v1.pt"]
    assert all(record_of(tmp_path / "checkpoints" / name)["size"] == len(PAYLOAD) for name in files)
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"esmfold_v1 +esmfold +~[\d.]+ GB +yes", listing)
    assert re.search(r"esm2_t6_8M_UR50D +esm2 +~[\d.]+ GB +no", listing)
    (tmp_path / "checkpoints" / "esmfold_3B_v1.pt").write_bytes(b"<html>")  # damaged: listed as not cached
    assert main(["weights", "list"]) == 0
    assert re.search(r"esmfold_v1 +esmfold +~[\d.]+ GB +no", capsys.readouterr().out)


def test_cache_dir_default_and_unknown_name(monkeypatch):
    monkeypatch.delenv("ESMFOLD_LITE_HOME", raising=False)
    assert str(cache_dir()).endswith(".cache/esmfold_lite")
    with pytest.raises(KeyError, match="unknown checkpoint name 'esm3'"):
        download.fetch("esm3")


def test_without_a_terminal_progress_is_logged_not_drawn(server, tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.setenv("ESMFOLD_LITE_PROGRESS_INTERVAL", "0")  # a line per chunk
    monkeypatch.setattr(download, "CHUNK_BYTES", max(1, len(PAYLOAD) // 3))
    with caplog.at_level(logging.INFO):
        download_file(f"{server}/model.pt", tmp_path / "model.pt")
    lines = [m for m in caplog.messages if m.startswith("downloading model.pt: ")]
    assert lines and " GB of " in lines[0] and "MB/s, about " in lines[0] and " left" in lines[0]
    assert "model.pt" not in capsys.readouterr().err, "no progress bar drawn into a log"
    caplog.clear()
    download_file(f"{server}/model.pt", tmp_path / "again.pt", progress=False)
    assert not [m for m in caplog.messages if m.startswith("downloading")]
