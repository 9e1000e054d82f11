"""The text side of the grounding proxy (`eval.grounding`): answer sentences, citation
markers, content words, numbers, negation, abstention, and SQuAD token F1.

Pure string functions, no model: `eval.grounding` scores with them and re-exports them.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from rag_app.answer import CITATION, parse_citations
from rag_app.ir import stopwords
from rag_app.text import CONTRACTED
from rag_app.text import split_sentences as text_sentences


def _wordlist(text: str) -> list[str]:
    return text.split()


# Negations stay content words here (see rag_app.ir.stopwords.GROUNDING).
STOP_WORDS = stopwords.GROUNDING
NEGATIONS = stopwords.NEGATIONS
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        _wordlist(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen twenty"
        )
    )
}
ABSTENTION_PATTERNS = re.compile(
    r"\b(i (do not|don't|cannot|can't) (know|answer|find)|no (relevant )?information"
    r"|(context|passages?|sources?|documents?) (does|do) not (say|mention|contain|provide)"
    r"|not (mentioned|covered|found) in the (context|passages?|sources?|documents?)"
    r"|unable to (answer|find))\b",
    re.IGNORECASE,
)
CITATION_RE = CITATION  # the product's grammar: [1], [1, 2], [1][3], [2-4], [1 and 2]
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")


# --- text utilities ------------------------------------------------------------------------
def split_sentences(text: str) -> list[str]:
    """The product's sentences of ``text`` (`rag_app.text.split_sentences`), without bullet
    markers: the proxy grades the sentences the product checked and cited."""
    out = []
    for piece in text_sentences(text or ""):
        piece = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", piece).strip()
        if piece:
            out.append(piece)
    return out


def citations_in(sentence: str) -> list[int]:
    """1-based passage numbers cited in ``sentence``, parsed exactly as the product parses
    them (`rag_app.answer.parse_citations`), so an answer served as cited is graded as cited."""
    return parse_citations(sentence, None)


def strip_citations(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", CITATION_RE.sub("", text)).strip()


def _stem(word: str) -> str:
    """A light, predictable stemmer: plural / tense / -ing endings, then a final "e"."""
    if len(word) <= 3:
        return word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("ing") and len(word) >= 6:
        word = word[:-3]
    elif (word.endswith("ed") and len(word) >= 5) or (
        word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh"))
    ):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def words(text: str) -> list[str]:
    return CONTRACTED.findall(text.lower().replace("’", "'"))


def content_words(text: str) -> set[str]:
    """Stemmed words that are not stop words, negations or pure numbers."""
    return {
        _stem(w)
        for w in words(text)
        if w not in STOP_WORDS and w not in NEGATIONS and not w.isdigit() and len(w) > 1
    }


def numbers_in(text: str) -> set[str]:
    found = {n.replace(",", "") for n in _NUMBER_RE.findall(text)}
    found.update(NUMBER_WORDS[w] for w in words(text) if w in NUMBER_WORDS)
    return found


def has_negation(text: str) -> bool:
    return any(w in NEGATIONS or w.endswith("n't") for w in words(text))


def is_abstention(text: str) -> bool:
    return bool(ABSTENTION_PATTERNS.search(text))


def _normalise_answer(text: str) -> list[str]:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 (lower-case, punctuation and articles removed)."""
    pred = _normalise_answer(strip_citations(prediction))
    ref = _normalise_answer(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)
