"""Answer correctness against reference answers: key facts, token F1, polarity, abstention.

The grounding proxy (`eval.grounding`) asks whether an answer is *supported* by the
passages; it rated wrong answers 0.53 faithful (issue 27). These metrics ask whether it is
*right*, against a reference answer:

- **key-fact recall**: the reference's numbers ("270 Nm" -> 270), identifiers
  ("SB 72-54-015", "NW-F-163") and yes/no found in the answer. A yes/no counts as found only
  when the answer states it ("No." / "Yes,"); a quote that merely contains "not" does not.
- **token F1** (SQuAD style) between answer and reference words.
- **polarity error**: the answer opens with the opposite of a yes/no reference.
- **abstained**: the answer said "not found".

Scored on the answer's *body* only: quoted text for extractive answers, generated text
without citation markers and check notes for generative ones, so the source lines under a
quote (which name documents and codes) cannot buy recall.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from rag_app.answer import CITATION
from rag_app.answer_modes import polarity
from rag_app.text import words as text_words

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")
_CODE = re.compile(r"\b[A-Z0-9]*\d[A-Z0-9]*(?:[-/][A-Z0-9]+)+\b|\b[A-Z]+[-/]?\d+[A-Z0-9]*\b")


def _number(text: str) -> str:
    return text.replace(",", ".").lstrip("0") or "0"


def key_facts(reference: str) -> list[str]:
    """The facts an answer must carry: "num:270", "code:sb 72-54-015"-like, "polarity:no"."""
    facts: list[str] = []
    said = polarity(reference)
    if said:
        facts.append(f"polarity:{said}")
    codes = [c for c in _CODE.findall(reference) if any(ch.isdigit() for ch in c)]
    for code in codes:
        facts.append(f"code:{code.lower()}")
    inside_codes = " ".join(codes)
    for number in _NUMBER.findall(reference):
        if number in inside_codes:  # "72" of "SB 72-54-015" is the code's, not a quantity
            continue
        facts.append(f"num:{_number(number)}")
    return list(dict.fromkeys(facts))


def fact_found(fact: str, answer: str) -> bool:
    kind, _, value = fact.partition(":")
    if kind == "polarity":
        return polarity(answer) == value
    if kind == "code":
        return value in answer.lower()
    return value in {_number(n) for n in _NUMBER.findall(answer)}


def words(text: str) -> list[str]:
    return text_words(CITATION.sub(" ", text))


def token_f1(answer: str, reference: str) -> float:
    a, r = Counter(words(answer)), Counter(words(reference))
    common = sum((a & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class AnswerScore:
    key_fact_recall: float | None  # None: the reference has no key facts
    token_f1: float
    polarity_error: bool
    abstained: bool
    words: int


def score_answer(body: str, reference: str, *, abstained: bool) -> AnswerScore:
    """`body` (the answer without its source lines) against `reference`."""
    facts = key_facts(reference)
    recall = sum(fact_found(f, body) for f in facts) / len(facts) if facts else None
    expected, said = polarity(reference), polarity(body)
    error = bool(expected and said and expected != said)
    return AnswerScore(recall, token_f1(body, reference), error, abstained, len(words(body)))


def answer_body(answer) -> str:
    """What the answer itself says: the quoted units of an extractive answer, the generated
    text without citation markers and check marks otherwise (see the module docstring)."""
    if getattr(answer, "abstained", False):
        return ""
    if getattr(answer, "mode", "") == "extractive":
        return "\n".join(q.unit.text for q in answer.quotes)
    text = CITATION.sub("", answer.text)
    return text.replace("⚠️ *(not found in the sources)*", "")
