"""The one stop-word list, and the set each use derives from it.

`ENGLISH` is the base: a standard English list (articles, pronouns, auxiliaries,
prepositions, conjunctions, and the contraction fragments "s", "t", "ll", ...), exactly
what the BM25 tokenizer drops. BM25 indexes are persisted, so `ENGLISH` never changes
without bumping `rag_app.store.bm25.TOKENIZER_VERSION`; a test pins its size and hash.

The named additions below are small and documented; every use states in one line which of
them it adds or removes, and why:

- `BM25`: the tokenizer (`rag_app.store.bm25`);
- `ATTRIBUTION`: which passage an answer sentence comes from (`rag_app.answer`);
- `GROUNDING`: claim words checked against the passages (`eval.claim_text`, for
  `eval.grounding`);
- `REPETITION`: words not counted when a synthetic query repeats itself
  (`finetune.query_filters`);
- `KEYWORDS`: words never chosen as a structural query's keyword (`finetune.structural`);
- `QUESTION_START`: not stop words but the words a question starts with
  (`rag_app.store.bm25.is_question`).
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH = _words(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves s t d ll m o re ve y"""
)
# Hedging and modal words ENGLISH lacks: they qualify a statement, never name its subject.
HEDGES = _words("also may might must shall")
# Negation words: stop words for keyword choice, but content for grounding, where a claim
# and its passage must agree on negation ("not", "no" and "nor" are also in ENGLISH).
NEGATIONS = _words(
    "not no never none nobody nothing neither nor without cannot can't don't doesn't didn't "
    "isn't aren't wasn't weren't won't shouldn't wouldn't couldn't"
)
# Words of scope or rate ENGLISH lacks. Function words for keyword choice; grounding keeps
# them as content: dropping "within"/"every"/"per" made claims overlap more with the wrong
# passages on MedQuAD ("within 4 hours", "one person per 5,000").
SCOPE = _words("every per via within")
# Words encyclopaedic prose uses everywhere without saying what a claim is about: vague
# quantity and frequency, "called", and "us" (ENGLISH has "we" but not "us").
VAGUE = _words("many much often usually one ones called us")
# Words a question starts with (interrogatives and the auxiliaries of yes/no questions): a
# query starting with one is asked, not typed as keywords (`rag_app.store.bm25.is_question`).
QUESTION_START = _words(
    "what how which who whom whose when where why is are was were can could do does did "
    "should shall will would may might must has have had"
)

# --- the sets each use reads ---------------------------------------------------------------
# Persisted indexes depend on it: exactly the base list.
BM25 = ENGLISH
# Hedges add no content to a sentence being matched to a passage.
ATTRIBUTION = ENGLISH | HEDGES
# Negations are content here (negation must agree); vague words are not evidence of support.
GROUNDING = (ENGLISH | HEDGES | VAGUE) - NEGATIONS
# A query repeating "what ... what ... may ... may" is not repeating its content.
REPETITION = ENGLISH | HEDGES
# A keyword must name an aspect of the passage; negations and scope words never do.
KEYWORDS = ENGLISH | HEDGES | SCOPE | NEGATIONS
