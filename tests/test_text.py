"""One sentence splitter and one word family for product and eval (issue 29)."""

from __future__ import annotations

from eval.claim_text import citations_in
from eval.claim_text import split_sentences as graded_sentences
from rag_app.answer import attach_citations
from rag_app.text import sentence_spans, split_sentences, words


def test_sentences_split_where_a_reader_would():
    assert split_sentences("Set 5.5 bar, e.g. at No. 2 gauge. Then stop.") == [
        "Set 5.5 bar, e.g. at No. 2 gauge.",
        "Then stop.",
    ]
    assert split_sentences('He said "stop." Then left. the end continues.') == [
        'He said "stop."',
        "Then left. the end continues.",
    ]
    assert split_sentences("First line\n\n- an item\nSecond.") == [
        "First line",
        "- an item",
        "Second.",
    ]
    # capitals of other scripts start a sentence too
    assert split_sentences("Не оставляйте DI открытым. Сообщите в MCC до 16:00.") == [
        "Не оставляйте DI открытым.",
        "Сообщите в MCC до 16:00.",
    ]


def test_a_citation_after_the_full_stop_stays_with_its_sentence():
    text = "Torque the nut to 270 Nm. [2] Then back it off to 135 Nm [3]."
    assert split_sentences(text) == [
        "Torque the nut to 270 Nm. [2]",
        "Then back it off to 135 Nm [3].",
    ]
    # the eval grades the sentence as the product cited it
    assert [citations_in(s) for s in graded_sentences(text)] == [[2], [3]]


def test_spans_cover_the_text_with_only_whitespace_between():
    text = "  One sentence here.  Another one [1].\nA line\n"
    spans = sentence_spans(text)
    bounds = [0, *(x for span in spans for x in span), len(text)]
    between = [text[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds) - 1, 2)]
    assert [text[a:b] for a, b in spans] == ["One sentence here.", "Another one [1].", "A line"]
    assert all(not gap.strip() for gap in between)


def test_attached_citations_keep_the_text_around_them():
    passages = ["The main landing gear axle nut is torqued to 270 Nm then 135 Nm."]
    text = "Hello.\n\nThe axle nut is torqued to 270 Nm then 135 Nm.  Thanks for asking."
    assert attach_citations(text, passages) == (
        "Hello.\n\nThe axle nut is torqued to 270 Nm then 135 Nm [1].  Thanks for asking."
    )


def test_words_are_unicode():
    assert words("Überprüfung 72-61-009, São Paulo") == [
        "überprüfung",
        "72",
        "61",
        "009",
        "são",
        "paulo",
    ]
