"""Shared test set-up: never touch the network, and share expensive models per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("RAG_APP_CONFIG", None)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CORPUS = REPO / "corpus"


@pytest.fixture
def settings_factory(tmp_path, monkeypatch):
    """Settings with the workspace in a temp folder and no config file from the cwd."""
    from rag_app.config import load_settings

    monkeypatch.chdir(tmp_path)

    def make(**overrides):
        overrides.setdefault("workspace", tmp_path / "workspace")
        return load_settings(**overrides)

    return make


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    """The shipped corpus ingested and indexed with the base model, once per test session
    (about a minute and a half on 2 cores): what a user gets after `make demo`'s first stages.
    The LLM is off, so answers are the extractive mode's."""
    from rag_app import index, ingest
    from rag_app.config import load_settings
    from rag_app.ui.app import free_port

    root = tmp_path_factory.mktemp("shipped")
    settings = load_settings(
        workspace=root / "ws",
        corpus=CORPUS,
        llm={"backend": "none"},
        server={"port": free_port()},
    )
    ingest.run(settings, progress=False)
    index.run(settings, progress=False)
    return settings
