"""`rag-app index`: incremental, resumable after SIGKILL, a no-op when nothing changed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _retrieval_data import make_chunks, make_settings, write_workspace

from rag_app import index
from rag_app.store import chroma
from rag_app.store.chroma import VectorStore
from rag_app.types import Chunk

TESTS = Path(__file__).resolve().parent


def _store(settings, report) -> VectorStore:
    return VectorStore.open(settings, report.fingerprint, 384, create=False)


@pytest.fixture
def settings(tmp_path):
    chroma.forget_clients()
    yield make_settings(tmp_path / "ws")
    chroma.forget_clients()


def test_index_then_noop_then_incremental(settings):
    chunks = make_chunks()
    write_workspace(settings, chunks)
    first = index.run(settings, progress=False)
    assert first.embedded == len(chunks) and first.bm25 == "built" and first.changed
    store = _store(settings, first)
    assert store.ids() == {c.id for c in chunks}

    again = index.run(settings, progress=False)
    assert not again.changed
    assert (again.embedded, again.deleted, again.metadata_updated) == (0, 0, 0)
    assert again.bm25 == "loaded"

    # Two chunks gone, one new, one with edited front matter (same text, same id).
    edited = dataclasses.replace(chunks[2], metadata={**chunks[2].metadata, "access": "restricted"})
    new = Chunk("fresh-chunk-0001", "manuals/new.md", "De-icing fluid type IV holdover times.")
    write_workspace(settings, [edited, *chunks[3:], new])
    third = index.run(settings, progress=False)
    assert (third.embedded, third.deleted, third.metadata_updated) == (1, 2, 1)
    assert third.bm25 == "built"
    assert store.ids() == {edited.id, new.id, *(c.id for c in chunks[3:])}
    assert store.metadatas([edited.id])[edited.id]["access"] == "restricted"


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from _retrieval_data import make_settings
from rag_app import index
from rag_app.store.chroma import VectorStore

index.UPSERT_EVERY = 8
original = VectorStore.upsert
def upsert(self, chunks, embeddings):
    original(self, chunks, embeddings)
    print("UPSERTED", len(chunks), flush=True)
VectorStore.upsert = upsert
index.run(make_settings({workspace!r}), progress=False)
print("DONE", flush=True)
"""


def test_killed_index_resumes_without_duplicates_or_gaps(settings):
    base = make_chunks()
    # 120 chunks: enough batches of 8 that the kill lands mid-run.
    chunks = [
        Chunk(
            f"chunk-{i:04d}-{c.id}", c.doc_id, f"{c.text} (copy {i})", c.title, metadata=c.metadata
        )
        for i in range(6)
        for c in base
    ]
    write_workspace(settings, chunks)
    script = _KILL_SCRIPT.format(tests=str(TESTS), workspace=str(settings.workspace))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    upserts = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("UPSERTED"):
                upserts += 1
                if upserts == 3:
                    os.kill(proc.pid, signal.SIGKILL)  # mid-run: the next batch is encoding
                    break
    finally:
        proc.kill()
        proc.wait()
    assert upserts == 3, "the index run did not get far enough to be killed mid-run"

    chroma.forget_clients()
    resumed = index.run(settings, progress=False)
    assert 0 < resumed.embedded < len(chunks)  # only what the killed run had not stored
    store = _store(settings, resumed)
    ids = sorted(store.ids())
    assert ids == sorted(c.id for c in chunks)
    assert store.count() == len(chunks)
    assert not index.run(settings, progress=False).changed


def test_cli_index_reports_and_says_when_nothing_changed(settings):
    from typer.testing import CliRunner

    from rag_app.cli import app

    write_workspace(settings, make_chunks())
    runner = CliRunner()
    first = runner.invoke(app, ["index", "--workspace", str(settings.workspace)])
    assert first.exit_code == 0, first.output
    assert "embedded 20" in first.output
    second = runner.invoke(app, ["index", "--workspace", str(settings.workspace)])
    assert second.exit_code == 0, second.output
    assert "nothing to do" in second.output

    search = runner.invoke(
        app,
        [
            "search",
            "how tight are the pump bolts",
            "--workspace",
            str(settings.workspace),
            "--json",
            "-k",
            "2",
            "--filter",
            "department=Hydraulics",
        ],
    )
    assert search.exit_code == 0, search.output
    hits = json.loads(search.stdout)
    assert len(hits) == 2 and all(h["metadata"]["department"] == "Hydraulics" for h in hits)
    assert "bm25" in hits[0]["scores"] or "dense" in hits[0]["scores"]


def test_cli_index_without_chunks_fails_clearly(settings):
    from typer.testing import CliRunner

    from rag_app.cli import app

    result = CliRunner().invoke(app, ["index", "--workspace", str(settings.workspace)])
    assert result.exit_code == 1
    assert "rag-app ingest" in result.output


def test_ingested_front_matter_is_filterable(settings, tmp_path):
    from rag_app import ingest
    from rag_app.filters import parse_filter
    from rag_app.retrieve import build_retriever

    corpus = tmp_path / "corpus"
    (corpus / "bulletins").mkdir(parents=True)
    (corpus / "bulletins" / "sb-1.md").write_text(
        "---\ntitle: Fitting cracks\ndepartment: Landing Gear\naccess: engineering\n"
        "effective_date: 2025-06-01\n---\n# Fitting\n\nFitting NW-F-160 shows fatigue cracks.\n"
    )
    (corpus / "notes.md").write_text(
        "---\ndepartment: Stores\neffective_date: 2023-01-01\n---\n"
        "# Stores\n\nFitting kits are kept in bay Q3.\n"
    )
    ingest.run(settings, corpus, progress=False)
    index.run(settings, progress=False)
    hybrid = build_retriever(settings, mode="hybrid", rerank=False)
    for spec, expected in [
        (["access=engineering"], "bulletins/sb-1.md"),
        (["effective_date<2024"], "notes.md"),
        (["doc_type=bulletins", "effective_date>=2025-01-01"], "bulletins/sb-1.md"),
    ]:
        hits = hybrid.retrieve("fitting", k=5, filters=parse_filter(spec))
        assert [h.chunk.doc_id for h in hits] == [expected], spec


def test_parallel_encoding_stores_the_same_vectors(tmp_path):
    """`models.embed_processes = 2`: two worker processes, the vectors one process writes."""
    base = make_chunks()
    chunks = [
        Chunk(f"c{i:04d}", c.doc_id, f"{c.text} (revision {i})", metadata=c.metadata)
        for i, c in enumerate(base * (160 // len(base) + 1))
    ][:160]
    reports, stores = [], []
    for processes in (1, 2):
        chroma.forget_clients()
        ws = make_settings(tmp_path / f"ws{processes}", models={"embed_processes": processes})
        write_workspace(ws, chunks)
        report = index.run(ws, progress=False)
        reports.append(report)
        stores.append(_store(ws, report).embeddings([c.id for c in chunks]))
    chroma.forget_clients()
    assert [r.processes for r in reports] == [1, 2]
    assert all(r.embedded == len(chunks) for r in reports)
    for chunk in chunks:
        np.testing.assert_allclose(stores[0][chunk.id], stores[1][chunk.id], atol=1e-5)
