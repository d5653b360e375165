"""Chroma server mode against a real `chroma run` started here on a free local port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMA = Path(sys.executable).with_name("chroma")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_heartbeat(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "chroma server exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("chroma server did not answer its heartbeat in time")


@pytest.fixture
def chroma_server(tmp_path):
    port = free_port()
    process = subprocess.Popen([str(CHROMA), "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_heartbeat(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def test_ingest_and_search_through_a_chroma_server(make_service, chroma_server, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("# Servers\n\nChroma can run as a separate server process.\n")
    (root / "b.txt").write_text("Local files stay on this machine.\n")
    service = make_service(chroma_host="127.0.0.1", chroma_port=chroma_server)
    assert service.store.location.label == f"http://127.0.0.1:{chroma_server}"
    assert service.ingest([root]).indexed == 2
    assert service.ingest([root]).unchanged == 2
    assert service.search("separate server process", k=1)[0].path == "a.md"
    assert service.collections()[0]["chunks"] == 2
    assert not (service.config.home / "chroma").exists(), "server mode must not create a local store"
    assert service.config.manifest_path.name == f"manifest-127.0.0.1_{chroma_server}.sqlite"


def test_unreachable_server_is_a_user_error(make_service):
    from feldspar.retrieval.errors import StoreUnavailable

    service = make_service(chroma_host="127.0.0.1", chroma_port=free_port())
    with pytest.raises(StoreUnavailable, match="cannot open the Chroma store"):
        service.collections()
