"""Grounded answers: numbered passages in, an answer citing them as [1], [2] out.

`build_messages` puts the rules in the system message and the passages, numbered and
delimited, in the user message, trimmed by tokens to the model's window. `answer` and
`stream_answer` never raise for LLM trouble: with no LLM, or one that fails, they return the
top passages as an extractive answer with a note saying why, so the chat stays usable.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rag_app import prompts
from rag_app.extractive import Quote
from rag_app.ir import stopwords
from rag_app.llm.base import LLM, LLMError, Message, approx_tokens
from rag_app.text import sentence_spans, split_sentences, words
from rag_app.types import Hit

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators the chat template adds per message
MIN_PASSAGE_TOKENS = 32  # a passage cut shorter than this is dropped instead
HISTORY_SHARE = 0.25  # at most this share of the prompt budget goes to earlier turns
MAX_HISTORY_TURNS = 3
EXTRACTIVE_PASSAGES = 3
EXTRACTIVE_CHARS = 300

CountTokens = Callable[[str], int]


@dataclass
class Answer:
    """An answer, the passage numbers it cites (1-based into `hits`), and its passages.

    `error` says why the LLM was not used when the answer is retrieval-only because the LLM
    failed; it is None for LLM answers and when the LLM is simply switched off.
    """

    text: str
    citations: list[int]
    hits: list[Hit]
    error: str | None = None
    mode: str = "generative"  # "extractive", "generative" or "none" (nothing retrieved)
    why: str = ""  # why this mode answered, shown under the answer
    quotes: list[Quote] = field(default_factory=list)  # extractive: the units quoted
    abstained: bool = False  # the evidence was too weak to answer
    flags: list[str] = field(default_factory=list)  # checks a generated answer failed

    @property
    def cited_hits(self) -> list[Hit]:
        return [self.hits[i - 1] for i in self.citations if 0 < i <= len(self.hits)]


# --- citations ------------------------------------------------------------------------------
# The one citation grammar: the product serves it and the eval grades it (eval.claim_text).
CITATION = re.compile(r"\[\s*(\d+(?:\s*(?:[,;]|[-–]|and)\s*\d+)*)\s*\]")


def parse_citations(text: str, n_passages: int | None) -> list[int]:
    """Passage numbers cited as [1], [1, 2], [1][3], [2-4] or [1 and 2], in order of first
    mention. Numbers outside 1..n_passages (the model inventing a passage) are ignored;
    `n_passages=None` keeps every number (for graders that check ranges themselves)."""
    found: list[int] = []
    for match in CITATION.finditer(text):
        for part in re.split(r"\s*(?:[,;]|and)\s*", match.group(1)):
            bounds = [int(x) for x in re.split(r"\s*[-–]\s*", part) if x.strip().isdigit()]
            if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] <= 20:
                numbers = list(range(bounds[0], bounds[1] + 1))
            else:
                numbers = bounds[:1]
            for n in numbers:
                if 1 <= n <= (n_passages or n) and n not in found:
                    found.append(n)
    return found


def _content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in stopwords.ATTRIBUTION and len(w) > 1}


def attribute_sentences(text: str, passages: list[str], min_overlap: float = 0.5) -> list[int]:
    """For each sentence of `text` (`rag_app.text.split_sentences`), the passage (1-based)
    that best covers its content words, or 0 when none covers at least `min_overlap` of
    them (too little to call it support)."""
    return support_of(split_sentences(text), passages, min_overlap)


def support_of(sentences: list[str], passages: list[str], min_overlap: float = 0.5) -> list[int]:
    """For each of `sentences`, as `attribute_sentences` judges one."""
    vocab = [_content_words(p) for p in passages]
    found: list[int] = []
    for sentence in sentences:
        words = _content_words(sentence)
        if len(words) < 2 or not vocab:
            found.append(0)
            continue
        share = [len(words & v) / len(words) for v in vocab]
        best = max(range(len(share)), key=share.__getitem__)
        found.append(best + 1 if share[best] >= min_overlap else 0)
    return found


def attach_citations(text: str, passages: list[str], min_overlap: float = 0.5) -> str:
    """Add [n] to sentences that carry none, citing the passage that covers them best.

    Small models often answer from the passages but forget to cite; this attributes each
    sentence by content-word overlap, so citations point at real support. Sentences no
    passage covers (including "I don't know") stay uncited. Text that already cites a
    passage is returned unchanged.
    """
    if parse_citations(text, len(passages)):
        return text
    spans = sentence_spans(text)
    sources = support_of([text[a:b] for a, b in spans], passages, min_overlap)
    out: list[str] = []
    done = 0
    for (start, end), n in zip(spans, sources, strict=True):
        body = text[start:end]
        if n:
            stripped = body.rstrip(".!?")
            body = f"{stripped} [{n}]{body[len(stripped) :]}"
        out.append(text[done:start] + body)
        done = end
    return "".join(out) + text[done:]


def tidy(text: str) -> str:
    """Drop echoed prompt markup and repeated sentences, which small models produce."""
    from rag_app.llm.base import cut_at_stop

    text = cut_at_stop(text, prompts.ANSWER_STOP).strip()
    seen: set[str] = set()
    kept: list[str] = []
    for line in text.splitlines():
        sentences = []
        for sentence in split_sentences(line):
            key = " ".join(sentence.lower().split())
            if key and key in seen:
                continue
            seen.add(key)
            sentences.append(sentence)
        kept.append(" ".join(sentences))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


# --- the prompt ---------------------------------------------------------------------------
_TAG = re.compile(r"<(/?\s*passages?\b)", re.IGNORECASE)


def _quote(text: str) -> str:
    """Passage text with our delimiter tags neutralised, so it cannot close its passage."""
    return _TAG.sub(r"&lt;\1", text.strip())


def display_path(title: str, heading_path: str) -> list[str]:
    """Title, then the heading path without its first heading when that is the document's
    H1 restating the title ("SB 72-54-015 Upper ... (Late Production)"), for people to read."""
    parts = [p.strip() for p in heading_path.replace("›", ">").split(">") if p.strip()]
    if parts and title:
        first, head = parts[0].lower(), title.lower()
        if (
            head.startswith(first)
            or first.startswith(head)
            or first.split()[:3] == head.split()[:3]
        ):
            parts = parts[1:]
    return [p for p in [title, *parts] if p]


def passage_source(hit: Hit) -> str:
    chunk = hit.chunk
    where = " > ".join(p for p in (chunk.title, chunk.heading_path) if p)
    page = chunk.metadata.get("page") if isinstance(chunk.metadata, dict) else None
    source = chunk.doc_id + (f", p. {page}" if page else "")
    return f"{source} — {where}" if where else source


def format_passage(n: int, hit: Hit, text: str | None = None) -> str:
    return prompts.PASSAGE_TEMPLATE.format(
        n=n,
        source=html.escape(passage_source(hit), quote=True),
        text=_quote(hit.chunk.text if text is None else text),
    )


def _truncate_to(text: str, max_tokens: int, count: CountTokens) -> str:
    """The longest prefix of `text` (cut at a word boundary) within `max_tokens`."""
    if count(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on characters: count() is monotone enough for this
        mid = (lo + hi + 1) // 2
        if count(text[:mid] + " …") <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if " " in cut[len(cut) // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + " …"


def _build(
    question: str,
    hits: list[Hit],
    history: list[tuple[str, str]] | None,
    max_context_tokens: int | None,
    count_tokens: CountTokens | None,
    system_prompt: str | None,
) -> tuple[list[Message], int]:
    """Messages and how many of `hits` (a prefix) they carry."""
    count = count_tokens or approx_tokens
    system = system_prompt or prompts.SYSTEM_PROMPT
    question = question.strip()
    pairs = [(u, a) for u, a in (history or []) if u or a][-MAX_HISTORY_TURNS:]
    budget = max_context_tokens

    def user_message(blocks: list[str]) -> str:
        return prompts.USER_TEMPLATE.format(passages="\n".join(blocks), question=question)

    # History: most recent turns first, within its share of the budget.
    kept: list[tuple[str, str]] = []
    if budget is not None:
        fixed = count(system) + count(user_message([])) + 2 * MESSAGE_OVERHEAD_TOKENS
        history_budget = int(max(0, budget - fixed) * HISTORY_SHARE)
        used = 0
        for user, assistant in reversed(pairs):
            cost = count(user) + count(assistant) + 2 * MESSAGE_OVERHEAD_TOKENS
            if used + cost > history_budget:
                break
            kept.insert(0, (user, assistant))
            used += cost
        room = budget - fixed - used
    else:
        kept = pairs
        room = None

    # Passages in rank order while they fit; the first one that does not is cut to fit.
    blocks: list[str] = []
    for n, hit in enumerate(hits, 1):
        block = format_passage(n, hit)
        if room is None:
            blocks.append(block)
            continue
        cost = count(block) + 1
        if cost <= room:
            blocks.append(block)
            room -= cost
            continue
        shell = count(format_passage(n, hit, "")) + 1
        if room - shell >= MIN_PASSAGE_TOKENS or not blocks:
            text = _truncate_to(hit.chunk.text, max(room - shell, MIN_PASSAGE_TOKENS), count)
            blocks.append(format_passage(n, hit, text))
        break

    messages: list[Message] = [{"role": "system", "content": system}]
    for user, assistant in kept:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": user_message(blocks)})
    return messages, len(blocks)


def build_messages(
    question: str,
    hits: list[Hit],
    history: list[tuple[str, str]] | None = None,
    max_context_tokens: int | None = None,
    *,
    count_tokens: CountTokens | None = None,
    system_prompt: str | None = None,
) -> list[Message]:
    """Chat messages for a grounded answer.

    The system message holds the rules only (`rag_app.prompts.SYSTEM_PROMPT`, or
    `system_prompt`); earlier turns follow as user/assistant messages; the last user message
    holds the passages, numbered from 1 in the order of `hits`, each in a
    ``<passage id="n" source="doc_id — title > heading">`` block, then the question.
    With `max_context_tokens`, the prompt is trimmed to it (counted with `count_tokens`,
    or estimated): older turns go first, then lower-ranked passages, the last kept passage
    cut at a word boundary.
    """
    messages, _ = _build(question, hits, history, max_context_tokens, count_tokens, system_prompt)
    return messages


# --- answers ------------------------------------------------------------------------------
def _prompt_budget(llm: LLM, max_new_tokens: int | None) -> int | None:
    window = getattr(llm, "context_window", None)
    if not window:
        return None
    new = max_new_tokens or getattr(llm, "max_new_tokens", None) or 256
    return max(int(window) - int(new), 128)


def _prompt_for(
    question: str,
    hits: list[Hit],
    llm: LLM,
    history: list[tuple[str, str]] | None,
    max_new_tokens: int | None,
) -> tuple[list[Message], int]:
    return _build(
        question,
        hits,
        history,
        _prompt_budget(llm, max_new_tokens),
        getattr(llm, "count_tokens", None),
        getattr(llm, "system_prompt", None),
    )


def extractive_text(hits: list[Hit], note: str, k: int = EXTRACTIVE_PASSAGES) -> str:
    """The top passages as a readable answer, each with its citation number and source."""
    lines = [note, ""]
    for n, hit in enumerate(hits[:k], 1):
        text = " ".join(hit.chunk.text.split())
        if len(text) > EXTRACTIVE_CHARS:
            text = text[:EXTRACTIVE_CHARS].rsplit(" ", 1)[0] + " …"
        lines.append(f"[{n}] {passage_source(hit)}: {text}")
        lines.append("")
    return "\n".join(lines).rstrip()


def retrieval_only(hits: list[Hit], error: str | None = None) -> Answer:
    """An answer without the LLM: the top passages, cited. `error` says why, if it failed."""
    if not hits:
        return Answer(prompts.NO_PASSAGES_ANSWER, [], [], error=error)
    note = prompts.LLM_FAILED_NOTE.format(error=error) if error else prompts.LLM_OFF_NOTE
    n = min(len(hits), EXTRACTIVE_PASSAGES)
    return Answer(extractive_text(hits, note), list(range(1, n + 1)), hits, error=error)


def answer(
    question: str,
    hits: list[Hit],
    llm: LLM | None,
    history: list[tuple[str, str]] | None = None,
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
) -> Answer:
    """A grounded answer to `question` from `hits`; retrieval-only when the LLM can't help."""
    if not hits:
        return Answer(prompts.NO_PASSAGES_ANSWER, [], [])
    if llm is None:
        return retrieval_only(hits)
    try:
        messages, n_used = _prompt_for(question, hits, llm, history, max_new_tokens)
        text = llm.generate(
            messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=prompts.ANSWER_STOP,
        )
    except LLMError as exc:
        log.warning("LLM failed, answering with passages only: %s", exc)
        return retrieval_only(hits, error=str(exc))
    except Exception as exc:  # never let a backend bug take the chat down
        log.exception("LLM crashed, answering with passages only")
        return retrieval_only(hits, error=f"{type(exc).__name__}: {exc}")
    text = tidy(text)
    if not text:
        return retrieval_only(hits, error=prompts.EMPTY_ANSWER_ERROR)
    text = attach_citations(text, [h.chunk.text for h in hits[:n_used]])
    return Answer(text, parse_citations(text, n_used), hits)


def stream_answer(
    question: str,
    hits: list[Hit],
    llm: LLM | None,
    history: list[tuple[str, str]] | None = None,
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    errors: list[str] | None = None,
) -> Iterator[str]:
    """Yield the answer in pieces (join them for the whole text).

    If the LLM fails before saying anything, the retrieval-only answer is yielded instead;
    if it fails midway, a note and the passages follow what was already said. `errors`,
    when given, receives the failure's message before that fallback is yielded.
    """
    if not hits:
        yield prompts.NO_PASSAGES_ANSWER
        return
    if llm is None:
        yield retrieval_only(hits).text
        return
    said = False
    pieces: list[str] = []
    try:
        messages, n_used = _prompt_for(question, hits, llm, history, max_new_tokens)
        for piece in llm.stream(
            messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=prompts.ANSWER_STOP,
        ):
            if piece:
                said = said or bool(piece.strip())
                pieces.append(piece)
                yield piece
    except Exception as exc:
        if isinstance(exc, LLMError):
            log.warning("LLM failed, answering with passages only: %s", exc)
            error = str(exc)
        else:
            log.exception("LLM crashed, answering with passages only")
            error = f"{type(exc).__name__}: {exc}"
        if errors is not None:
            errors.append(error)
        fallback = retrieval_only(hits, error=error).text
        yield f"\n\n---\n{fallback}" if said else fallback
        return
    if not said:
        if errors is not None:
            errors.append(prompts.EMPTY_ANSWER_ERROR)
        yield retrieval_only(hits, error=prompts.EMPTY_ANSWER_ERROR).text
        return
    text = "".join(pieces)
    passages = [h.chunk.text for h in hits[:n_used]]
    if not parse_citations(text, n_used):
        cited = sorted({n for n in attribute_sentences(text, passages) if n})
        if cited:
            line = prompts.SOURCES_LINE.format(citations=" ".join(f"[{n}]" for n in cited))
            yield f"\n\n{line}"
