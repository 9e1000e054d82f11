"""What the served hybrid reads into a query: acronyms the documents define
(rag_app.ir.acronyms; on GARD, titles typed with their acronym, "ALS type 6", fell
significantly below BM25 alone) and clipped words (rag_app.ir.clipped: "acc" for
accumulator). docs/BENCHMARKS.md, "Jargon"."""

from __future__ import annotations

import pytest

from rag_app.fusion import ExactMatchRule, FusionChoice
from rag_app.ir.acronyms import Expansion, defined_acronyms, expand, long_form_before
from rag_app.ir.clipped import Reading, Vocabulary, read_clipped
from rag_app.store.bm25 import BM25Index
from rag_app.types import Chunk, Hit


def test_a_long_form_is_the_run_of_words_whose_initials_spell_the_acronym():
    assert long_form_before("people with amyotrophic lateral sclerosis ", "ALS") == (
        "amyotrophic lateral sclerosis"
    )
    # hyphenated words count as two, stop words between initials are skipped
    assert long_form_before("Emery-Dreifuss muscular dystrophy ", "EDMD") == (
        "emery-dreifuss muscular dystrophy"
    )
    assert long_form_before("the Department of Defense ", "DD") == "department of defense"
    assert long_form_before("a rare disease ", "ALS") is None  # initials do not spell it
    assert long_form_before("lateral sclerosis ", "ALS") is None  # too few words
    assert long_form_before("amyotrophic lateral sclerosis, ", "ALS") is None  # not adjacent


def test_an_acronym_with_no_majority_meaning_is_left_out():
    texts = [
        "Inherited as autosomal dominant (AD) traits. Also autosomal dominant (AD) here.",
        "Patients with Alzheimer disease (AD) forget.",
        "Main landing gear (MLG) and the main landing gear (MLG) again.",
        "Multiple lentigines gene (MLG) is something else.",
        "Cat scratch disease (CSD) and Carotid sinus disorder (CSD).",
    ]
    assert defined_acronyms(texts) == {"AD": "autosomal dominant", "MLG": "main landing gear"}


def test_a_query_reads_acronyms_typed_in_capitals_only():
    table = {"ALS": "amyotrophic lateral sclerosis", "AIDS": "acquired immune deficiency"}
    assert expand("ALS type 6", table) == (
        "ALS (amyotrophic lateral sclerosis) type 6",
        [Expansion("ALS", "amyotrophic lateral sclerosis")],
    )
    assert expand("ALS type 6", table, "replace")[0] == "amyotrophic lateral sclerosis type 6"
    assert expand("hearing aids that whistle", table) == ("hearing aids that whistle", [])
    assert expand("ALS-like symptoms", table)[1] == []  # part of a longer word
    # already spelled out: nothing to add
    assert expand("ALS amyotrophic lateral sclerosis", table)[1] == []
    # read once; a code is never split ("ATA.32-11" stays one token for BM25's exact match)
    assert expand("ALS or ALS", table)[0] == "ALS (amyotrophic lateral sclerosis) or ALS"
    code = {"ATA": "air transport association"}
    assert expand("ATA.32-11 limits", code) == ("ATA.32-11 limits", [])
    assert expand("ATA 32-11", code)[0] == "ATA (air transport association) 32-11"


class _Overlap:
    """A stand-in for a small dense model that knows none of the corpus's acronyms: it
    scores passages (title and text) by the query words they share, and records what it
    was asked."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks, self.asked = chunks, []

    def retrieve(self, query, k=5, filters=None):
        self.asked.append(query)
        words = set(query.lower().replace("(", " ").replace(")", " ").split())
        scored = []
        for c in self.chunks:
            shared = words & set(f"{c.title or ''} {c.text}".lower().rstrip(".").split())
            if shared:
                scored.append((len(shared) / len(words), c))
        scored.sort(key=lambda sc: -sc[0])
        return [Hit(c, {"dense": s}, {"dense": r}) for r, (s, c) in enumerate(scored[:k], 1)]

    def describe(self) -> str:
        return "dense"


def test_a_title_typed_with_its_acronym_finds_the_document_that_spells_it_out():
    from rag_app.retrieve import BM25Retriever, Corpus, HybridRetriever

    chunks = [
        Chunk(
            "als6",
            "als6.md",
            "A form of motor neuron disease.",
            title="Amyotrophic lateral sclerosis type 6",
        ),
        Chunk("intro", "intro.md", "Amyotrophic lateral sclerosis (ALS) affects neurons."),
        Chunk("groups", "groups.md", "ALS support: ALS groups meet weekly for ALS families."),
        Chunk("other", "other.md", "Type 6 collagen disorders of the skin.", title="Collagen"),
        *(Chunk(f"f{i}", f"f{i}.md", f"Unrelated page {i} about glaucoma.") for i in range(6)),
    ]
    corpus = Corpus(chunks, BM25Index.build(chunks))
    assert corpus.acronyms() == {"ALS": "amyotrophic lateral sclerosis"}
    rule = ExactMatchRule()
    served = FusionChoice("weighted", 0.8)

    dense = _Overlap(chunks)
    reading = HybridRetriever(BM25Retriever(corpus), dense, served, exact=rule, acronyms="append")
    assert reading.retrieve("ALS type 6", 2)[0].chunk.id == "als6"
    assert dense.asked == ["ALS (amyotrophic lateral sclerosis) type 6"]  # dense reads it too
    note = reading.fusion_note("ALS type 6")
    assert note.startswith("ALS read as “amyotrophic lateral sclerosis” (defined in the documents)")
    assert reading.read("ALS type 6")[1] == [note.split("; ")[0]]

    # BM25 alone: the acronym as typed misses the title's page, the reading finds it
    bm25 = BM25Retriever(corpus)
    assert bm25.retrieve("ALS type 6", 1)[0].chunk.id != "als6"
    assert bm25.retrieve(reading.read("ALS type 6")[0], 1)[0].chunk.id == "als6"
    plain = HybridRetriever(BM25Retriever(corpus), _Overlap(chunks), served, exact=rule)
    assert plain.read("ALS type 6") == ("ALS type 6", [])  # acronyms off
    assert "read as" not in plain.fusion_note("ALS type 6")


@pytest.mark.slow
def test_the_served_hybrid_reads_the_shipped_corpus_acronyms_and_clipped_words(shipped):
    """The shipped troubleshooting guide defines "generator control unit (GCU)"; the chat's
    retriever (settings' default) says it read it, and finds the guide; "acc" next to brake
    and nitrogen is the accumulator."""
    from rag_app.retrieve import build_retriever

    hybrid = build_retriever(shipped, mode="hybrid", rerank=False)
    query = "GCU reset after DC GEN caution"
    assert "GCU read as “generator control unit”" in hybrid.fusion_note(query)
    docs = [h.chunk.doc_id for h in hybrid.retrieve(query, 5)]
    assert "troubleshooting/ts-24-dc-generator-caution.md" in docs
    clipped = "green brake acc nitrogen pressure when it's 0 degrees out"
    assert "“acc” read as “accumulator”" in hybrid.fusion_note(clipped)
    off = shipped.model_copy(
        update={
            "retrieval": shipped.retrieval.model_copy(update={"acronyms": "off", "clipped": "off"})
        }
    )
    plain = build_retriever(off, mode="hybrid", rerank=False)
    assert "read as" not in plain.fusion_note(query) + plain.fusion_note(clipped)


def _clipped_corpus() -> tuple[list[Chunk], BM25Index]:
    texts = [
        "Brake accumulator nitrogen precharge: 130 bar at 20 degrees.",
        "Check the brake accumulator nitrogen pressure daily.",
        "Accept the part only with its release certificate.",
        "Access panels are opened with the panel key.",
        "Microcephaly is a small head.",
        "Microphthalmia is a small eye.",
        *(f"Unrelated page {i} about tyres and wheels." for i in range(6)),
    ]
    chunks = [Chunk(f"c{i}", f"c{i}.md", t) for i, t in enumerate(texts)]
    return chunks, BM25Index.build(chunks)


def test_a_clipped_word_is_read_as_the_word_that_fits_the_rest_of_the_query():
    chunks, index = _clipped_corpus()
    text = {c.id: c.text for c in chunks}
    vocabulary = Vocabulary(index, text.__getitem__)
    assert vocabulary.completions("acc") == ["accumul", "accept", "access"]  # BM25's stems
    assert vocabulary.spelling("accumul", "acc") == "accumulator"
    assert read_clipped("brake acc nitrogen pressure", vocabulary) == (
        "brake acc (accumulator) nitrogen pressure",
        [Reading("acc", "accumulator")],
    )
    # nothing else in the query to tell the completions apart: left alone
    assert read_clipped("acc", vocabulary) == ("acc", [])
    assert read_clipped("small micr", vocabulary) == ("small micr", [])  # a tie
    # a word BM25 knows, a stop word, capitals (an acronym's job): not clipped
    assert read_clipped("brake nitrogen", vocabulary)[1] == []
    assert read_clipped("the brake accumulator", vocabulary)[1] == []
    assert read_clipped("brake ACC nitrogen", vocabulary)[1] == []
    assert read_clipped("brake acc-12 nitrogen", vocabulary)[1] == []  # part of a code


def test_the_hybrid_reads_clipped_words_only_when_asked():
    from rag_app.retrieve import BM25Retriever, Corpus, HybridRetriever

    chunks, index = _clipped_corpus()
    corpus = Corpus(chunks, index)
    served = FusionChoice("weighted", 0.8)
    dense = _Overlap(chunks)
    on = HybridRetriever(BM25Retriever(corpus), dense, served, clipped="append")
    on.retrieve("brake acc nitrogen pressure", 2)
    assert dense.asked == ["brake acc (accumulator) nitrogen pressure"]
    assert "“acc” read as “accumulator”" in on.fusion_note("brake acc nitrogen pressure")
    off = HybridRetriever(BM25Retriever(corpus), _Overlap(chunks), served)
    assert off.read("brake acc nitrogen pressure") == ("brake acc nitrogen pressure", [])
