"""BM25 (tokens, scores, safe persistence) and the Chroma store (fingerprints, filters)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _retrieval_data import by_text, make_chunks, make_settings

from rag_app.chunkstore import CorruptWorkspaceError
from rag_app.filters import parse_filter
from rag_app.store.bm25 import BM25Index, chunk_set_hash, tokenize
from rag_app.store.chroma import ModelMismatchError, NotIndexedError, VectorStore
from rag_app.types import Chunk

# --- tokenizer ----------------------------------------------------------------------------


def test_tokenize_stems_and_drops_stop_words():
    tokens = tokenize("The pumps were running in the hangar")
    assert "the" not in tokens and "were" not in tokens and "in" not in tokens
    assert "pump" in tokens and "run" in tokens and "hangar" in tokens


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("NW-F-160", {"nw-f-160", "nwf160", "nw", "f", "160"}),
        ("PT-220A", {"pt-220a", "pt220a", "pt", "220a"}),
        ("32-41-11", {"32-41-11", "324111", "32", "41", "11"}),
    ],
)
def test_tokenize_keeps_codes_whole_and_in_parts(code, expected):
    assert expected <= set(tokenize(f"Inspect {code}."))


def test_code_query_finds_code_in_any_spelling():
    chunks = make_chunks()
    index = BM25Index.build(chunks)
    target = by_text(chunks, "cap the pressure line")  # mentions PT-220A
    for query in ("PT-220A", "pt220a", "PT 220A", "pump PT-220A"):
        assert index.search(query, k=1)[0][0] == target.id, query
    # The full code outranks a chunk sharing only a part of it (NW-F-161 vs NW-F-160).
    hits = index.search("NW-F-160", k=3)
    assert {h[0] for h in hits[:2]} == {
        by_text(chunks, "fatigue cracks").id,
        by_text(chunks, "eddy current").id,
    }
    task = index.search("32-41-11", k=1)
    assert task[0][0] == by_text(chunks, "32-41-11").id


# --- scoring --------------------------------------------------------------------------------


def test_scores_equal_rank_bm25_okapi():
    from rank_bm25 import BM25Okapi

    chunks = make_chunks()
    index = BM25Index.build(chunks)
    reference = BM25Okapi([tokenize(c.embedding_text()) for c in chunks])
    for query in ("hydraulic pump torque", "brake wear pin", "fuel fuel probe", "nothing-here"):
        tokens = tokenize(query)
        np.testing.assert_allclose(index.scores(tokens), reference.get_scores(tokens), rtol=1e-9)


def test_search_respects_allowed_ids_and_k():
    chunks = make_chunks()
    index = BM25Index.build(chunks)
    allowed = {c.id for c in chunks if c.metadata["department"] == "Safety"}
    hits = index.search("hydraulic fluid", k=10, allowed_ids=allowed)
    assert hits and all(cid in allowed for cid, _ in hits)
    assert index.search("hydraulic fluid", k=10, allowed_ids=set()) == []
    assert len(index.search("the hydraulic pump fluid", k=2)) == 2
    assert index.search("zzzz", k=5) == []
    scores = [s for _, s in index.search("pump", k=10)]
    assert scores == sorted(scores, reverse=True)


# --- persistence ----------------------------------------------------------------------------


def test_save_load_roundtrip_is_json_and_arrays_and_identical(tmp_path):
    chunks = make_chunks()
    index = BM25Index.build(chunks)
    index.save(tmp_path)
    assert json.loads((tmp_path / "ids.json").read_text()) == [c.id for c in chunks]
    loaded = BM25Index.load(tmp_path)
    assert isinstance(loaded._post_w, np.memmap)  # paged in by queries, not read whole
    for query in ("brake pin", "hydraulic pump torque", "NW-F-160"):
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))
        assert loaded.search(query, 5) == index.search(query, 5)
    assert loaded.chunk_hash == chunk_set_hash(chunks)


def test_parallel_tokenising_builds_the_same_index(monkeypatch):
    from rag_app.store import bm25

    chunks = make_chunks()
    monkeypatch.setattr(bm25, "PARALLEL_MIN_TEXTS", 1)
    parallel = BM25Index.build(chunks, processes=2)
    serial = BM25Index.build(chunks, processes=1)
    assert parallel._vocab == serial._vocab
    np.testing.assert_array_equal(
        parallel.scores("hydraulic pump"), serial.scores("hydraulic pump")
    )


@pytest.mark.parametrize(
    "name", ["ids.json", "terms.json", "indptr.npy", "rows.npy", "weights.npy"]
)
def test_damaged_index_is_detected_and_rebuilt(tmp_path, caplog, name):
    chunks = make_chunks()
    BM25Index.build(chunks).save(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptWorkspaceError, match="checksum"):
        BM25Index.load(tmp_path)
    index, status = BM25Index.load_or_build(tmp_path, chunks)
    assert status == "rebuilt" and len(index) == len(chunks)
    assert "rebuilding" in caplog.text
    assert BM25Index.load(tmp_path).ids == index.ids  # the rebuilt files are whole again

    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptWorkspaceError):
        BM25Index.load(tmp_path)
    path.unlink()
    with pytest.raises(CorruptWorkspaceError, match="missing"):
        BM25Index.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptWorkspaceError):
        BM25Index.load(tmp_path)


def test_pickled_arrays_are_refused_even_with_a_matching_checksum(tmp_path):
    """A folder received from someone else cannot make np.load unpickle (run code)."""
    from rag_app.fsutil import sha256_file

    chunks = make_chunks()
    BM25Index.build(chunks).save(tmp_path)
    np.save(tmp_path / "weights.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["sha256"]["weights.npy"] = sha256_file(tmp_path / "weights.npy")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptWorkspaceError, match="cannot be read"):
        BM25Index.load(tmp_path)


def test_index_of_the_previous_format_is_replaced(tmp_path, caplog):
    chunks = make_chunks()
    (tmp_path / "bm25.json").write_text('{"ids": [], "vocab": [], "docs": []}')
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": 1, "tokenizer": 1, "chunk_hash": chunk_set_hash(chunks)})
    )
    index, status = BM25Index.load_or_build(tmp_path, chunks)
    assert status == "rebuilt" and "another version" in caplog.text
    assert not (tmp_path / "bm25.json").exists()
    assert BM25Index.load(tmp_path).search("brake pin", 3) == index.search("brake pin", 3)


def test_rebuilt_only_when_chunks_change(tmp_path):
    chunks = make_chunks()
    _, status = BM25Index.load_or_build(tmp_path, chunks)
    assert status == "built"
    _, status = BM25Index.load_or_build(tmp_path, list(reversed(chunks)))
    assert status == "loaded"
    extra = Chunk("new-chunk", "x.md", "A brand new passage about de-icing fluid.")
    index, status = BM25Index.load_or_build(tmp_path, [*chunks, extra])
    assert status == "built" and index.search("de-icing", k=1)[0][0] == "new-chunk"


# --- Chroma ---------------------------------------------------------------------------------


@pytest.fixture
def chroma_settings(tmp_path):
    from rag_app.store import chroma

    chroma.forget_clients()
    yield make_settings(tmp_path / "ws")
    chroma.forget_clients()


def _unit(rng, n, dim):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_chroma_roundtrip_with_our_vectors(chroma_settings):
    chunks = make_chunks()
    rng = np.random.default_rng(0)
    vectors = _unit(rng, len(chunks), 8)
    store = VectorStore.open(chroma_settings, "toy-model-aaaa", 8, model_name="toy-model")
    store.upsert(chunks, vectors)
    store.upsert(chunks[:3], vectors[:3])  # upsert twice: no duplicates
    assert store.count() == len(chunks)
    assert store.ids() == {c.id for c in chunks}
    hits = store.query(vectors[4], k=3)
    assert hits[0][0] == chunks[4].id and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    store.delete([chunks[0].id])
    assert chunks[0].id not in store.ids()
    meta = store.collection.metadata
    assert meta["fingerprint"] == "toy-model-aaaa" and meta["dim"] == 8
    assert meta["model_name"] == "toy-model"
    # Chroma must never embed by itself (its default would download an ONNX model).
    with pytest.raises(Exception, match="own embeddings"):
        store.collection.query(query_texts=["pump"], n_results=1)


def test_chroma_where_agrees_with_python_filter(chroma_settings):
    chunks = make_chunks()
    vectors = _unit(np.random.default_rng(1), len(chunks), 8)
    store = VectorStore.open(chroma_settings, "toy-model-aaaa", 8, model_name="toy-model")
    store.upsert(chunks, vectors)
    specs = [
        ["department=Stores"],
        ["doc_type=manual,bulletin", "effective_date>=2025-01-01"],
        ["effective_date<2024"],
        ["effective_date<=2024", "department!=Safety"],
        ["access=engineering"],
        ["access!=engineering", "doc_type=bulletin"],
        ["doc_id=policies/stores.md"],
    ]
    for spec in specs:
        flt = parse_filter(spec)
        expected = {c.id for c in chunks if flt.matches_chunk(c)}
        got = {cid for cid, _ in store.query(vectors[0], k=len(chunks), where=flt.to_chroma())}
        assert got == expected, spec
        assert expected, f"test data should match {spec}"


def test_fingerprint_mismatch_names_both_models_and_the_command(chroma_settings):
    store = VectorStore.open(chroma_settings, "toy-model-aaaa", 8, model_name="toy-model")
    store.upsert(make_chunks()[:2], _unit(np.random.default_rng(2), 2, 8))
    with pytest.raises(ModelMismatchError) as err:
        VectorStore.open(chroma_settings, "toy-model-bbbb", 8, create=False, model_name="toy-model")
    message = str(err.value)
    assert "toy-model-aaaa" in message and "toy-model-bbbb" in message
    assert "rag-app index --model toy-model" in message
    with pytest.raises(NotIndexedError, match="rag-app index --model other"):
        VectorStore.open(chroma_settings, "other-cccc", 8, create=False, model_name="other")
    # A store bound to one model refuses another model's queries.
    with pytest.raises(ModelMismatchError, match="toy-model-aaaa"):
        store.check("toy-model-bbbb", 8, "toy-model")


def test_dimension_mismatch_is_refused(chroma_settings):
    store = VectorStore.open(chroma_settings, "toy-model-aaaa", 8, model_name="toy-model")
    with pytest.raises(ModelMismatchError, match="dim"):
        VectorStore.open(chroma_settings, "toy-model-aaaa", 16, model_name="toy-model")
    with pytest.raises(ModelMismatchError, match="dimension 4"):
        store.upsert(make_chunks()[:1], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ModelMismatchError, match="dimension 16"):
        store.query(np.ones(16, dtype=np.float32), k=1)


def test_chunk_table_keeps_unicode_line_separators_inside_a_chunk(tmp_path):
    """Chunk text with U+2028 / U+0085 (PDF extractions have them) is one line of
    chunks.jsonl: the loader splits on newlines only."""
    from rag_app import chunkstore

    chunks = [Chunk("a", "x.md", "first\u2028second\x85third"), Chunk("b", "x.md", "plain")]
    chunkstore.save(tmp_path / "chunks.jsonl", tmp_path / "manifest.json", chunks, {})
    assert chunkstore.load_chunks(tmp_path / "chunks.jsonl", tmp_path / "manifest.json") == chunks
