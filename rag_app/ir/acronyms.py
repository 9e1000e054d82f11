"""Acronyms a corpus defines, so that a query typed with the acronym finds the documents that
spell the term out.

People type "ALS type 6", "OA 1 and deafness" or "MLG axle nut"; a document is titled
"Amyotrophic lateral sclerosis type 6" and defines the acronym once in its text
("amyotrophic lateral sclerosis (ALS)"), if at all. BM25 then matches the acronym only
where a passage repeats it, and a small dense model knows few of a domain's acronyms. On
the protocol's corpora the served hybrid fell significantly below BM25 alone on such
queries (docs/BENCHMARKS.md, "Jargon"). The corpus's own definitions are the dictionary:
no outside word list, nothing a model makes up.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rag_app.ir.stopwords import ENGLISH

# "(ALS)", "(MLG)": two to eight capitals in brackets, defined by the words before them
DEFINITION = re.compile(r"\(([A-Z]{2,8})\)")
LONG_WORD = re.compile(r"[A-Za-z][A-Za-z']*")  # hyphens split: "Emery-Dreifuss" is two words
LOOKBACK = 200  # characters before the bracket searched for the long form
# a query word read as an acronym: a whole token (`rag_app.text.TOKEN`: "ATA.32-11" is one,
# never split) typed in capitals. Not in lower case: "aids" in "hearing aids" is not AIDS,
# "chip" on a chip detector is not CHIP.
ACRONYM_TYPED = re.compile(r"[A-Z]{2,8}")


@dataclass(frozen=True)
class Expansion:
    acronym: str
    long_form: str


def long_form_before(text: str, acronym: str) -> str | None:
    """The words ending `text` whose initials spell `acronym` ("main landing gear" for MLG),
    skipping stop words between them ("Department of Defense" for DD); None: no such run.

    The run must end at the end of `text` (the word right before the bracket)."""
    words = list(LONG_WORD.finditer(text))
    if not words or text[words[-1].end() :].strip():
        return None
    needed = list(acronym.lower())
    start = None
    for word in reversed(words):
        if not needed:
            break
        w = word.group().lower()
        if w[0] == needed[-1]:
            needed.pop()
            start = word.start()
        elif w in ENGLISH and start is not None:
            continue  # "of" in "department of defense"
        else:
            return None
    if needed or start is None:
        return None
    return " ".join(text[start:].split()).lower()


def defined_acronyms(texts: Iterable[str]) -> dict[str, str]:
    """{acronym: long form} for every acronym the texts define as "long form (ACRONYM)".

    An acronym defined with more than one long form keeps the one given in most of its
    definitions; one with no majority (two meanings as often) is left out, since reading it
    either way would be a guess."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for text in texts:
        for match in DEFINITION.finditer(text):
            acronym = match.group(1)
            long = long_form_before(text[max(0, match.start() - LOOKBACK) : match.start()], acronym)
            if long:
                seen[acronym][long] += 1
    out = {}
    for acronym, forms in seen.items():
        (long, n), *_ = forms.most_common(1)
        if n * 2 > sum(forms.values()):
            out[acronym] = long
    return out


def expand(query: str, table: dict[str, str], mode: str = "append") -> tuple[str, list[Expansion]]:
    """`query` with each acronym the corpus defines (`table`, from `defined_acronyms`) read
    as its long form, and what was read.

    A whole token typed in capitals ("ALS"; not "ATA" of "ATA.32-11") counts, once; mode
    "append" keeps the acronym and adds the long form after it
    ("ALS (amyotrophic lateral sclerosis) type 6"), "replace" puts the long form in its
    place. A long form already in the query is not added again."""
    from rag_app.text import TOKEN

    found: list[Expansion] = []
    low_query = query.lower()

    def read(match: re.Match[str]) -> str:
        word = match.group()
        long = table.get(word) if ACRONYM_TYPED.fullmatch(word) else None
        if long is None or long in low_query or any(e.acronym == word for e in found):
            return word  # not an acronym, already spelled out, or read once already
        found.append(Expansion(word, long))
        return f"{word} ({long})" if mode == "append" else long

    text = TOKEN.sub(read, query)
    return (text, found) if found else (query, [])
