"""Downloads against a local HTTP server: progress to .part, resume with Range, checksums, offline errors."""

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from esmfold_lite.cli import main
from esmfold_lite.weights import download, registry
from esmfold_lite.weights.download import ChecksumError, DownloadError, cache_dir, checkpoint_path, download_file, fetch

PAYLOAD = bytes(range(256)) * 1000  # 256 kB


class RangeHandler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring ``Range: bytes=N-``; records the Range headers it saw."""

    ranges: list = []

    def do_GET(self):
        self.ranges.append(self.headers.get("Range"))
        if self.path.endswith("/missing.pt"):
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        if start >= len(PAYLOAD) and match:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.endswith("/truncated.pt"):  # the connection drops after 1000 bytes
            self.wfile.write(body[:1000])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.ranges = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_writes_part_then_renames(server, tmp_path):
    dest = tmp_path / "model.pt"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert download_file(f"{server}/model.pt", dest, sha256=sha, size_bytes=len(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.pt.part").exists()
    assert RangeHandler.ranges == [None]
    download_file(f"{server}/model.pt", dest, progress=False)  # already cached: no request
    assert RangeHandler.ranges == [None]


def test_resume_from_partial_file_uses_range(server, tmp_path):
    dest = tmp_path / "model.pt"
    (tmp_path / "model.pt.part").write_bytes(PAYLOAD[:100_000])
    download_file(f"{server}/model.pt", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert RangeHandler.ranges == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_download_keeps_part_for_resume(server, tmp_path):
    dest = tmp_path / "truncated.pt"
    with pytest.raises(DownloadError, match="again resumes it"):
        download_file(f"{server}/truncated.pt", dest, progress=False)
    assert (tmp_path / "truncated.pt.part").read_bytes() == PAYLOAD[:1000]
    assert not dest.exists()


def test_complete_part_file_is_finished_without_download(server, tmp_path):
    dest = tmp_path / "model.pt"
    (tmp_path / "model.pt.part").write_bytes(PAYLOAD)
    download_file(f"{server}/model.pt", dest, progress=False)
    assert RangeHandler.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_the_file(server, tmp_path):
    dest = tmp_path / "model.pt"
    with pytest.raises(ChecksumError, match="SHA-256 .*expected 0000") as error:
        download_file(f"{server}/model.pt", dest, sha256="0" * 64, progress=False)
    assert str(dest) in str(error.value)
    assert not dest.exists() and not (tmp_path / "model.pt.part").exists()
    with pytest.raises(ChecksumError, match="size 256000 bytes, expected 5"):
        download_file(f"{server}/model.pt", dest, size_bytes=5, progress=False)


def test_http_error_says_where_to_put_the_file(server, tmp_path):
    url = f"{server}/missing.pt"
    with pytest.raises(DownloadError, match="HTTP 404") as error:
        download_file(url, tmp_path / "missing.pt", progress=False)
    assert url in str(error.value) and str(tmp_path / "missing.pt") in str(error.value)


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
    assert main(["weights", "download", "esm2_t6_8M_UR50D"]) == 1


def test_fetch_registry_name_gets_companion_and_cli_lists_it(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(registry, "MODEL_URL", f"{server}/models/{{}}.pt")
    monkeypatch.setattr(registry, "REGRESSION_URL", f"{server}/regression/{{}}-contact-regression.pt")
    monkeypatch.setenv("ESMFOLD_LITE_HOME", str(tmp_path))
    assert main(["weights", "download", "esmfold_v1"]) == 0  # + its language model and that one's regression
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["esm2_t36_3B_UR50D-contact-regression.pt", "esm2_t36_3B_UR50D.pt", "esmfold_3B_v1.pt"]
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"esmfold_v1 +esmfold +~[\d.]+ GB +yes", listing)
    assert re.search(r"esm2_t6_8M_UR50D +esm2 +~[\d.]+ GB +no", listing)


def test_cache_dir_default_and_unknown_name(monkeypatch):
    monkeypatch.delenv("ESMFOLD_LITE_HOME", raising=False)
    assert str(cache_dir()).endswith(".cache/esmfold_lite")
    with pytest.raises(KeyError, match="unknown checkpoint name 'esm3'"):
        download.fetch("esm3")
