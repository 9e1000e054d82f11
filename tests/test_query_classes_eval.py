"""The demo's eval per query class (eval.query_classes): what people type measured
separately, so that a loss on codes or keywords is not averaged away by questions."""

from __future__ import annotations

from eval.query_classes import WITH_CODE, class_rows, query_classes
from eval.results import ConfigResult, RetrievalEvalResult


def _config(name: str, scores: dict[str, float]) -> ConfigResult:
    return ConfigResult(
        name, name, None, {}, {q: {"ndcg@10": s} for q, s in scores.items()}, {}, 0.0, 0.0, 0.0
    )


def test_queries_are_classed_by_kind_and_by_the_codes_they_name():
    queries = {
        "q1": "Which aircraft are affected by SB 72-61-009?",
        "q2": "mlg axle nut torque",
        "q3": "dropped my torque wrench",
        "q4": "what pressure in the nose tyres",
    }
    metadata = {"q1": {"kind": "question"}, "q2": {"kind": "keyword"}, "q3": {"kind": "symptom"}}
    assert query_classes(queries, metadata) == {
        "question": ["q1", "q4"],  # q4: no metadata, a question
        WITH_CODE: ["q1"],
        "keyword": ["q2"],
        "symptom / how-to": ["q3"],
    }


def test_class_rows_compare_the_same_questions_per_class():
    queries = {f"k{i}": "kw" for i in range(6)} | {f"n{i}": "question" for i in range(6)}
    base = {q: 0.5 for q in queries}
    tuned = {q: (0.9 if q.startswith("k") else 0.4) for q in queries}  # keywords up, rest down
    result = RetrievalEvalResult(
        dataset={},
        k=10,
        metrics=("ndcg@10",),
        configs={
            "hybrid-base": _config("hybrid-base", base),
            "hybrid-finetuned": _config("hybrid-finetuned", tuned),
        },
        comparisons=[],
        diffs=[],
        skipped_configs={},
        models={},
        dropped_training_overlap=0,
        training_query_sources=[],
        notes=[],
        created="",
        settings={},
        queries=queries,
        qrels={},
        labels={},
    )
    classes = {"keyword": [f"k{i}" for i in range(6)], "question": [f"n{i}" for i in range(6)]}
    lines = class_rows(
        result, classes, [("hybrid-base", "hybrid-finetuned"), ("dense-base", "dense-finetuned")]
    )
    assert len(lines) == 3  # header, keyword, question; the dense pair did not run
    keyword, question = lines[1], lines[2]
    assert keyword.split()[:5] == ["keyword", "6", "0.500", "->", "0.900"]
    assert "+40.0 [+40.0, +40.0]" in keyword
    assert "0.500 -> 0.400 -10.0" in question
