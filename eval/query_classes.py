"""Retrieval results per query class: what people type (questions, keywords, symptoms,
codes) measured separately, so that a gain or a loss on one class is not averaged away by
another (issue 31; the protocol's classes are in bench/bench_query_classes.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from eval.results import PRIMARY_METRIC, RetrievalEvalResult

KINDS = {"question": "question", "keyword": "keyword"}  # other kinds: "symptom / how-to"
WITH_CODE = "with a code"


def query_classes(
    queries: Mapping[str, str], metadata: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[str]]:
    """{class: query ids}: each query by the `kind` its metadata gives ("question" when
    none), and also "with a code" when it names an identifier ("SB 72-61-009")."""
    from rag_app.store.bm25 import is_code, tokenize

    out: dict[str, list[str]] = defaultdict(list)
    for qid, text in queries.items():
        kind = str((metadata.get(qid) or {}).get("kind") or "question")
        out[KINDS.get(kind, "symptom / how-to")].append(qid)
        if any(is_code(t) for t in tokenize(text)):
            out[WITH_CODE].append(qid)
    return dict(out)


def class_rows(
    result: RetrievalEvalResult,
    classes: Mapping[str, Sequence[str]],
    pairs: Sequence[tuple[str, str]],
    metric: str = PRIMARY_METRIC,
    n_resamples: int = 2000,
) -> list[str]:
    """A text table: per class, its size, and for each (base, candidate) config pair the
    base's mean, the candidate's, and the gain with its 95% paired bootstrap interval, in
    points. Pairs whose configs did not run are left out."""
    from rag_app.ir.stats import compare

    pairs = [(a, b) for a, b in pairs if a in result.configs and b in result.configs]
    lines = [
        f"  {'class':18s} {'n':>3s}  "
        + "   ".join(f"{b + ' vs ' + a.rsplit('-', 1)[-1]:34s}" for a, b in pairs)
    ]
    for name, qids in sorted(classes.items()):
        qids = [q for q in qids if q in result.queries]
        if not qids:
            continue
        cells = []
        for a, b in pairs:
            base = {q: result.configs[a].per_query[q][metric] for q in qids}
            cand = {q: result.configs[b].per_query[q][metric] for q in qids}
            c = compare(base, cand, n_resamples=n_resamples, n_permutations=n_resamples)
            mean_a = sum(base.values()) / len(base)
            cells.append(
                f"{mean_a:.3f} -> {mean_a + c.delta:.3f} {c.delta * 100:+5.1f} "
                f"[{c.ci_low * 100:+.1f}, {c.ci_high * 100:+.1f}]"
            )
        lines.append(f"  {name:18s} {len(qids):3d}  " + "   ".join(f"{c:34s}" for c in cells))
    return lines
