"""Parsing and filtering of synthetic queries, on hand-written junk and on real SmolLM2 output.

`fixtures/smollm2_synth_replies.jsonl` holds 72 real replies of the default generator
(SmolLM2-135M-Instruct, embedded backend, temperature 0.7) to finetune.prompts on chunks of
the shipped corpus: kept as they came, junk included.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import FIXTURES

from finetune import query_filters
from finetune.prompts import DEFAULT_STYLES, load_prompts
from finetune.synth import KEYWORD_MAX_WORDS

CHUNK = (
    "## 4. Axle nut tightening (summary)\n\n"
    "Seat the main wheel axle nut at 270 Nm while rotating the wheel. Back off to zero, "
    "then apply the final torque of 135 Nm and go to the next locking hole. "
    "Never back off to align the hole; the maximum is 160 Nm."
)
EXAMPLES = [q for style in DEFAULT_STYLES.values() for *_, q in style.examples]
# The fixture was generated with a third example pair, since dropped because it was echoed.
FIXTURE_EXAMPLES = [
    *EXAMPLES,
    "expense claim deadline receipts",
    "How long do I have to submit an expense claim?",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('Sure! Here is a query: "main wheel nut torque"', "main wheel nut torque"),
        ("Query: axle nut torque value", "axle nut torque value"),
        ("1. What torque for the axle nut?\n2. Another one?", "What torque for the axle nut?"),
        ("**What is the final torque?**", "What is the final torque?"),
        ("  \n\n- wheel nut torque (keyword query)", "wheel nut torque"),
        ("## 4. Axle nut tightening", "Axle nut tightening"),
        ("Question 1: How tight is the nut?", "How tight is the nut?"),
        ("", None),
        ("   \n  \n", None),
        ('""', None),
        ("---", None),
        (None, None),
    ],
)
def test_parse_query_cleans_llm_wrapping(raw, expected):
    assert query_filters.parse_query(raw) == expected


def check(query, **kw):
    kw.setdefault("examples", EXAMPLES)
    return query_filters.check_query(query_filters.parse_query(query), CHUNK, **kw)


@pytest.mark.parametrize(
    ("query", "question", "reason"),
    [
        ("", False, query_filters.EMPTY),
        ("torque", False, query_filters.TOO_SHORT),
        (" ".join(["torque"] * 3 + [f"word{i}" for i in range(30)]), False, query_filters.TOO_LONG),
        ("main wheel nut torque", True, query_filters.NOT_QUESTION),
        ("6.1.2.3.3.2.3.6.6.7.7.7.11.11.11", False, query_filters.GARBAGE),
        ("CNC101133458965 XJ", False, query_filters.GARBAGE),
        ("torque torque torque torque wheel", False, query_filters.GARBAGE),
        (
            "Seat the main wheel axle nut at 270 Nm while rotating the wheel.",
            False,
            query_filters.COPIED,
        ),
        ("then apply the final torque of 135 Nm and go to the next", False, query_filters.COPIED),
        ("main wheel nut torque", False, query_filters.EXAMPLE),  # the prompt's own example
        ("How is asthma treated?", True, query_filters.EXAMPLE),
        ("What does this passage contain?", True, query_filters.CHATTER),
        ("I'm ready to assist. What's your next question?", True, query_filters.CHATTER),
        ("axle nut final torque", False, None),
        ("What torque do I apply to the axle nut?", True, None),
        ("how tight should the axle nut be", True, None),
        ("Axle nut tightening", False, query_filters.COPIED),  # the chunk's heading, echoed
        (
            "20-100 percent of the range, 20-100 percent, 20-20 percent",
            False,
            query_filters.GARBAGE,
        ),
    ],
)
def test_check_query_reasons(query, question, reason):
    assert check(query, question=question) == reason


def test_dedupe_drops_exact_and_near_duplicates():
    queries = [
        "axle nut final torque",
        "Axle nut final torque!",
        "final torque axle nut",  # same words, other order: Jaccard 1.0
        "axle nut maximum torque",
        "what is the axle nut maximum torque",
    ]
    assert query_filters.dedupe(queries, threshold=0.9) == [True, False, False, True, True]


def test_source_ranks_counts_better_passages():
    import numpy as np

    passages = np.eye(3, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0]], dtype=np.float32)
    assert query_filters.source_ranks(queries, passages, [0, 1]) == [1, 2]
    margins = query_filters.source_margins(queries, passages, [0, 1])
    assert margins == pytest.approx([0.8, -0.8])


def test_filter_report_counts_by_reason():
    report = query_filters.FilterReport(generated=5, kept=2)
    report.drop(query_filters.TOO_SHORT, 2)
    report.drop(query_filters.INCONSISTENT)
    data = report.as_dict()
    assert data["dropped"] == {query_filters.TOO_SHORT: 2, query_filters.INCONSISTENT: 1}
    assert "generated 5, kept 2" in report.summary()


def _fixture_rows():
    path = FIXTURES / "smollm2_synth_replies.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_real_smollm2_junk_is_mostly_filtered():
    """On real generator output, the text filters drop the obvious junk but not everything."""
    prompts = load_prompts(None)
    reasons: Counter = Counter()
    kept = []
    for row in _fixture_rows():
        style = prompts.styles[row["style"]]
        query = query_filters.parse_query(row["raw"])
        reason = query_filters.check_query(
            query,
            row["chunk_text"],
            question=style.question,
            max_words=KEYWORD_MAX_WORDS if row["style"] == "keyword" else 24,
            examples=FIXTURE_EXAMPLES,
        )
        reasons[reason or "kept"] += 1
        if reason is None:
            kept.append(query)
    assert sum(reasons.values()) == 72
    # Junk seen in the fixture must not survive, whatever else does.
    for junk in (
        "6.1.2.3.3.2.3.6.6.7.7.7.11.11.11",
        "CNC101133458965",
        "How long do I have to submit an expense claim?",  # echo of a prompt example
        "I'm ready to assist. What's your next question?",
    ):
        assert junk not in kept
    for echoed_heading in ("Related documents", "Typical tasks", "Inspection limits"):
        assert echoed_heading not in kept
    assert reasons[query_filters.GARBAGE] + reasons[query_filters.CHATTER] >= 6
    assert reasons[query_filters.TOO_LONG] + reasons[query_filters.COPIED] >= 15
    assert 20 <= reasons["kept"] <= 45  # text filters alone leave the round trip work to do


def test_prompts_override_file(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text(
        'system = "You write queries for aircraft engineers."\n'
        "[keyword]\n"
        'instruction = "Give 3 keywords."\n'
        'examples = [["Pump P-1 overhaul at 600 h.", "pump overhaul interval"]]\n'
        "[symptom]\n"
        'instruction = "Describe the fault this passage fixes."\n'
        "question = false\n",
        encoding="utf-8",
    )
    custom = load_prompts(path)
    default = load_prompts(None)
    assert custom.version != default.version
    messages = custom.messages("keyword", "Some passage.")
    assert messages[0]["content"].startswith("You write queries for aircraft")
    assert len(messages) == 4  # system, one example (user + assistant), the passage
    assert "Give 3 keywords." in messages[-1]["content"]
    assert custom.styles["question"] == default.styles["question"]
    assert "symptom" in custom.styles
    with pytest.raises(ValueError, match="unknown query style"):
        default.messages("poem", "x")
    titled = default.messages(
        "question", "It is treated with levothyroxine.", title="Hypothyroidism"
    )
    assert titled[-1]["content"].endswith(
        "Document: Hypothyroidism\nPassage: It is treated with levothyroxine."
    )
    assert "Document:" not in default.messages("question", "x")[-1]["content"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[keyword\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_prompts(bad)
