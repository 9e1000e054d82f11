"""Sentences and words: the one splitter and the one tokeniser family, for product and eval.

The extractive answerer quotes sentences, the generative check judges each sentence, the
citation attacher cites them, and the eval's grounding proxy grades them: when these split
text differently, a sentence the product marks as supported is graded as another one (a
bug found in issue 29's review). Everything that needs sentences or words asks here.

- `sentence_spans` / `split_sentences`: a sentence ends after . ! ? (and a closing quote
  or bracket) before a capital (of any script), a digit or a caseless letter, and at a
  line break; not after an abbreviation
  ("e.g.", "No.", "approx."), not inside a decimal ("5.5 bar"), and not after a single
  word. A citation written after the full stop ("... 135 Nm. [2] Then ...") stays with
  the sentence it cites.
- `WORD` / `words`: runs of letters and digits in any script, lower-cased ("don't" is
  "don", "t"; "72-61-009" is "72", "61", "009"). `TOKEN` keeps joined parts together
  ("72-61-009", "5.5", "nw_tc"): BM25 indexes both, and the UI marks query tokens.
  `CONTRACTED` keeps "don't" and "isn't" whole, for the grounding proxy's negation check.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[^\W_]+")
TOKEN = re.compile(r"[^\W_]+(?:[-_./][^\W_]+)*")
CONTRACTED = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # "don't" whole: negation checks need it

_ABBREVIATIONS = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|approx|incl|no|nos|fig|ref|para|rev|max|min|vs|mr|mrs|dr|st|in|"
    r"cf|p|pp)\.)$",
    re.IGNORECASE,
)
_GAP = re.compile(
    # after . ! ?: an optional closing quote or bracket and citations, then the next
    # sentence's (optionally quoted) first letter or digit, which must not be lower case
    # (checked in `sentence_spans`: any script's capitals, and caseless scripts, start one)
    r"(?<=[.!?])(?P<tail>[\"'’”)\]]?(?:[ \t]*\[\d[^\]\n]{0,24}\])*)\s+(?=[\"'‘“(\[]?(?P<first>[^\W_]))"
    r"|[ \t]*\n\s*"  # or a line break
)


def words(text: str) -> list[str]:
    """The lower-cased words of `text` (`WORD`)."""
    return WORD.findall(text.lower())


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, in order, without surrounding whitespace;
    the text between spans is whitespace only."""
    spans: list[tuple[int, int]] = []
    start = 0

    def add(begin: int, end: int) -> None:
        piece = text[begin:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((begin + lead, begin + len(piece.rstrip())))

    for gap in _GAP.finditer(text):
        tail = gap.group("tail")
        if tail is not None and "\n" not in gap.group():  # a line break always splits
            head = text[start : gap.start()]
            first = gap.group("first")
            if first.islower() or _ABBREVIATIONS.search(head) or len(head.split()) < 2:
                continue
        add(start, gap.end("tail") if tail is not None else gap.start())
        start = gap.end()
    add(start, len(text))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (see the module docstring for where it splits)."""
    return [text[a:b] for a, b in sentence_spans(text)]
