"""The names a user imports from `rag_app` (its `__all__`) resolve, lazily, to the real ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rag_app


def test_every_exported_name_is_the_module_level_original():
    from rag_app import answer, config, index, ingest, retrieve, types

    assert rag_app.load_settings is config.load_settings
    assert rag_app.build_retriever is retrieve.build_retriever
    assert rag_app.run_ingest is ingest.run and rag_app.run_index is index.run
    assert rag_app.answer_question is answer.answer and rag_app.Hit is types.Hit
    for name in rag_app.__all__:
        assert getattr(rag_app, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rag_app.nope  # noqa: B018


def test_importing_the_package_loads_no_model_library():
    code = "import sys, rag_app; print(any(m in sys.modules for m in ('torch', 'chromadb')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
