from __future__ import annotations

import pytest
from pydantic import ValidationError

from rag_app.config import ConfigError, load_settings


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
    with pytest.raises(ConfigError, match="unknown key unknown_key"):
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


def test_flat_finetune_names_of_before_still_work_and_say_what_replaces_them(
    tmp_path, monkeypatch, caplog
):
    """`finetune.adapter_epochs`, `finetune.reranker = false`, `negatives_per_query`, ...
    became `finetune.adapter.epochs`, `finetune.reranker.enabled`, `finetune.negatives.*`."""
    from rag_app.config import updated_finetune

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag-app.toml").write_text(
        "[finetune]\nadapter_epochs = 7\nreranker = false\nnegatives_per_query = 2\n"
    )
    monkeypatch.setenv("RAG_APP_FINETUNE__RERANKER_BATCH_SIZE", "4")
    with caplog.at_level("WARNING", logger="rag_app.config"):
        s = load_settings()
    ft = s.finetune
    assert (ft.adapter.epochs, ft.reranker.enabled, ft.negatives.per_query) == (7, False, 2)
    assert ft.reranker.batch_size == 4
    assert "finetune.adapter_epochs is deprecated: use finetune.adapter.epochs" in caplog.text
    assert "use finetune.reranker.enabled" in caplog.text
    # the new names, and a validated copy (model_copy would not validate)
    s = load_settings(finetune={"adapter": {"kind": "mlp"}, "reranker": {"enabled": False}})
    assert s.finetune.adapter.kind == "mlp" and s.finetune.adapter.epochs == 7
    copy = updated_finetune(s.finetune, adapter={"epochs": 3}, negatives_range_min=5)
    assert (copy.adapter.kind, copy.adapter.epochs, copy.negatives.range_min) == ("mlp", 3, 5)
