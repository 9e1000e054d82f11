"""Source cards as HTML (issue 28): document text escaped, quotes marked, query terms bold."""

from __future__ import annotations

from rag_app.types import Chunk, Hit
from rag_app.ui.render import hits_html, rank_moves


def _hit(n: int, text: str, title: str = "SB 72-61-009 Bracket", heading: str = "7. Fleet") -> Hit:
    chunk = Chunk(f"c{n}", f"bulletins/b{n}.md", text, title=title, heading_path=heading)
    return Hit(chunk, scores={"bm25": 3.0}, ranks={"bm25": n, "dense": n + 2, "fused": n})


def test_cards_escape_documents_mark_quotes_and_terms():
    text = (
        "## 7. Fleet status\n\n**All 13** affected propellers are modified <script>x</script>.\n"
        "Fleet 707 carries SB 72-61-009\nsince March."
    )
    out = hits_html(
        [_hit(1, text), _hit(2, "Nothing here about it.")],
        quoted={1: ["Fleet 707 carries SB 72-61-009 since March."]},
        query="Which aircraft carry SB 72-61-009?",
        marks=True,
    )
    assert "<script>" not in out and "&lt;script&gt;" in out  # document HTML never renders
    assert "&amp;gt;" not in out and "&gt;" not in out.split("&lt;script&gt;")[0]
    assert "##" not in out and "**" not in out  # Markdown marks are not shown raw
    # matched across the PDF-style line break inside the quoted sentence
    assert (
        '<mark class="quoted">Fleet 707 carries SB <span class="term">72-61-009</span>\nsince'
        in out
    )
    assert out.count('<div class="source-card"') == 2 and 'id="source-2"' in out
    assert "<details open>" in out  # the quoted card opens whole
    assert "the answer quotes “Fleet 707 carries SB 72-61-009 since March.”" in out
    assert "bm25 #1 · dense #3 · fused #1" in out
    assert 'data-mark="not_relevant"' in out
    # the title is not repeated by a heading path that restates it
    assert "SB 72-61-009 Bracket › 7. Fleet" in out


def test_rank_moves_against_the_baseline():
    a, b, c = (_hit(i, f"text {i}") for i in (1, 2, 3))
    assert rank_moves([a, b, c], [b, a, _hit(9, "new one")]) == {1: "▲1", 2: "▼1", 3: "new"}
    assert rank_moves([a], [a]) == {1: "="}
