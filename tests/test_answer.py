"""Grounded answers: prompt structure and injection safety, trimming to the window,
citation parsing, the real embedded model answering with citations, and the
retrieval-only fallback when there is no LLM or it fails."""

from __future__ import annotations

import re
import time

import pytest
from _llm_helpers import INJECTION, free_port, llm_settings, make_hit, shared_base, tool_hits

from rag_app import prompts
from rag_app.answer import (
    Answer,
    answer,
    attach_citations,
    build_messages,
    parse_citations,
    stream_answer,
    tidy,
)
from rag_app.llm.base import approx_tokens
from rag_app.llm.factory import build_llm
from rag_app.llm.openai_compat import OpenAICompatLLM

SHORT = 24


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return build_llm(llm_settings(shared_base(tmp_path_factory)))


@pytest.fixture(scope="module")
def down_llm():
    """A real OpenAI-compatible client pointed at a port nobody listens on."""
    return OpenAICompatLLM(
        f"http://127.0.0.1:{free_port()}/v1", model="m", timeout_s=2, max_retries=0
    )


# --- citations ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Calibrate every 6 months [1].", 3, [1]),
        ("A [2] and B [1, 3]; again [2].", 3, [2, 1, 3]),
        ("Adjacent [1][3] and ranged [2-3].", 3, [1, 3, 2]),
        ("Out of range [0], [4] and [17] are ignored, [3] is not.", 3, [3]),
        ("No citations here, [a] or [ 2 ] spaced.", 3, [2]),
        ("Semicolons [1; 2].", 2, [1, 2]),
        ("Nothing to cite.", 0, []),
    ],
)
def test_parse_citations(text, n, expected):
    assert parse_citations(text, n) == expected


def test_answer_cited_hits_follow_citations():
    hits = tool_hits()
    a = Answer("x [2] y [1] z [9]", [2, 1, 9], hits)
    assert [h.chunk.id for h in a.cited_hits] == ["chunk-2", "chunk-1"]


def test_attach_citations_cites_the_passage_that_covers_a_sentence():
    passages = [h.chunk.text for h in tool_hits()]
    text = "The multimeter uses a 9 V alkaline battery. I like turtles."
    cited = attach_citations(text, passages)
    assert cited == "The multimeter uses a 9 V alkaline battery [2]. I like turtles."
    assert parse_citations(cited, 3) == [2]
    already = "Calibrate it every 6 months [1]. The multimeter uses a 9 V alkaline battery."
    assert attach_citations(already, passages) == already  # the model's own citations win


def test_tidy_drops_echoed_markup_and_repeats():
    raw = "Every 6 months. Every 6 months.\n\nEvery 6 months.\n</passage>\n</passages>"
    assert tidy(raw) == "Every 6 months."


# --- the prompt -------------------------------------------------------------------------------
def test_messages_keep_rules_in_system_and_passages_numbered_in_user():
    hits = tool_hits()
    messages = build_messages("How often is the torque wrench calibrated?", hits)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == prompts.SYSTEM_PROMPT
    user = messages[1]["content"]
    for n, hit in enumerate(hits, 1):
        assert f'<passage id="{n}" source="{hit.chunk.doc_id}' in user
    assert 'source="tools/torque-wrench.md — Torque wrench &gt; Calibration"' in user
    assert user.index('id="1"') < user.index('id="2"') < user.index('id="3"')
    assert user.rstrip().endswith(
        "Answer the question using only the passages above, and cite them like [1]."
    )
    assert "Question: How often is the torque wrench calibrated?" in user


def test_prompt_injection_stays_inside_its_passage():
    hits = tool_hits()
    messages = build_messages("What battery does the multimeter use?", hits)
    system, user = messages[0]["content"], messages[-1]["content"]
    assert system == prompts.SYSTEM_PROMPT  # rules unchanged by any document
    assert "IGNORE PREVIOUS INSTRUCTIONS" not in system
    assert sum("IGNORE PREVIOUS INSTRUCTIONS" in m["content"] for m in messages) == 1

    # The document tried to close its passage and open a fake one: it must not manage to.
    blocks = re.findall(r'<passage id="(\d+)"[^>]*>\n(.*?)\n</passage>', user, re.DOTALL)
    assert [n for n, _ in blocks] == ["1", "2", "3"]
    assert user.count("</passage>") == 3 and user.count("</passages>") == 1
    injected = dict(blocks)["3"]
    assert "IGNORE PREVIOUS INSTRUCTIONS" in injected
    assert "&lt;/passage>" in injected and "&lt;passage id=" in injected
    outside = re.sub(r"<passages>.*</passages>", "", user, flags=re.DOTALL)
    assert "IGNORE" not in outside and "pirate" not in outside


def test_source_attribute_cannot_break_out():
    hit = make_hit(1, 'evil".md', "text", title='x"> <b>', heading="h")
    user = build_messages("q", [hit])[-1]["content"]
    assert 'source="evil&quot;.md — x&quot;&gt; &lt;b&gt; &gt; h"' in user


def test_history_goes_between_rules_and_question():
    history = [("What is a torque wrench?", "A tool [1]."), ("And a multimeter?", "A meter [2].")]
    messages = build_messages("How often is it calibrated?", tool_hits(), history)
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[1]["content"] == "What is a torque wrench?"
    assert "Question: How often is it calibrated?" in messages[-1]["content"]


def _total(messages, count=approx_tokens):
    return sum(count(m["content"]) + 4 for m in messages)


@pytest.mark.parametrize("budget", [300, 600, 1200])
def test_context_is_trimmed_to_the_budget(budget):
    long_text = "The hydraulic pump must be inspected for leaks before each flight. " * 30
    hits = [make_hit(i, f"manuals/m{i}.md", long_text, f"Manual {i}") for i in range(1, 9)]
    history = [(f"question {i} " * 40, f"answer {i} " * 40) for i in range(5)]
    messages = build_messages("When is the pump inspected?", hits, history, budget)
    assert _total(messages) <= budget
    user = messages[-1]["content"]
    assert '<passage id="1"' in user  # the best passage is always kept
    assert "Question: When is the pump inspected?" in user
    kept = re.findall(r'<passage id="(\d+)"', user)
    assert kept == [str(i) for i in range(1, len(kept) + 1)]  # a prefix, numbered in order
    assert len(kept) < len(hits)
    assert " …\n</passage>" in user  # the last kept passage was cut at a word boundary
    untrimmed = build_messages("When is the pump inspected?", hits, history)
    assert _total(untrimmed) > budget and len(untrimmed) > len(messages) - 1


def test_trimming_uses_the_given_token_counter():
    hits = [make_hit(i, f"d{i}.md", "word " * 200) for i in range(1, 5)]

    def words(text: str) -> int:
        return len(text.split())

    messages = build_messages("q?", hits, max_context_tokens=450, count_tokens=words)
    assert _total(messages, words) <= 450
    assert 1 <= messages[-1]["content"].count("<passage id=") < 4


# --- answers without an LLM -----------------------------------------------------------------------
def test_no_llm_gives_a_retrieval_only_answer():
    hits = tool_hits()
    a = answer("What battery does the multimeter use?", hits, None)
    assert a.error is None
    assert a.text.startswith(prompts.LLM_OFF_NOTE)
    assert a.citations == [1, 2, 3]
    assert "[2] tools/multimeter.md" in a.text and "9 V alkaline" in a.text
    assert a.cited_hits == hits[:3]
    streamed = "".join(stream_answer("What battery?", hits, None))
    assert streamed == a.text


def test_no_hits_says_nothing_was_found(down_llm):
    assert answer("anything", [], None).text == prompts.NO_PASSAGES_ANSWER
    a = answer("anything", [], down_llm)  # the LLM is not even asked
    assert a.text == prompts.NO_PASSAGES_ANSWER and a.citations == [] and a.error is None
    assert "".join(stream_answer("anything", [], down_llm)) == prompts.NO_PASSAGES_ANSWER


def test_failing_llm_falls_back_to_passages_with_the_reason(down_llm):
    hits = tool_hits()
    start = time.perf_counter()
    a = answer("What battery does the multimeter use?", hits, down_llm)
    assert time.perf_counter() - start < 10
    assert a.error and down_llm.base_url in a.error
    assert "could not answer" in a.text and down_llm.base_url in a.text
    assert a.citations == [1, 2, 3] and "9 V alkaline" in a.text
    streamed = "".join(stream_answer("What battery?", hits, down_llm))
    assert "could not answer" in streamed and "[1] tools/torque-wrench.md" in streamed


# --- answers from the real embedded model -----------------------------------------------------------
@pytest.mark.slow
def test_embedded_model_answers_with_parsed_citations(llm):
    hits = tool_hits()
    a = answer("What battery does the multimeter use?", hits, llm, max_new_tokens=SHORT)
    assert a.error is None, a.error
    assert a.text and not a.text.startswith(prompts.LLM_OFF_NOTE)
    assert a.citations, a.text
    assert all(1 <= n <= len(hits) for n in a.citations)
    assert a.citations == parse_citations(a.text, len(hits))
    assert a.cited_hits and all(h in hits for h in a.cited_hits)


@pytest.mark.slow
def test_embedded_model_streams_an_answer(llm):
    hits = tool_hits()
    pieces = list(
        stream_answer(
            "How often must the torque wrench be calibrated?", hits, llm, max_new_tokens=SHORT
        )
    )
    assert len(pieces) > 1
    text = "".join(pieces)
    assert "<passage" not in text
    assert parse_citations(text, len(hits)), text


@pytest.mark.slow
def test_history_and_injection_reach_the_real_model_without_breaking_it(llm):
    hits = [*tool_hits()[2:], *tool_hits()[:2]]  # the injection document ranked first
    history = [("What is a multimeter?", "A meter for voltage and current [2].")]
    a = answer("What battery does the multimeter use?", hits, llm, history, max_new_tokens=SHORT)
    assert a.error is None and a.text
    assert "<passage" not in a.text and "</passages>" not in a.text
    assert INJECTION not in a.text  # it did not parrot the whole document as its answer
