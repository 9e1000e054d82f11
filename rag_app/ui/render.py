"""Markdown views of retrieval results for the chat UI (pure functions, easy to test)."""

from __future__ import annotations

import html

from rag_app.types import Hit

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
