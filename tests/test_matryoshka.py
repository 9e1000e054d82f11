"""Matryoshka dimensions at serve time, and `rag-app search --filter` forms (issue 9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _retrieval_data import by_text, make_chunks, make_settings, write_workspace
from typer.testing import CliRunner

from rag_app import index
from rag_app.cli import app
from rag_app.embedder import Embedder
from rag_app.retrieve import build_retriever, resolve_dim
from rag_app.store import chroma
from rag_app.store.chroma import NotIndexedError, indexed_dims


@pytest.fixture(scope="module")
def dims_ws(tmp_path_factory):
    chroma.forget_clients()
    settings = make_settings(tmp_path_factory.mktemp("matryoshka") / "ws")
    chunks = make_chunks()
    write_workspace(settings, chunks)
    full = index.run(settings, progress=False)
    small = index.run(settings, progress=False, dim=128)
    yield settings, chunks, full, small
    chroma.forget_clients()


def test_each_dimension_has_its_own_collection(dims_ws):
    settings, chunks, full, small = dims_ws
    assert (full.dim, small.dim) == (384, 128)
    assert small.fingerprint == full.fingerprint + "-d128" != full.fingerprint
    assert small.reused == len(chunks)  # truncated from the full index, not re-embedded
    names = {c.name for c in chroma.client_for(settings).list_collections()}
    assert {full.fingerprint, small.fingerprint} <= names
    assert indexed_dims(settings, full.fingerprint) == [384, 128]
    emb = Embedder.load("all-MiniLM-L6-v2", truncate_dim=128)
    assert emb.full is Embedder.load("all-MiniLM-L6-v2") and emb.model is emb.full.model
    assert Embedder.load("all-MiniLM-L6-v2", truncate_dim=384) is emb.full
    vec = emb.encode_queries(["pump bolts"])
    assert vec.shape == (1, 128) and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot truncate"):
        Embedder.load("all-MiniLM-L6-v2", truncate_dim=512)


def test_query_works_at_both_dimensions_and_rescores(dims_ws):
    settings, chunks, *_ = dims_ws
    torque = by_text(chunks, "Torque the pump")
    for dim in (None, 128):
        dense = build_retriever(settings, mode="dense", rerank=False, dim=dim)
        assert dense.embedder.dim == (dim or 384)
        assert dense.retrieve("how tight should the pump bolts be", k=3)[0].chunk.id == torque.id
    full = build_retriever(settings, mode="dense", rerank=False)
    rescored = build_retriever(settings, mode="dense", rerank=False, dim=128, rescore=True)
    assert "rescored at dim 384" in rescored.describe()
    a = full.retrieve("hydraulic fluid", k=5)
    b = rescored.retrieve("hydraulic fluid", k=5)
    assert [h.chunk.id for h in a] == [h.chunk.id for h in b]
    assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
    hybrid = build_retriever(settings, mode="hybrid", rerank=False, dim=128)
    assert "-d128" in hybrid.describe()


def test_dimension_mismatch_is_an_error(dims_ws):
    settings, *_ = dims_ws
    with pytest.raises(NotIndexedError, match=r"--dim 64.*") as err:
        build_retriever(settings, mode="dense", rerank=False, dim=64)
    assert "indexed dimensions: 384, 128" in str(err.value)
    configured = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"dim": 256})}
    )
    assert resolve_dim(configured) == 256
    with pytest.raises(NotIndexedError):
        build_retriever(configured, mode="dense", rerank=False)
    per_model = settings.model_copy(
        update={
            "retrieval": settings.retrieval.model_copy(
                update={"dim": 256, "model_dims": {"all-MiniLM-L6-v2": 128}}
            )
        }
    )
    assert build_retriever(per_model, mode="dense", rerank=False).embedder.dim == 128


def _search(settings, *args):
    result = CliRunner().invoke(
        app, ["search", *args, "--workspace", str(settings.workspace), "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_search_dim_rescore_and_filters(dims_ws):
    settings, *_ = dims_ws
    ws = str(settings.workspace)
    hits = _search(settings, "pump bolts", "--mode", "dense", "--no-rerank", "--dim", "128")
    assert hits and "dense" in hits[0]["scores"]
    assert _search(settings, "pump", "--mode", "dense", "--no-rerank", "--dim", "128", "--rescore")
    bad = CliRunner().invoke(app, ["search", "pump", "--workspace", ws, "--dim", "64"])
    assert bad.exit_code == 1 and "--dim 64" in bad.output
    # equality, `in`, and a date range: the CLI's --filter forms
    base = ["--mode", "hybrid", "--no-rerank", "-k", "20"]
    eq = _search(settings, "parts", *base, "--filter", "department=Stores")
    assert eq and {h["metadata"]["department"] for h in eq} == {"Stores"}
    within = _search(settings, "inspect", *base, "--filter", "doc_type=bulletin,policy")
    assert {h["metadata"]["doc_type"] for h in within} == {"bulletin", "policy"}
    dated = _search(
        settings,
        "inspect",
        *base,
        "-f",
        "effective_date>=2024-06-01",
        "-f",
        "effective_date<=2025-02-28",
    )
    dates = {h["metadata"]["effective_date"] for h in dated}
    assert dates and all("2024-06-01" <= d <= "2025-02-28" for d in dates)
    hidden = _search(settings, "NW-F-160", *base, "--filter", "access!=engineering")
    assert all(h["metadata"].get("access") != "engineering" for h in hidden)


def test_cli_index_dim(dims_ws):
    settings, *_ = dims_ws
    result = CliRunner().invoke(
        app, ["index", "--workspace", str(settings.workspace), "--dim", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "dim 64" in result.output and "truncated from the full-dim index" in result.output
    assert indexed_dims(settings, Embedder.load("all-MiniLM-L6-v2").fingerprint) == [384, 128, 64]
