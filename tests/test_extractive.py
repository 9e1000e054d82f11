"""Extractive answers, answer modes and answer correctness metrics (issue 27)."""

from __future__ import annotations

import pytest
from _llm_helpers import make_hit, tool_hits

from eval.answer_quality import answer_body, key_facts, score_answer, token_f1
from rag_app.answer import Answer
from rag_app.answer_modes import NOT_FOUND, check_generated, extractive_answer, resolve_mode
from rag_app.extractive import units_of
from rag_app.llm.base import LLMError
from rag_app.text import split_sentences

PROCEDURE = """# 5. Procedure

Jack the axle until the tyre is 25 mm clear, e.g. with the NT-3211 jack. Remove the nut.

Torque the axle nut in two stages:

- seat at 270 Nm while rotating the wheel
- final 135 Nm, never back off

| Tyre | Pressure |
| --- | --- |
| Main | 8.6 bar (125 psi) |
| Nose | 5.5 bar (80 psi) |
"""


def test_units_keep_decimals_abbreviations_list_lead_ins_and_table_headers():
    assert split_sentences("Set 5.5 bar, e.g. at No. 2 gauge. Then stop.") == [
        "Set 5.5 bar, e.g. at No. 2 gauge.",
        "Then stop.",
    ]
    units = {u.text for u in units_of(PROCEDURE, 1)}
    assert "Torque the axle nut in two stages:\n- seat at 270 Nm while rotating the wheel" in units
    assert (
        "Torque the axle nut in two stages:\n- seat at 270 Nm while rotating the wheel\n"
        "- final 135 Nm, never back off" in units
    )
    assert "| Tyre | Pressure |\n|---|---|\n| Nose | 5.5 bar (80 psi) |" in units
    assert not any(u.endswith(":") for u in units)  # a bare lead-in answers nothing
    assert not any(u.startswith("#") for u in units)


def test_the_quoted_unit_answers_and_carries_its_citation_and_source():
    hits = [make_hit(1, "tc/wheel.md", PROCEDURE, "NW-TC-32-411 Wheel change", "5. Procedure")]
    hits += tool_hits()[:2]
    answer = extractive_answer("nose tyre pressure psi", hits, None, None, abstain_below=0.1)
    assert answer.mode == "extractive" and not answer.abstained
    assert "5.5 bar (80 psi)" in answer.text and "[1]" in answer.text
    assert "NW-TC-32-411 Wheel change › 5. Procedure" in answer.text
    assert answer.citations == [1]
    assert len(answer_body(answer).split()) <= 80


def test_weak_evidence_abstains_with_the_closest_sources_and_no_hits_says_so():
    answer = extractive_answer("symptoms of type 2 diabetes", tool_hits(), None, None)
    assert answer.abstained and answer.text.startswith(NOT_FOUND)
    assert "[1] tools/torque-wrench.md" in answer.text and not answer.quotes
    empty = extractive_answer("anything", [], None, None)
    assert empty.abstained and not empty.citations


class _Llm:
    name = "openai:big-model"


def test_auto_quotes_with_the_bundled_model_or_no_llm_and_generates_otherwise(settings_factory):
    settings = settings_factory()  # embedded backend, bundled SmolLM2
    mode, why = resolve_mode(settings, object(), None)
    assert mode == "extractive" and "135M" in why
    remote = settings_factory(llm={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    mode, why = resolve_mode(remote, None, "LLM not available (boom)")
    assert mode == "extractive" and "boom" in why
    assert resolve_mode(remote, _Llm(), None)[0] == "generative"
    forced = settings_factory(answer={"mode": "extractive"})
    assert resolve_mode(forced, _Llm(), None)[0] == "extractive"


def test_generated_sentences_are_checked_and_a_contradicted_yes_is_flagged():
    hits = [
        make_hit(
            1,
            "p/defer.md",
            "An open DI task may not be left overnight at ST-GRY. Tell MCC by 16:00.",
        ),
    ]
    generated = Answer(
        "Yes, you can leave it overnight at GRY [1]. The moon is made of green cheese today. "
        "Tell MCC about the open DI by 16:00.",
        [1],
        hits,
        mode="generative",
    )
    checked = check_generated(generated, "can we leave a DI open overnight at GRY", None, None)
    assert "green cheese today. ⚠️" in checked.text
    # each sentence is judged on its own: the supported one after it stays unmarked
    assert checked.text.endswith("Tell MCC about the open DI by 16:00.")
    assert checked.flags[0].startswith("1 sentence(s)")
    assert any("unsupported" in f or "no source supports" in f for f in checked.flags)
    assert any("“Yes”" in f and "may not be left overnight" in f for f in checked.flags)
    dropped = check_generated(generated, "q", None, None, drop_unsupported=True)
    assert "cheese" not in dropped.text


def test_an_llm_that_fails_gives_way_to_quoted_evidence(settings_factory, monkeypatch):
    from rag_app.chat import ChatService

    settings = settings_factory(llm={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    service = ChatService(settings)

    class Down:
        name = "openai:down"
        context_window = 2048

        def stream(self, messages, **kwargs):
            raise LLMError("connection refused")
            yield ""  # pragma: no cover

    monkeypatch.setattr(service, "llm", lambda: Down())
    monkeypatch.setattr(service, "embedder_for", lambda *a, **k: None)
    monkeypatch.setattr("rag_app.retrieve.load_corpus", lambda s: type("C", (), {"bm25": None})())
    hits = [make_hit(1, "tc/wheel.md", PROCEDURE, "Wheel change")]
    final = list(service.answer_turn("main tyre pressure", hits))[-1]
    assert final.mode == "extractive" and "connection refused" in final.why
    assert "8.6 bar" in final.text


def test_key_facts_recall_f1_and_polarity():
    ref = "No. SB 72-54-015 covers MSN 0436 to 0449; max 160 Nm."
    # "72" of the SB number is the code's, not a quantity; "0436" reads as the number 436
    assert key_facts(ref) == ["polarity:no", "code:72-54-015", "num:436", "num:449", "num:160"]
    good = score_answer(
        "No. Only MSN 0436 to 0449 (SB 72-54-015), at most 160 Nm.", ref, abstained=False
    )
    assert good.key_fact_recall == 1.0 and not good.polarity_error
    wrong = score_answer("Yes, it is affected.", ref, abstained=False)
    assert wrong.polarity_error and wrong.key_fact_recall == 0.0
    assert token_f1("the torque is 160 Nm [1]", "160 Nm torque") == pytest.approx(0.75)


@pytest.mark.slow
def test_shipped_corpus_questions_are_answered_with_their_facts(shipped):
    from rag_app.chat import BASELINE, ChatService, RetrieverChoice

    service = ChatService(shipped)
    choice = RetrieverChoice.of(BASELINE, "hybrid", False)
    for question, fact in [
        ("Which aircraft are affected by SB 72-61-009?", "SB 72-61-009"),
        ("main tyre pressure psi", "125 psi"),
    ]:
        hits = service.search(question, choice)
        final = list(service.answer_turn(question, hits, choice=choice))[-1]
        assert final.mode == "extractive" and not final.abstained, final.text
        assert final.quotes and final.citations
        assert fact in final.text or fact in hits[0].chunk.title, (question, final.text)
    off = "What are the symptoms of glaucoma?"
    final = list(service.answer_turn(off, service.search(off, choice)))[-1]
    assert final.abstained and final.text.startswith(NOT_FOUND)
