"""Which kind of answer the chat gives, and the two kinds: quoted evidence or a checked LLM answer.

`answer.mode` (settings):
- ``extractive``: the sentences that answer the question, quoted verbatim with their citation
  and document › section (`rag_app.extractive`); "not found" when the evidence is weak.
- ``generative``: the LLM writes the answer from the passages (`rag_app.answer`), then every
  sentence is checked against them: one no passage supports is marked (or dropped,
  `answer.unsupported = "drop"`), and a yes/no answer that the quoted evidence negates is
  flagged.
- ``auto`` (default): extractive when the generator is the bundled 135M model or no LLM is
  reachable (it cannot write answers: issue 27 measured none right of eight), generative
  for any other LLM (an OpenAI-compatible server, a larger GGUF).

Every answer says which mode wrote it and why (`Answer.mode`, `Answer.why`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag_app import prompts
from rag_app.answer import Answer, display_path, passage_source, support_of
from rag_app.extractive import ABSTAIN_BELOW, Quote, extract
from rag_app.text import split_sentences
from rag_app.types import Hit

if TYPE_CHECKING:
    from rag_app.config import Settings
    from rag_app.embedder import Embedder
    from rag_app.store.bm25 import BM25Index

MODES = ("auto", "extractive", "generative")
NOT_FOUND = "Not found in the documents."
UNSUPPORTED_MARK = " ⚠️ *(not found in the sources)*"
_NEGATION = re.compile(
    r"\b(?:not|never|no|none|nobody|nothing|cannot|can't|mustn't|shall not|prohibited|"
    r"forbidden|may not)\b",
    re.IGNORECASE,
)
_POLARITY = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_BULLET = re.compile(r"^[-*•+]\s+", re.MULTILINE)


def resolve_mode(settings: Settings, llm: object | None, llm_error: str | None) -> tuple[str, str]:
    """The mode that answers and the sentence that says why, from `answer.mode` and the LLM."""
    wanted = settings.answer.mode
    if wanted == "extractive":
        return "extractive", "quoted from the documents (answer.mode = extractive)"
    if wanted == "auto" and is_bundled_generator(settings):
        return "extractive", BUNDLED_REASON
    if llm is None:
        reason = llm_error or "no LLM configured (llm.backend = none)"
        return "extractive", f"quoted from the documents: {reason}"
    name = getattr(llm, "name", "the LLM")
    if wanted == "generative":
        return "generative", f"written by {name} (answer.mode = generative)"
    return "generative", f"written by {name}, checked against the sources"


BUNDLED_REASON = (
    "quoted from the documents: the bundled 135M model is too small to write answers "
    "(configure a larger LLM for generated answers: README, 'LLM backends')"
)


def needs_llm(settings: Settings) -> bool:
    """Whether answering may use the LLM at all (so the chat loads it only then)."""
    mode = settings.answer.mode
    return mode == "generative" or (mode == "auto" and not is_bundled_generator(settings))


def is_bundled_generator(settings: Settings) -> bool:
    """Whether the configured generator is the small model shipped for synthetic queries."""
    if settings.llm.backend not in ("embedded", "llamacpp"):
        return False
    from rag_app.models import ModelNotFoundError, resolve_generator

    try:
        return resolve_generator(settings.models.generator).kind == "bundled"
    except ModelNotFoundError:
        return False


def _cite_line(hit: Hit) -> str:
    chunk = hit.chunk
    where = " › ".join(display_path(chunk.title, chunk.heading_path))
    return f"{chunk.doc_id}" + (f" › {where}" if where else "")


def format_quotes(quotes: Sequence[Quote], hits: Sequence[Hit]) -> str:
    """The quotes as the chat shows them: each quote, its [n], and the document › section."""
    blocks = []
    for quote in quotes:
        n = quote.unit.passage
        source = _cite_line(hits[n - 1])
        text = quote.unit.text
        if "\n|" in text or text.startswith("|"):  # a table row under its header
            blocks.append(f"{text}\n\n[{n}] — *{source}*")
        else:  # a list item's bullet is layout, not words
            text = _BULLET.sub("", text)
            blocks.append(f"“{text}” [{n}]  \n— *{source}*")
    return "\n\n".join(blocks)


def extractive_answer(
    question: str,
    hits: Sequence[Hit],
    embedder: Embedder | None,
    index: BM25Index | None,
    *,
    why: str = "quoted from the documents",
    abstain_below: float = ABSTAIN_BELOW,
) -> Answer:
    """Quoted evidence for `question` from `hits`, or "not found" with the closest sources."""
    hits = list(hits)
    if not hits:
        return Answer(
            prompts.NO_PASSAGES_ANSWER, [], [], mode="extractive", why=why, abstained=True
        )
    quotes, _best = extract(question, hits, embedder, index, abstain_below=abstain_below)
    if not quotes:
        closest = ", ".join(f"[{n}] {passage_source(h)}" for n, h in enumerate(hits[:3], 1))
        text = f"{NOT_FOUND} The closest sources: {closest}."
        return Answer(text, [], hits, mode="extractive", why=why, abstained=True)
    citations = list(dict.fromkeys(q.unit.passage for q in quotes))
    return Answer(
        format_quotes(quotes, hits), citations, hits, mode="extractive", why=why, quotes=quotes
    )


def polarity(text: str) -> str | None:
    """ "yes" / "no" when `text` opens with it, else None."""
    match = _POLARITY.match(text)
    return match.group(1).lower() if match else None


def check_generated(
    answer: Answer,
    question: str,
    embedder: Embedder | None,
    index: BM25Index | None,
    *,
    drop_unsupported: bool = False,
) -> Answer:
    """`answer` (generated) with each sentence no passage supports marked or dropped, and
    a flag when it opens with "Yes" while the best evidence sentence is a negation (or
    "No" while it is not one)."""
    if not answer.hits or answer.error:
        return answer
    passages = [h.chunk.text for h in answer.hits]
    sentences = split_sentences(answer.text)
    support = support_of(sentences, passages)
    kept: list[str] = []
    flags: list[str] = []
    unsupported = 0
    for sentence, source in zip(sentences, support, strict=True):
        if source or len(sentence.split()) < 3:
            kept.append(sentence)
            continue
        unsupported += 1
        if not drop_unsupported:
            kept.append(sentence + UNSUPPORTED_MARK)
    if unsupported:
        verb = "dropped" if drop_unsupported else "marked"
        flags.append(f"{unsupported} sentence(s) no source supports ({verb})")
    said = polarity(answer.text)
    if said:
        quotes, _ = extract(question, answer.hits, embedder, index, abstain_below=0.0)
        if quotes:
            negated = bool(_NEGATION.search(quotes[0].unit.core))
            if (said == "yes") == negated:
                flags.append(
                    f"the answer says “{said.capitalize()}” but the closest evidence "
                    f"[{quotes[0].unit.passage}] reads “{quotes[0].unit.core}”: check it"
                )
    text = " ".join(kept) if kept else answer.text
    return Answer(
        text,
        answer.citations,
        answer.hits,
        mode=answer.mode,
        why=answer.why,
        flags=flags,
    )
