"""Downloading torchvision weights: progress, torch.hub's hash rule, nothing kept on failure, and the page's button.
Everything is served by a local HTTP server on 127.0.0.1; nothing here touches the internet."""
import hashlib
import http.server
import io
import threading
from pathlib import Path

import pytest
import streamlit as st
import torch
import torchvision
from streamlit.testing.v1 import AppTest

from certlib.models import registry as models, weights_download
from certlib.models.weights_download import WeightsDownloadError

from tests_paths import APP


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: dict[str, int] = {}

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name in self.truncate:     # announce the whole file, send only part of it
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:self.truncate[name]])
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    _Handler.truncate = {}
    weights_download._online_memo.clear()


def _named_by_hash(root: Path, stem: str, data: bytes) -> str:
    name = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / name).write_bytes(data)
    return name


def test_download_reports_progress_and_checks_the_hash_prefix(server, tmp_path):
    root, base = server
    data = bytes(range(256)) * 9000                      # 2.3 MB: several progress steps
    name = _named_by_hash(root, "tiny", data)
    seen = []
    dest = weights_download.download(f"{base}/{name}", tmp_path / "out" / name,
                                     weights_download.expected_hash_prefix(name), lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == data
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert list(dest.parent.iterdir()) == [dest]          # no partial file left behind


def test_a_file_whose_hash_does_not_match_its_name_is_refused_and_not_kept(server, tmp_path):
    root, base = server
    (root / "resnet18-f37072fd.pth").write_bytes(b"not the weights" * 100)
    out = tmp_path / "out"
    with pytest.raises(WeightsDownloadError, match="does not start with the published f37072fd"):
        weights_download.download(f"{base}/resnet18-f37072fd.pth", out / "resnet18-f37072fd.pth", "f37072fd")
    assert list(out.iterdir()) == []


def test_missing_and_truncated_files_are_errors_that_keep_nothing(server, tmp_path):
    root, base = server
    data = b"x" * 50_000
    name = _named_by_hash(root, "cut", data)
    _Handler.truncate = {name: 1000}
    out = tmp_path / "out"
    with pytest.raises(WeightsDownloadError, match="HTTP 404"):
        weights_download.download(f"{base}/absent-00000000.pth", out / "absent.pth")
    with pytest.raises(WeightsDownloadError, match="closed after|could not be downloaded"):
        weights_download.download(f"{base}/{name}", out / name, weights_download.expected_hash_prefix(name))
    assert not any(out.iterdir())


def test_reachability_and_the_mirror(server, monkeypatch):
    root, base = server
    (root / "resnet18-f37072fd.pth").write_bytes(b"0")
    assert weights_download.unreachable_reason(f"{base}/resnet18-f37072fd.pth", wait=True) is None
    closed = socket_port_closed()
    url = f"http://127.0.0.1:{closed}/x.pth"
    first = weights_download.unreachable_reason(url)          # answered at once, checked in the background
    assert first in (weights_download.CHECKING,) or "cannot reach" in first
    assert "cannot reach" in weights_download.unreachable_reason(url, wait=True)
    assert "cannot reach" in weights_download.unreachable_reason(url)        # remembered
    monkeypatch.setenv(weights_download.MIRROR_ENV, base + "/")
    assert models.imagenet_weights_url("resnet18") == f"{base}/resnet18-f37072fd.pth"
    assert weights_download.expected_hash_prefix(models.imagenet_weights_url("resnet18")) == "f37072fd"


def socket_port_closed() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]        # closed as soon as the block ends; nothing listens there


def _app_with_mirror(monkeypatch, tmp_path, base):
    monkeypatch.setenv(weights_download.MIRROR_ENV, base)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(models.WEIGHTS_DIR_ENV, raising=False)
    weights_download.unreachable_reason(models.imagenet_weights_url("resnet18"), wait=True)
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_offers_the_download_and_refuses_a_substituted_file(server, tmp_path, monkeypatch):
    root, base = server
    (root / "resnet18-f37072fd.pth").write_bytes(b"substituted" * 1000)
    at = _app_with_mirror(monkeypatch, tmp_path, base)
    button = at.button(key="download_resnet18")
    assert button.label == "Download resnet18 weights (45 MB)"
    button.click().run()
    assert not at.exception
    assert any("does not start with the published f37072fd" in e.value for e in at.error)
    assert not (tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()
    assert at.session_state["model_key"] == models.default_model_key()     # nothing changed


def test_page_download_makes_the_model_available_and_selects_it(server, tmp_path, monkeypatch):
    root, base = server
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buf)
    real_name = "resnet18-f37072fd.pth"
    (root / real_name).write_bytes(buf.getvalue())
    # These are random weights, so their sha256 cannot start with torchvision's f37072fd: accept this file's own.
    monkeypatch.setattr(weights_download, "expected_hash_prefix",
                        lambda url: hashlib.sha256(buf.getvalue()).hexdigest()[:8])
    at = _app_with_mirror(monkeypatch, tmp_path, base)
    at.button(key="download_resnet18").click().run()
    assert not at.exception, at.exception
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / real_name).read_bytes() == buf.getvalue()
    assert at.session_state["model_key"] == "resnet18"
    assert any("Downloaded and hash-checked resnet18-f37072fd.pth" in s.value for s in at.success)
    assert at.session_state["workbench"].model.spec.key == "resnet18"
    # The file is not torchvision's, and the page says so.
    assert any("not the official resnet18 weights" in w.value for w in at.warning)


def test_page_without_network_shows_why_and_no_button(monkeypatch, tmp_path):
    monkeypatch.setenv(weights_download.MIRROR_ENV, f"http://127.0.0.1:{socket_port_closed()}")
    weights_download._online_memo.clear()
    at = _app_with_mirror(monkeypatch, tmp_path, f"http://127.0.0.1:{socket_port_closed()}")
    assert not any(b.key and b.key.startswith("download_") for b in at.button)
    assert any("it looks offline" in m.value and "resnet18" in m.value for m in at.markdown)
    weights_download._online_memo.clear()
