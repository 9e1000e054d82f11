"""The eval report as Markdown (`rag-app eval report --format md`): the same numbers as the
HTML page, for a pull request or a terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eval.report_text import N_DIFF, config_cis, fmt, gather_notes


def _md_dataset(dataset: Mapping[str, Any]) -> str:
    fp = str(dataset.get("fingerprint") or "n/a")[:16]
    return (
        f"{dataset.get('name')}, split `{dataset.get('split')}` ({dataset.get('source')}, "
        f"{dataset.get('n_queries')} queries, judged per {dataset.get('granularity')}, "
        f"fingerprint `{fp}`)"
    )


def _md_comparisons(comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    if not comparisons:
        return ["No base / fine-tuned pair was evaluated.", ""]
    lines = [
        "| candidate vs base | metric | base | candidate | delta [95% CI] | p | W/L/T |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for c in comparisons:
        tag = " (best vs best)" if c.get("best_vs_best") else ""
        lines.append(
            f"| {c['candidate']} vs {c['base']}{tag} | {c['metric']} | {c['mean_a']:.4f} | "
            f"{c['mean_b']:.4f} | {c['delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | "
            f"{c['p_value']:.4f} | {c['wins']}/{c['losses']}/{c['ties']} |"
        )
    return [*lines, ""]


def render_markdown(
    retrieval: Mapping[str, Any] | None, answers: Mapping[str, Any] | None, title: str
) -> str:
    lines = [f"# {title}", ""]
    for note in gather_notes(retrieval, answers):
        lines.append(f"> {note}")
    if lines[-1] != "":
        lines.append("")
    if retrieval:
        metrics = list(retrieval["metrics"])
        cis = config_cis(retrieval)
        lines += [
            "## Retrieval",
            "",
            f"Data: {_md_dataset(retrieval['dataset'])}; k = {retrieval['k']}; dropped as "
            f"training queries: {retrieval.get('dropped_training_overlap', 0)}.",
            "",
            "| configuration | " + " | ".join(metrics) + " |",
            "|---|" + "---:|" * len(metrics),
        ]
        for name, cfg in retrieval["configs"].items():
            cells = []
            for m in metrics:
                ci = cis.get(name, {}).get(m)
                ci_txt = f" [{ci[1]:.3f}, {ci[2]:.3f}]" if ci else ""
                cells.append(f"{cfg['mean'][m]:.4f}{ci_txt}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        for name, reason in retrieval.get("skipped_configs", {}).items():
            lines.append(f"- not run: {name}: {reason}")
        lines += [
            "",
            "### Base vs fine-tuned (paired)",
            "",
            *_md_comparisons(retrieval.get("comparisons", [])),
        ]
        diffs = retrieval.get("diff", [])
        if diffs:
            labels = retrieval.get("labels", {})
            lines += ["### Biggest wins and losses", ""]
            ordered = sorted(
                (d for d in diffs if d["outcome"] != "tie"), key=lambda d: -abs(d["delta"])
            )
            for d in ordered[:N_DIFF]:
                entered = (
                    ", ".join(
                        f"{labels.get(x, x)[:60]}{' ✓' if g else ''}" for x, g in d["entered"]
                    )
                    or "–"
                )
                left = (
                    ", ".join(f"{labels.get(x, x)[:60]}{' ✓' if g else ''}" for x, g in d["left"])
                    or "–"
                )
                lines.append(
                    f"- **{d['delta']:+.3f}** {d['metric']} ({d['candidate']} vs {d['base']}) "
                    f"— {d['query']}  \n  entered: {entered}  \n  left: {left}"
                )
            lines += ["", "✓ = judged relevant.", ""]
    if answers:
        metrics = [
            m
            for m in answers["metrics"]
            if any(m in c["mean"] for c in answers["configs"].values())
        ]
        lines += [
            "## Answers",
            "",
            f"Data: {_md_dataset(answers['dataset'])}; generator `{answers['llm']}`; "
            f"{answers['k']} passages per answer.",
            "",
            f"**Limits of the grounding scores.** {answers['grounding']['limits']}",
            "",
            "| configuration | " + " | ".join(metrics) + " | errors |",
            "|---|" + "---:|" * (len(metrics) + 1),
        ]
        for name, cfg in answers["configs"].items():
            lines.append(
                f"| {name} | "
                + " | ".join(fmt(cfg["mean"].get(m), 3) for m in metrics)
                + f" | {cfg['errors']} |"
            )
        lines += ["", *_md_comparisons(answers.get("comparisons", []))]
    return "\n".join(lines).rstrip() + "\n"
