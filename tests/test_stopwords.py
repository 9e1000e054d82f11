"""The one stop-word list (`rag_app.ir.stopwords`) and the sets derived from it."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from rag_app.ir import stopwords

ROOT = Path(__file__).resolve().parents[1]


def test_bm25_list_is_the_persisted_one():
    # BM25 indexes on disk were tokenised with exactly this list; changing it needs a
    # TOKENIZER_VERSION bump (and this hash updated in the same commit).
    from rag_app.store import bm25

    words = " ".join(sorted(stopwords.ENGLISH))
    assert len(stopwords.ENGLISH) == 135
    assert hashlib.sha256(words.encode()).hexdigest() == (
        "b45e71eb1a5813045287656e1a078b748e612b3f1d6b34fa223921d8ce995d3e"
    )
    assert bm25.STOP_WORDS is stopwords.BM25 == stopwords.ENGLISH
    assert bm25.TOKENIZER_VERSION == 2  # 2: code tails, same stop words
    assert bm25.tokenize("What is between the valves?") == ["valv"]


def test_every_use_is_derived_from_the_base_list():
    for name in ("BM25", "ATTRIBUTION", "GROUNDING", "REPETITION", "KEYWORDS"):
        derived = getattr(stopwords, name)
        missing = stopwords.ENGLISH - derived
        # only grounding takes words out of the base list, and only negations
        assert missing <= stopwords.NEGATIONS, (name, sorted(missing))
        extra = derived - stopwords.ENGLISH
        named = stopwords.HEDGES | stopwords.NEGATIONS | stopwords.SCOPE | stopwords.VAGUE
        assert extra <= named, (name, sorted(extra - named))


def test_grounding_keeps_negations_as_content():
    from eval import grounding

    assert not (stopwords.GROUNDING & stopwords.NEGATIONS)
    assert grounding.STOP_WORDS is stopwords.GROUNDING
    assert grounding.has_negation("The drug does not cure it")
    assert grounding.content_words("It may also be between many") == set()


def test_keywords_and_attribution_drop_hedges():
    assert stopwords.HEDGES <= stopwords.KEYWORDS & stopwords.ATTRIBUTION & stopwords.REPETITION
    assert stopwords.NEGATIONS <= stopwords.KEYWORDS


def _looks_like_stop_list(words: list[str]) -> bool:
    """15+ bare lower-case words, most of them English stop words."""
    known = stopwords.ENGLISH | stopwords.NEGATIONS
    return (
        len(words) >= 15
        and all(w.replace("'", "").isalpha() and w.islower() for w in words)
        and sum(w in known for w in words) * 2 >= len(words)
    )


# Word lists that are not stop lists: the words a question starts with.
NOT_STOP_LISTS = {("finetune/query_filters.py", "_QUESTION_WORDS")}


def test_no_other_stop_list_remains():
    # Neither a string of words nor a set / list / tuple literal of them, anywhere else.
    found = []
    for package in ("rag_app", "eval", "finetune", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "rag_app" / "ir" / "stopwords.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            allowed = {
                id(inner)
                for node in ast.walk(tree)
                if isinstance(node, ast.Assign)
                and any(
                    isinstance(t, ast.Name)
                    and (str(path.relative_to(ROOT)), t.id) in NOT_STOP_LISTS
                    for t in node.targets
                )
                for inner in ast.walk(node)
            }
            for node in ast.walk(tree):
                if id(node) in allowed:
                    continue
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    words = node.value.split()
                elif isinstance(node, ast.Set | ast.List | ast.Tuple):
                    words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                    words = [w for w in words if isinstance(w, str)]
                else:
                    continue
                if _looks_like_stop_list(words):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
