"""Identifier lookups keep the document BM25 is sure of (issue 31), on the shipped corpus."""

from __future__ import annotations

import pytest

from rag_app.fusion import ExactMatchRule, FusionChoice, keyword_led
from rag_app.store.bm25 import BM25Index, is_code, tokenize
from rag_app.types import Chunk


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("72-61-009", True),
        ("nw-f-117", True),
        ("pt220a", True),
        ("0436", True),
        ("2023-0188", True),
        ("5.5", False),  # a quantity
        ("20-100", False),  # a range ("20-100 Nm wrenches")
        ("72-61", False),  # two short parts: a range or a chapter, not an identifier
        ("160", False),
        ("torque", False),
    ],
)
def test_what_counts_as_a_code(token, code):
    assert is_code(token) is code


def test_a_code_typed_without_its_prefix_matches_the_whole_code():
    tokens = tokenize("NW-TC-32-411 wheel change")
    assert {"nw-tc-32-411", "tc-32-411", "32-411"} <= set(tokens)
    index = BM25Index.build(
        [
            Chunk("a", "a.md", "Task card NW-TC-32-411: main wheel change."),
            Chunk("b", "b.md", "Task card NW-TC-32-412: nose wheel change, see 32 and 411."),
            Chunk("c", "c.md", "Shelf life of sealants."),
            Chunk("d", "d.md", "Duty time limits."),
        ]
    )
    assert index.search("TC-32-411", 1)[0][0] == "a"
    assert set(index.exact_terms("what does TC-32-411 say")) == {"tc-32-411"}  # "32-411": a range?


def test_keyword_led_puts_bm25s_best_exact_hit_first_and_keeps_the_rest_fused():
    fused = [("d1", 0.9), ("d2", 0.8), ("x", 0.2), ("b2", 0.1)]
    lexical = [("x", 9.0), ("b2", 7.0), ("d1", 1.0)]
    assert [c for c, _ in keyword_led(fused, lexical, {"x", "b2"}, pin=1)] == [
        "x",
        "d1",
        "d2",
        "b2",
    ]
    assert [c for c, _ in keyword_led(fused, lexical, {"x", "b2"}, pin=2)][:2] == ["x", "b2"]
    assert keyword_led(fused, lexical, set(), pin=1) == fused
    assert "exact match on 72-61-009" in ExactMatchRule().describe(["72-61-009"])


@pytest.mark.slow
def test_identifier_questions_find_their_document_first_on_the_shipped_corpus(shipped):
    from rag_app.retrieve import build_retriever

    hybrid = build_retriever(shipped, mode="hybrid", rerank=False)
    question = "Which aircraft are affected by SB 72-61-009?"
    hits = hybrid.retrieve(question, 5)
    assert hits[0].chunk.doc_id == "bulletins/sb-72-61-009.pdf"
    assert "exact match on 72-61-009:" in hybrid.fusion_note(question)  # not its tail "61-009"
    for query, doc in [
        ("NW-F-117", None),
        ("what does EO-24-017 say", "engineering/eo-24-017.md"),
        ("TC-32-421 requirements", "task_cards/tc-32-42-11.md"),
        ("tell me about SB 72-54-012", "bulletins/sb-72-54-012.md"),
    ]:
        top = hybrid.retrieve(query, 5)
        assert top, query
        if doc:
            assert top[0].chunk.doc_id == doc, (query, [h.chunk.doc_id for h in top])
    # a natural question without a code is fused as before
    plain = "what pressure do I put in the nose tyres"
    assert hybrid.fusion_note(plain) == hybrid.why
    off = build_retriever(
        shipped.model_copy(
            update={"retrieval": shipped.retrieval.model_copy(update={"exact_match": False})}
        ),
        mode="hybrid",
        rerank=False,
    )
    assert [h.chunk.id for h in off.retrieve(plain, 5)] == [
        h.chunk.id for h in hybrid.retrieve(plain, 5)
    ]


def test_a_rare_word_typed_alone_counts_as_an_exact_match():
    index = BM25Index.build(
        [
            Chunk("a", "a.md", "Mycosis fungoides is a lymphoma of the skin."),
            Chunk("b", "b.md", "Glaucoma damages the optic nerve."),
            Chunk("c", "c.md", "Symptoms of the skin lymphoma include patches."),
        ]
    )
    assert set(index.exact_terms("mycosis", short_words=1)) == {"mycosi"}
    assert index.exact_terms("symptoms of mycosis", short_words=1) == {}  # two words
    # a title typed alone is a lookup; the same words asked as a question are not
    assert set(index.exact_terms("mycosis fungoides lymphoma", short_words=3)) >= {"mycosi"}
    assert index.exact_terms("what is mycosis fungoides", short_words=3) == {}
    assert index.exact_terms("mycosis fungoides skin lymphoma", short_words=3) == {}  # four
    assert index.exact_terms("mycosis", short_words=0) == {}  # identifiers only
    assert set(index.exact_terms("NW-F-117 mycosis", short_words=0)) == set()  # not indexed


def test_a_title_typed_as_keywords_leads_with_that_documents_chunks():
    """GARD's rare-disease titles typed alone lost to dense before (BENCHMARKS, "A title
    typed alone"); a keyword query whose every token is in a few documents' titles leads
    with their chunks, and the same words asked as a question do not."""
    from rag_app.retrieve import Corpus, HybridRetriever

    def chunk(cid: str, title: str, text: str) -> Chunk:
        return Chunk(cid, f"{cid}.md", text, title=title)

    chunks = [
        chunk("t1", "Kenny-Caffey syndrome type 1", "A rare disorder of bone growth."),
        chunk("t2", "Kenny-Caffey syndrome type 2", "A rare disorder of bone growth, type 2."),
        chunk("g", "Glaucoma", "Glaucoma damages the optic nerve."),
    ]
    corpus = Corpus(chunks, BM25Index.build(chunks))
    assert corpus.titled("Kenny-Caffey syndrome type 1") == {"t1"}
    assert corpus.titled("Kenny-Caffey syndrome") == {"t1", "t2"}
    assert corpus.titled("glaucoma") == set()  # one token: the rare-word rule's job

    class _Dense:  # a dense retriever that prefers the wrong document
        def retrieve(self, query, k=5, filters=None):
            from rag_app.types import Hit

            return [Hit(chunks[1], {"dense": 0.9}, {"dense": 1}), Hit(chunks[2], {"dense": 0.5})]

        def describe(self) -> str:
            return "dense"

    from rag_app.retrieve import BM25Retriever

    served = FusionChoice("weighted", 0.8)
    hybrid = HybridRetriever(
        BM25Retriever(corpus), _Dense(), fusion=served, exact=ExactMatchRule(title_docs=20)
    )
    assert hybrid.retrieve("Kenny-Caffey syndrome type 1", 2)[0].chunk.id == "t1"
    assert "the title “Kenny-Caffey syndrome type 1”" in hybrid.fusion_note(
        "Kenny-Caffey syndrome type 1"
    )
    assert "title" not in hybrid.fusion_note("what is Kenny-Caffey syndrome type 1")
    off = ExactMatchRule(title_docs=0, short_words=0)
    plain = HybridRetriever(BM25Retriever(corpus), _Dense(), fusion=served, exact=off)
    assert plain.retrieve("Kenny-Caffey syndrome type 1", 2)[0].chunk.id == "t2"  # dense led
