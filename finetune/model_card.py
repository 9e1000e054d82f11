"""The model card (README.md) of a trained run, filled from `model_card_template.md`.

Every number in it comes from `run.json`, with the split it was measured on named: a
synthetic validation split cannot show whether real queries improve (issue 10), so the card
says "unverified" unless a labelled set was scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from rag_app.runs import RunRecord, Verdict

TEMPLATE = Path(__file__).with_name("model_card_template.md")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_rows(metrics: dict[str, Any]) -> list[str]:
    """Table rows `| metric | base | model | change |` for keys `x` with a `x_base` twin."""
    rows = []
    for key in sorted(metrics):
        if key.endswith("_base"):
            continue
        base = metrics.get(f"{key}_base")
        value = metrics[key]
        if isinstance(base, int | float) and isinstance(value, int | float):
            rows.append(f"| {key} | {base:.4f} | {value:.4f} | {value - base:+.4f} |")
        elif not any(k.startswith(key) and k != key for k in metrics):
            rows.append(f"| {key} | | {_fmt(value)} | |")
    return rows or ["| (none) | | | |"]


_VERDICTS = {
    Verdict.RECOMMENDED: "**Recommended**: it beats the base model on the labelled set.",
    Verdict.UNVERIFIED: (
        "**Unverified**: better than the base model on synthetic validation only; no "
        "labelled queries were available to confirm it on real questions."
    ),
}


def render(record: RunRecord) -> str:
    """The card text for a run record (see the trainers `finetune.train`, `finetune.adapter`, `finetune.reranker` for the fields)."""
    data_rows = [f"| {k} | {v} |" for k, v in record.data.items() if isinstance(v, int | float)]
    verdict = _VERDICTS.get(
        record.verdict,
        f"**Not recommended**: it does not beat the base model on {record.evidence}.",
    )
    guard = record.guard
    labelled = guard.get("source") if guard.get("queries") else record.labelled_eval
    note = (
        f"Guardrail: also scored on {guard.get('queries', 'the')} labelled queries from "
        f"{labelled} (never trained on)."
        if labelled
        else "No labelled queries were available; the numbers below are synthetic."
    )
    if record.candidates:
        rows = [
            f"| {c['recipe']} | {c['train_pairs']} | {c['gain'] * 100:+.2f} "
            f"[{c['ci'][0] * 100:+.2f}, {c['ci'][1] * 100:+.2f}] |"
            for c in record.candidates
        ]
        note += (
            f"\n\nRecipe chosen on the guard: {record.selection}.\n\n"
            "| recipe | train pairs | guard nDCG@10 gain, points [95% CI] |\n|---|---:|---|\n"
            + "\n".join(rows)
        )
    settings = record.settings
    return Template(TEMPLATE.read_text(encoding="utf-8")).safe_substitute(
        name=record.name,
        kind=record.label,
        base_model=record.base_model,
        base_fingerprint=record.base_fingerprint,
        created=record.created,
        corpus=record.corpus,
        verdict=verdict,
        validation_source=record.validation,
        validation_note=note,
        metrics_table="\n".join(metrics_rows(record.metrics)),
        data_table="\n".join(data_rows) or "| (none) | |",
        llm=record.llm or "none",
        prompt_version=record.prompt_version or "-",
        split_by=settings.get("split_by", "document"),
        hyperparameters=json.dumps(settings, indent=2, sort_keys=True, default=str),
        path_hint=f"workspace/models/{record.name}",
        seed=record.seed if record.seed is not None else "",
        device=record.device,
        train_seconds=f"{record.train_seconds:.0f}",
    )


def write(folder: Path, record: RunRecord) -> None:
    (Path(folder) / "README.md").write_text(render(record), encoding="utf-8")
