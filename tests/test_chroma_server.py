"""Chroma in client/server mode: `chroma run` on a loopback port, reached over HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _retrieval_data import make_chunks, make_settings, write_workspace

from rag_app import index
from rag_app.filters import parse_filter
from rag_app.retrieve import build_retriever
from rag_app.store import chroma
from rag_app.store.chroma import ChromaUnavailableError, VectorStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chroma_cli() -> str:
    local = Path(sys.executable).with_name("chroma")
    found = str(local) if local.exists() else shutil.which("chroma")
    if not found:
        pytest.skip("the `chroma` command (chromadb's CLI) is not installed")
    return found


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A `chroma run` server on 127.0.0.1:<free port>; yields its URL."""
    import httpx

    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = (path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            _chroma_cli(),
            "run",
            "--path",
            str(path / "db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited: {(path / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chroma run did not answer its heartbeat within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        chroma.forget_clients()


def test_index_and_search_through_a_chroma_server(chroma_server, tmp_path):
    chroma.forget_clients()
    settings = make_settings(tmp_path / "ws", retrieval={"chroma_url": chroma_server})
    chunks = make_chunks()
    write_workspace(settings, chunks)
    report = index.run(settings, progress=False)
    assert report.embedded == len(chunks)
    assert not settings.chroma_dir.exists()  # nothing embedded locally: it is on the server
    assert not index.run(settings, progress=False).changed

    store = VectorStore.open(settings, report.fingerprint, 384, create=False)
    assert store.count() == len(chunks)
    hybrid = build_retriever(settings, mode="hybrid", rerank=False)
    hits = hybrid.retrieve("pump mounting bolt torque", k=3)
    assert "Torque the pump mounting bolts" in hits[0].chunk.text
    assert "dense" in hits[0].scores
    dense = build_retriever(settings, mode="dense", rerank=False)
    filtered = dense.retrieve("pump", k=5, filters=parse_filter("department=Safety"))
    assert filtered and all(h.chunk.metadata["department"] == "Safety" for h in filtered)


def test_unreachable_server_is_a_clear_error(tmp_path):
    chroma.forget_clients()
    url = f"http://127.0.0.1:{_free_port()}"
    settings = make_settings(tmp_path / "ws", retrieval={"chroma_url": url})
    with pytest.raises(ChromaUnavailableError, match="chroma run"):
        VectorStore.open(settings, "toy-aaaa", 8)
