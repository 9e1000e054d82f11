"""Markdown views of retrieval results for the chat UI (pure functions, easy to test)."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from rag_app.answer import display_path
from rag_app.types import Hit

if TYPE_CHECKING:
    from rag_app.answer import Answer

_STAGES = ("bm25", "dense", "fused", "rerank")


def _escape(text: str) -> str:
    """Show document text as text: no HTML, images or links from a document render."""
    return html.escape(text, quote=False).replace("[", "\\[").replace("!", "\\!")


def stage_line(hit: Hit) -> str:
    """`bm25 #3 (7.12) · dense #1 (0.81) · ...`: why the passage ranked where it did."""
    parts = []
    for stage in _STAGES:
        if stage in hit.scores or stage in hit.ranks:
            rank = hit.ranks.get(stage)
            score = hit.scores.get(stage)
            label = f"{stage} #{rank}" if rank is not None else stage
            if score is not None:
                label += f" ({score:.3g})"
            parts.append(label)
    return " · ".join(parts)


def source_label(hit: Hit) -> str:
    chunk = hit.chunk
    where = " › ".join(p for p in (chunk.title, chunk.heading_path) if p)
    page = chunk.metadata.get("page")
    suffix = f", p. {page}" if page else ""
    return f"{chunk.doc_id}{suffix}" + (f" — {where}" if where else "")


def hits_markdown(
    hits: list[Hit], *, snippet_chars: int = 400, title: str = "Sources", note: str = ""
) -> str:
    """Numbered passages as the answer cites them ([1], [2], ...); `note` says how the
    search ran (shown under the title)."""
    sub = f"\n\n<sub>{_escape(note)}</sub>" if note else ""
    if not hits:
        return f"**{title}:** no passages matched.{sub}"
    lines = [f"**{title}**{sub}", ""]
    for i, hit in enumerate(hits, 1):
        text = " ".join(hit.chunk.text.split())
        if len(text) > snippet_chars:
            text = text[:snippet_chars].rsplit(" ", 1)[0] + " …"
        lines.append(f"**\\[{i}\\]** `{_escape(source_label(hit))}`  ")
        lines.append(f"<sub>{stage_line(hit)}</sub>  ")
        lines.append(f"> {_escape(text)}")
        lines.append("")
    return "\n".join(lines)


CARD_CSS = """
#sources .source-card {border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 8px 10px; margin: 0 0 8px 0; font-size: var(--text-md); font-weight: normal;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;}
#sources .source-head {display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap;}
#sources .source-n {font-weight: 600; color: var(--color-accent);}
#sources .source-where {font-weight: 700; font-size: var(--text-md); overflow-wrap: anywhere;}
#sources .source-why, #sources .source-note {color: var(--body-text-color-subdued);
  font-size: var(--text-sm);}
#sources .source-text {margin: 4px 0 0 0; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 7.5em; overflow: hidden; font-size: var(--text-lg); font-weight: normal;}
#sources details[open] + .source-text {max-height: none;}
#sources mark.quoted {background: #fff3b0; color: inherit;}
#sources .term {font-weight: 700; font-size: inherit; font-family: inherit;}
#sources .source-cited {font-size: var(--text-sm);}
#sources .mark-btn {font-size: var(--text-sm); padding: 1px 8px; margin-right: 6px;
  border: 1px solid var(--border-color-primary); border-radius: 6px; cursor: pointer;
  background: var(--button-secondary-background-fill);}
.rag-hidden {display: none !important;}
"""

# One delegated listener: a card's button writes "n:mark" into the hidden #mark-request box
# and presses the hidden #mark-submit button, whose handler saves the mark server-side
# against the passages this session was shown (a client can only name a position).
MARK_JS = """
() => {
  document.addEventListener("click", (event) => {
    const button = event.target.closest("#sources .mark-btn");
    if (!button) return;
    const box = document.querySelector("#mark-request textarea, #mark-request input");
    if (!box) return;
    box.value = button.dataset.n + ":" + button.dataset.mark;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => document.querySelector("#mark-submit").click(), 100);
  });
}
"""


_HEADING_MARK = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")


def plain(text: str) -> str:
    """Passage text without Markdown heading marks and bold markers, which show as raw
    `##` and `**` in a card (the card escapes everything and renders no Markdown)."""
    return _EMPHASIS.sub(r"\2", _HEADING_MARK.sub("", text))


def _why_ranked(hit: Hit) -> str:
    """'bm25 #2 · dense #7 · fused #1': where each stage put the passage."""
    return " · ".join(f"{s} #{hit.ranks[s]}" for s in _STAGES if s in hit.ranks)


def term_pattern(query: str) -> re.Pattern[str] | None:
    """The query's words worth marking in a passage (3+ characters, not stop words, codes
    whole), as one case-insensitive whole-word pattern; None when nothing is left."""
    from rag_app.ir.stopwords import ENGLISH
    from rag_app.text import TOKEN

    words = {w for w in TOKEN.findall(query.lower()) if len(w) >= 3 and w not in ENGLISH}
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def _escaped(text: str, terms: re.Pattern[str] | None) -> str:
    """`text` HTML-escaped, with the query's terms in <span class="term">."""
    if terms is None:
        return html.escape(text)
    out, cursor = [], 0
    for match in terms.finditer(text):
        out.append(html.escape(text[cursor : match.start()]))
        out.append(f'<span class="term">{html.escape(match.group())}</span>')
        cursor = match.end()
    out.append(html.escape(text[cursor:]))
    return "".join(out)


def _highlight(text: str, quoted: list[str], terms: re.Pattern[str] | None = None) -> str:
    """`text` HTML-escaped, each quoted piece in <mark>, the query's terms in bold (document
    HTML never renders: everything from the document is escaped)."""
    spans: list[tuple[int, int]] = []
    for piece in quoted:
        for line in piece.splitlines():
            words = line.split()
            if not words:
                continue
            # the quote's whitespace was normalised: a PDF line break inside it still matches
            found = re.search(r"\s+".join(re.escape(w) for w in words), text)
            if found:
                spans.append(found.span())
    out, cursor = [], 0
    for start, end in sorted(spans):
        if start < cursor:
            continue
        out.append(_escaped(text[cursor:start], terms))
        out.append(f'<mark class="quoted">{_escaped(text[start:end], terms)}</mark>')
        cursor = end
    out.append(_escaped(text[cursor:], terms))
    return "".join(out)


def hits_html(
    hits: list[Hit],
    *,
    title: str = "Sources",
    note: str = "",
    quoted: dict[int, list[str]] | None = None,
    moved: dict[int, str] | None = None,
    marks: bool = False,
    query: str = "",
) -> str:
    """The sources as cards: number, document › section, why it ranked, the passage at body
    size (a few lines, the rest behind "show more"), the quoted sentences marked.
    `quoted` maps a source number to the texts the answer quotes from it; `moved` maps it
    to its rank change against the baseline ("▲3", "new", "="); `marks` adds each card's
    Relevant / Not relevant buttons (`MARK_JS`); the words of `query` are marked in bold.
    A card the answer quotes opens whole and says which of its sentences the answer quotes."""
    quoted = quoted or {}
    terms = term_pattern(query)
    moved = moved or {}
    head = f'<div class="source-note"><b>{html.escape(title)}</b>'
    head += f" · {html.escape(note)}</div>" if note else "</div>"
    if not hits:
        return head + "<p>No passages matched.</p>"
    cards = [head]
    for n, hit in enumerate(hits, 1):
        chunk = hit.chunk
        where = " › ".join(display_path(chunk.title, chunk.heading_path)) or chunk.doc_id
        doc_type = chunk.metadata.get("doc_type") if isinstance(chunk.metadata, dict) else None
        extra = [chunk.doc_id] + ([str(doc_type)] if doc_type else [])
        badge = f" · vs baseline {html.escape(moved[n])}" if n in moved else ""
        cited = ""
        if quoted.get(n):
            first = " ".join(plain(quoted[n][0]).split())
            first = first if len(first) <= 90 else first[:87].rsplit(" ", 1)[0] + " …"
            cited = f" · the answer quotes “{first}”"
        body = _highlight(plain(chunk.text.strip()), [plain(q) for q in quoted.get(n, [])], terms)
        cards.append(
            f'<div class="source-card" id="source-{n}">'
            f'<div class="source-head"><span class="source-n">[{n}]</span>'
            f'<span class="source-where">{html.escape(where)}</span></div>'
            f'<div class="source-why">{html.escape(" · ".join(extra))} · '
            f"{html.escape(_why_ranked(hit))}{html.escape(badge)}"
            f'<span class="source-cited">{html.escape(cited)}</span></div>'
            f"<details{' open' if quoted.get(n) else ''}>"
            '<summary class="source-why">show more</summary></details>'
            f'<div class="source-text">{body}</div>{_mark_buttons(n) if marks else ""}</div>'
        )
    return "\n".join(cards)


def _mark_buttons(n: int) -> str:
    return (
        '<div class="source-marks">'
        f'<button class="mark-btn" data-n="{n}" data-mark="relevant">Relevant</button>'
        f'<button class="mark-btn" data-n="{n}" data-mark="not_relevant">Not relevant</button>'
        "</div>"
    )


def rank_moves(base: list[Hit], tuned: list[Hit]) -> dict[int, str]:
    """For each position of `tuned`: "▲3" (up three places), "▼1", "=" or "new" (not in
    the baseline's list)."""
    before = {h.chunk.id: i for i, h in enumerate(base, 1)}
    out = {}
    for i, hit in enumerate(tuned, 1):
        was = before.get(hit.chunk.id)
        out[i] = (
            "new"
            if was is None
            else "="
            if was == i
            else f"{'▲' if was > i else '▼'}{abs(was - i)}"
        )
    return out


def compare_markdown(base: list[Hit], tuned: list[Hit], base_label: str, tuned_label: str) -> str:
    """Two ranked lists side by side, marking what entered, left or moved in the top k."""
    base_rank = {h.chunk.id: i for i, h in enumerate(base, 1)}
    tuned_rank = {h.chunk.id: i for i, h in enumerate(tuned, 1)}

    def row(hit: Hit | None, rank: int, other: dict[str, int]) -> str:
        if hit is None:
            return ""
        before = other.get(hit.chunk.id)
        if before is None:
            mark = "🆕 only here"
        elif before == rank:
            mark = "="
        else:
            mark = f"{'▲' if before > rank else '▼'} was #{before}"
        return f"{rank}. `{_escape(source_label(hit))}` <sub>{mark}</sub>"

    lines = [f"| # | {_escape(base_label)} | {_escape(tuned_label)} |", "|---|---|---|"]
    for i in range(max(len(base), len(tuned))):
        left = row(base[i] if i < len(base) else None, i + 1, tuned_rank)
        right = row(tuned[i] if i < len(tuned) else None, i + 1, base_rank)
        lines.append(f"| {i + 1} | {left.split('. ', 1)[-1]} | {right.split('. ', 1)[-1]} |")
    return "\n".join(lines)


_CITATION = re.compile(r"\[(\d+)\]")


def answer_markdown(answer: Answer, timings: dict[str, float] | None = None) -> str:
    """The answer for the chat: each [n] a link to its source card, then a line saying which
    mode answered and why, any check that failed, and the stage times."""
    text = _CITATION.sub(lambda m: f"[\\[{m.group(1)}\\]](#source-{m.group(1)})", answer.text)
    lines = [text]
    for flag in answer.flags:
        lines.append(f"⚠️ {flag}")
    label = {"extractive": "Extractive answer", "generative": "Generated answer"}.get(
        answer.mode, "Answer"
    )
    foot = f"{label}: {answer.why}" if answer.why else label
    if timings:
        foot += " · " + " · ".join(f"{k} {v:.0f} ms" for k, v in timings.items())
    lines.append(f"<sub>{html.escape(foot)}</sub>")
    return "\n\n".join(lines)
