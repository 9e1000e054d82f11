"""`RetrieverChoice`: the one value a chat session's retriever choice travels as."""

from __future__ import annotations

import dataclasses

import pytest

from rag_app.chat import BASELINE, RetrieverChoice
from rag_app.types import SearchMode


def test_defaults_are_the_chats_defaults():
    choice = RetrieverChoice()
    assert choice == RetrieverChoice(BASELINE, SearchMode.HYBRID, True, None)


def test_of_parses_a_string_mode_and_normalises_the_dimension():
    choice = RetrieverChoice.of("run-1", " Dense ", 1, "384")
    assert choice.mode is SearchMode.DENSE
    assert choice.rerank is True and choice.dim == 384
    assert RetrieverChoice.of(BASELINE, "bm25", False, 0).dim is None


def test_an_unknown_mode_is_a_clear_value_error_however_the_choice_is_built():
    with pytest.raises(ValueError, match=r"unknown search mode 'fuzzy'; use hybrid, dense, bm25"):
        RetrieverChoice.of(BASELINE, "fuzzy", True)
    with pytest.raises(ValueError, match="unknown search mode"):
        RetrieverChoice(BASELINE, "fuzzy", True)


def test_equal_choices_are_one_cache_key_and_frozen():
    a = RetrieverChoice.of(BASELINE, "hybrid", True, 256)
    b = RetrieverChoice(BASELINE, SearchMode.HYBRID, True, 256)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert dataclasses.replace(a, key="run-1").key == "run-1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.key = "run-1"
