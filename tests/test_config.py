from __future__ import annotations

import pytest
from pydantic import ValidationError

from rag_app.config import load_settings


def test_defaults_bind_loopback_and_keep_paths_under_workspace(settings_factory, tmp_path):
    s = settings_factory()
    assert s.server.host == "127.0.0.1"
    assert s.models.trust_remote_code is False
    for path in (s.chunks_path, s.bm25_dir, s.chroma_dir, s.models_dir, s.synth_dir):
        assert path.is_relative_to(s.workspace)


def test_precedence_flags_over_env_over_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag-app.toml").write_text(
        "[retrieval]\ntop_k = 7\nrrf_k = 10\n[ingest]\nchunk_size = 128\n"
    )
    monkeypatch.setenv("RAG_APP_RETRIEVAL__TOP_K", "9")
    s = load_settings()
    assert (s.retrieval.top_k, s.retrieval.rrf_k, s.ingest.chunk_size) == (9, 10, 128)
    s = load_settings(retrieval={"top_k": 3, "fusion": None})
    assert s.retrieval.top_k == 3 and s.retrieval.rrf_k == 10 and s.retrieval.fusion == "auto"


def test_invalid_values_are_rejected_with_the_field_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="chunk_overlap"):
        load_settings(ingest={"chunk_size": 64, "chunk_overlap": 64})
    with pytest.raises(ValidationError, match="user:password"):
        load_settings(server={"auth": ["nopassword"]})
    (tmp_path / "rag-app.toml").write_text("unknown_key = 1\n")
    with pytest.raises(ValidationError, match="unknown_key"):
        load_settings()


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_masked_when_printed(settings_factory):
    s = settings_factory(llm={"api_key": "sk-secret-123"}, server={"auth": ["ann:pw123"]})
    text = str(s.redacted())
    assert "sk-secret-123" not in text and "pw123" not in text
    assert "sk-secret-123" not in repr(s)


def test_config_file_does_not_leak_into_later_calls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAG_APP_CONFIG", raising=False)
    cfg = tmp_path / "other.toml"
    cfg.write_text("seed = 7\n")
    assert load_settings(cfg).seed == 7
    assert load_settings().seed == 42
