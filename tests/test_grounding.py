"""Offline grounding proxy on supported / unsupported sentence fixtures, with the real MiniLM."""

from __future__ import annotations

import pytest

from eval.grounding import (
    GroundingScorer,
    citations_in,
    content_words,
    llm_judge,
    nli_model_available,
    split_sentences,
    token_f1,
)

CONTEXT = [
    "Gout is a form of arthritis caused by too much uric acid in the blood. Uric acid crystals "
    "build up in a joint, most often the big toe, causing sudden attacks of intense pain, "
    "redness and swelling.",
    "To lower the risk of gout attacks, drink plenty of water, limit alcohol and sugary drinks, "
    "and eat less red meat and seafood, which are high in purines.",
    "Active tuberculosis is treated with several antibiotics, such as isoniazid and rifampin, "
    "taken for six to nine months.",
]

SUPPORTED = [
    "Gout is caused by excess uric acid in the blood.",
    "Gout most often affects the big toe.",
    "Drinking water helps prevent gout attacks.",
    "Eating less red meat and seafood lowers the risk of gout.",
    "Tuberculosis treatment takes six to nine months with antibiotics.",
    "Uric acid crystals in the joint cause painful gout attacks.",
]
UNSUPPORTED = [
    "Gout is caused by a virus spread by mosquitoes.",  # on topic, new facts
    "Gout usually affects the knees of children.",
    "The Eiffel Tower is in Paris.",  # off topic
    "Gout is treated with antibiotics for six months.",  # recombined from another passage
    "Gout is not caused by uric acid.",  # negation
    "Tuberculosis treatment takes two years.",  # number not in context
    "Tuberculosis is treated with insulin injections.",
]


@pytest.fixture(scope="module")
def scorer():
    return GroundingScorer()


@pytest.mark.parametrize("sentence", SUPPORTED)
def test_supported_sentences(scorer, sentence):
    scores = scorer.score("question?", sentence, CONTEXT)
    assert scores.n_claims == 1
    assert scores.faithfulness == 1.0, scores.sentences[0]


@pytest.mark.parametrize("sentence", UNSUPPORTED)
def test_unsupported_sentences(scorer, sentence):
    scores = scorer.score("question?", sentence, CONTEXT)
    assert scores.faithfulness == 0.0, scores.sentences[0]
    assert scores.sentences[0].reason


def test_reasons_name_the_rule(scorer):
    negated = scorer.score("q", "Gout is not caused by uric acid.", CONTEXT).sentences[0]
    assert negated.reason == "negation differs from context"
    number = scorer.score("q", "Tuberculosis treatment takes two years.", CONTEXT).sentences[0]
    assert number.reason == "number not in context"


def test_citation_precision_and_recall(scorer):
    answer = (
        "Gout is caused by excess uric acid in the blood [1]. "
        "Drinking water helps prevent gout attacks [1][2]. "
        "Gout is caused by a virus spread by mosquitoes [2]."
    )
    scores = scorer.score("What causes gout?", answer, CONTEXT)
    assert scores.n_claims == 3
    assert scores.faithfulness == pytest.approx(2 / 3)
    # citations: (s1,[1]) ok, (s2,[1]) no, (s2,[2]) ok, (s3,[2]) no
    assert scores.citation_precision == pytest.approx(2 / 4)
    # s1 and s2 cite a supporting passage; s3 does not
    assert scores.citation_recall == pytest.approx(2 / 3)
    # citing a passage that does not exist is wrong, and an uncited claim is not recalled
    bad = scorer.score("q", "Gout most often affects the big toe [7].", CONTEXT)
    assert bad.citation_precision == 0.0 and bad.citation_recall == 0.0
    uncited = scorer.score("q", "Gout most often affects the big toe.", CONTEXT)
    assert uncited.citation_precision is None and uncited.citation_recall == 0.0


def test_relevance_and_correctness(scorer):
    question = "What causes gout?"
    on_topic = scorer.score(question, "Gout is caused by too much uric acid.", CONTEXT)
    off_topic = scorer.score(question, "The Eiffel Tower is in Paris.", CONTEXT)
    assert on_topic.answer_relevance > off_topic.answer_relevance + 0.3
    reference = "Gout is caused by too much uric acid in the blood."
    good = scorer.score(
        question, "Too much uric acid in the blood causes gout.", CONTEXT, reference
    )
    bad = scorer.score(question, "Mosquitoes spread it.", CONTEXT, reference)
    assert good.correctness_f1 > 0.7 and bad.correctness_f1 == 0.0
    assert good.correctness_sim > bad.correctness_sim


def test_abstentions_and_non_claims(scorer):
    scores = scorer.score("q", "I don't know. The context does not say.", CONTEXT)
    assert scores.abstained and scores.n_claims == 0 and scores.faithfulness is None
    empty = scorer.score("q", "Gout is caused by uric acid.", [])
    assert empty.faithfulness == 0.0 and empty.sentences[0].reason == "no context"


def test_text_helpers():
    assert split_sentences("First one. Second [1]! 3 items\n- bullet") == [
        "First one.",
        "Second [1]!",
        "3 items",
        "bullet",
    ]
    assert citations_in("a [1] b [2, 3][1]") == [1, 2, 3]
    # the product's grammar (rag_app.answer.parse_citations): a range or "and" is cited too
    assert citations_in("torque 160 Nm [2-4]") == [2, 3, 4]
    assert citations_in("see [1 and 3]") == [1, 3]
    assert content_words("The causes of attacks") == {"caus", "attack"}
    assert token_f1("the uric acid", "uric acid") == 1.0
    assert token_f1("", "x") == 0.0
    assert nli_model_available() is None


class _StubJudge:
    """A judge whose replies drift between runs, as real ones do."""

    name = "stub"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    def generate(self, messages, *, max_new_tokens=None, temperature=None, stop=None):
        self.calls.append((messages, temperature))
        return self.replies.pop(0)


def test_llm_judge_mean_and_spread():
    judge = _StubJudge(["8", "Score: 6/10", "nonsense"])
    out = llm_judge("q", "a", CONTEXT, judge, runs=3)
    assert out["n"] == 2 and out["unparsed"] == 1
    assert out["mean"] == pytest.approx(0.7)
    assert out["std"] == pytest.approx(0.1414, abs=1e-3)
    assert "[1] Gout is a form" in judge.calls[0][0][0]["content"]
