"""Self-contained HTML and Markdown reports of retrieval and answer evals.

``write_report(retrieval=..., answers=..., out_dir=...)`` reads saved result folders (see
``eval.retrieval`` / ``eval.answers``) and writes ``report.html`` (inline CSS and inline SVG
plots: no scripts, no CDN, opens offline), ``report.md`` and ``report.json``.

The report shows, for every number, the data split it came from (dataset, split, source,
fingerprint), the per-configuration means with 95% bootstrap confidence intervals, the paired
base-vs-fine-tuned comparisons (delta, CI, randomisation p-value, wins / losses / ties), a
per-query win/loss plot, the qualitative diff (what entered and left the top k for the
biggest wins and losses), an embedding map of chunks under each model, the answer-level
scores with the grounding proxy's stated limits, the run's configuration and model cards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.plots import svg_bars, svg_scatter, svg_winloss
from eval.report_markdown import render_markdown
from eval.report_text import N_DIFF, config_cis, escape, fmt, gather_notes
from eval.results import PRIMARY_METRIC, load_results

if TYPE_CHECKING:
    from rag_app.config import Settings

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.win{color:#1a7f37}.loss{color:#c62828}.muted{color:#777;font-size:.85rem}
.box{background:#fff8e1;border-left:4px solid #f0b400;padding:.6rem .9rem;margin:1rem 0}
.diff{border:1px solid #e3e3e3;border-radius:6px;padding:.5rem .8rem;margin:.6rem 0}
.rel{font-weight:600;color:#1a7f37}.nrel{color:#555}
code{background:#f4f4f4;padding:0 .2rem;border-radius:3px}
details{margin:.5rem 0}pre{white-space:pre-wrap;font-size:.8rem;background:#f8f8f8;padding:.5rem}
svg{max-width:100%;height:auto}
"""


# --- sections --------------------------------------------------------------------------------
def _dataset_line(dataset: Mapping[str, Any]) -> str:
    fp = dataset.get("fingerprint") or "n/a"
    return (
        f"{dataset.get('name')} / split <b>{escape(dataset.get('split'))}</b> "
        f"({escape(dataset.get('source'))}, judged per {escape(dataset.get('granularity'))}, "
        f"{escape(dataset.get('n_queries'))} queries, fingerprint <code>{escape(str(fp)[:16])}</code>)"
    )


def _retrieval_html(data: Mapping[str, Any]) -> str:
    metrics = list(data["metrics"])
    cis = config_cis(data)
    configs = list(data["configs"])
    out = [
        "<h2>Retrieval</h2>",
        f"<p>Data: {_dataset_line(data['dataset'])}. k = {data['k']}. "
        f"Dropped as training queries of the fine-tuned model: "
        f"<b>{data.get('dropped_training_overlap', 0)}</b>.</p>",
        "<table><tr><th class=l>configuration</th>"
        + "".join(
            f"<th>{escape(m)}<br><span class=muted>mean [95% CI]</span></th>" for m in metrics
        )
        + "<th>p50 ms</th></tr>",
    ]
    for name in configs:
        cfg = data["configs"][name]
        cells = []
        for m in metrics:
            mean = cfg["mean"].get(m)
            ci = cis.get(name, {}).get(m)
            extra = f"<br><span class=muted>[{ci[1]:.3f}, {ci[2]:.3f}]</span>" if ci else ""
            cells.append(f"<td>{fmt(mean)}{extra}</td>")
        out.append(
            f"<tr><td class=l title='{escape(cfg.get('description', ''))}'>{escape(name)}</td>"
            + "".join(cells)
            + f"<td>{fmt(cfg.get('latency_ms_p50'), 1)}</td></tr>"
        )
    out.append("</table>")
    if data.get("skipped_configs"):
        out.append(
            "<p class=muted>Not run: "
            + "; ".join(
                f"<b>{escape(n)}</b>: {escape(r)}" for n, r in data["skipped_configs"].items()
            )
            + "</p>"
        )
    primary = PRIMARY_METRIC if PRIMARY_METRIC in metrics else metrics[0]
    out.append(
        svg_bars(
            configs,
            [
                cis.get(n, {}).get(primary, (data["configs"][n]["mean"][primary],) * 3)[0]
                for n in configs
            ],
            [cis.get(n, {}).get(primary, (math.nan,) * 3)[1] for n in configs],
            [cis.get(n, {}).get(primary, (math.nan,) * 3)[2] for n in configs],
            f"{primary} per configuration (95% bootstrap CI over queries)",
        )
    )
    out.append(_comparisons_html(data.get("comparisons", []), "Base vs fine-tuned (paired)"))
    out.append(_diff_html(data))
    out.append(_embedding_html(data.get("embedding_map")))
    return "\n".join(out)


def _comparisons_html(comparisons: Sequence[Mapping[str, Any]], title: str) -> str:
    if not comparisons:
        return (
            f"<h3>{escape(title)}</h3><p class=muted>No base / fine-tuned pair was evaluated "
            "(no fine-tuned model?).</p>"
        )
    rows = [
        f"<h3>{escape(title)}</h3>",
        "<table><tr><th class=l>candidate vs base</th><th class=l>metric</th><th>base</th>"
        "<th>candidate</th><th>delta [95% CI]</th><th>p (randomisation)</th>"
        "<th>wins / losses / ties</th></tr>",
    ]
    for c in comparisons:
        cls = "win" if c["ci_low"] > 0 else "loss" if c["ci_high"] < 0 else ""
        tag = " <span class=muted>(best vs best)</span>" if c.get("best_vs_best") else ""
        rows.append(
            f"<tr><td class=l>{escape(c['candidate'])} vs {escape(c['base'])}{tag}</td>"
            f"<td class=l>{escape(c['metric'])}</td><td>{fmt(c['mean_a'])}</td>"
            f"<td>{fmt(c['mean_b'])}</td><td class={cls}>{c['delta']:+.4f} "
            f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]</td><td>{c['p_value']:.4f}</td>"
            f"<td>{c['wins']} / {c['losses']} / {c['ties']}</td></tr>"
        )
    rows.append(
        "</table><p class=muted>Delta = candidate − base, per query, averaged; CI by paired "
        "bootstrap over queries; p from a two-sided paired sign-flip randomisation test. "
        "Green: the whole CI is above 0; red: below.</p>"
    )
    return "\n".join(rows)


def _doc_list(items: Sequence[Sequence[Any]], labels: Mapping[str, str]) -> str:
    if not items:
        return "<i>nothing</i>"
    out = []
    for doc, grade in items:
        cls = "rel" if grade and grade > 0 else "nrel"
        mark = f" (relevant, grade {grade})" if grade and grade > 0 else ""
        out.append(f"<li class={cls}>{escape(labels.get(doc, doc))}{mark}</li>")
    return "<ul>" + "".join(out) + "</ul>"


def _diff_html(data: Mapping[str, Any]) -> str:
    diffs = data.get("diff", [])
    if not diffs:
        return ""
    labels = data.get("labels", {})
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for d in diffs:
        by_pair.setdefault((d["base"], d["candidate"]), []).append(d)
    out = ["<h3>Per-query wins and losses, and what changed in the top k</h3>"]
    for (base, cand), rows in by_pair.items():
        metric = rows[0]["metric"]
        out.append(svg_winloss([r["delta"] for r in rows], f"{cand} vs {base}: {metric} per query"))
        changed = [r for r in rows if r["outcome"] != "tie"]
        wins = sorted((r for r in changed if r["delta"] > 0), key=lambda r: -r["delta"])[:N_DIFF]
        losses = sorted((r for r in changed if r["delta"] < 0), key=lambda r: r["delta"])[:N_DIFF]
        out.append(
            f"<details><summary>{escape(cand)} vs {escape(base)}: biggest {len(wins)} wins and "
            f"{len(losses)} losses (of {len(changed)} changed queries)</summary>"
        )
        for r in [*wins, *losses]:
            cls = "win" if r["delta"] > 0 else "loss"
            out.append(
                f"<div class=diff><b class={cls}>{r['delta']:+.3f}</b> {escape(metric)} "
                f"({r['base_score']:.3f} → {r['candidate_score']:.3f}) — "
                f"<b>{escape(r['query'])}</b> <span class=muted>{escape(r['qid'])}</span>"
                f"<div>entered the top k: {_doc_list(r['entered'], labels)}</div>"
                f"<div>left the top k: {_doc_list(r['left'], labels)}</div></div>"
            )
        out.append("</details>")
    out.append(
        "<p class=muted>The full diff of every query is in <code>diff.jsonl</code> beside "
        "the results.</p>"
    )
    return "\n".join(out)


def _embedding_html(emb: Mapping[str, Any] | None) -> str:
    if not emb or not emb.get("models"):
        return ""
    out = [
        "<h3>Embedding map of chunks</h3><p class=muted>PCA to 2-D of a sample of "
        f"{len(emb['ids'])} chunk vectors per model; colours are the most common documents "
        "(titles). <i>mean cos</i> is the mean pairwise cosine similarity (high = everything "
        "clumped together); <i>nn cos</i> the mean similarity to the nearest neighbour.</p><div>"
    ]
    for role, m in emb["models"].items():
        title = f"{role}: mean cos {m['mean_cos']:.3f}, nn cos {m['mean_nn_cos']:.3f}"
        out.append(
            f"<span style='display:inline-block;width:48%'>"
            f"{svg_scatter(m['points'], emb['groups'], title)}</span>"
        )
    out.append("</div>")
    return "\n".join(out)


def _answers_html(data: Mapping[str, Any]) -> str:
    metrics = [m for m in data["metrics"] if any(m in c["mean"] for c in data["configs"].values())]
    cis = config_cis(data)
    out = [
        "<h2>Answers: grounding, citations, relevance, correctness</h2>",
        f"<p>Data: {_dataset_line(data['dataset'])}. Generator: <code>{escape(data['llm'])}</code>; "
        f"{data['k']} passages per answer.</p>",
        f"<div class=box><b>Limits of the grounding scores.</b> {escape(data['grounding']['limits'])}"
        "</div>",
        "<table><tr><th class=l>configuration</th>"
        + "".join(
            f"<th>{escape(m)}<br><span class=muted>mean [95% CI] (n)</span></th>" for m in metrics
        )
        + "<th>errors</th><th>abstained</th></tr>",
    ]
    for name, cfg in data["configs"].items():
        cells = []
        for m in metrics:
            ci = cis.get(name, {}).get(m)
            extra = (
                f"<br><span class=muted>[{ci[1]:.3f}, {ci[2]:.3f}] ({cfg['n'].get(m, 0)})</span>"
                if ci
                else ""
            )
            cells.append(f"<td>{fmt(cfg['mean'].get(m), 3)}{extra}</td>")
        out.append(
            f"<tr><td class=l>{escape(name)}</td>{''.join(cells)}<td>{cfg['errors']}</td>"
            f"<td>{cfg['abstained']}</td></tr>"
        )
    out.append("</table>")
    judge = data["grounding"].get("judge")
    if judge:
        out.append(
            f"<p>LLM judge: <code>{escape(judge)}</code>, {data['grounding']['judge_runs']} runs per "
            "answer; <i>judge_faithfulness</i> is the mean over runs, and the mean standard "
            "deviation between runs is "
            + ", ".join(
                f"{escape(n)}: {fmt(c.get('judge_mean_std'), 3)}"
                for n, c in data["configs"].items()
            )
            + ".</p>"
        )
    out.append(
        _comparisons_html(data.get("comparisons", []), "Base vs fine-tuned answers (paired)")
    )
    rows = data.get("per_query", [])[:6]
    if rows:
        out.append("<details><summary>Sample answers with per-sentence support</summary>")
        for r in rows:
            sents = "".join(
                f"<li class={'rel' if s['supported'] else ('nrel' if s['is_claim'] else 'muted')}>"
                f"{escape(s['sentence'])} <span class=muted>{escape(s['reason'] or 'not a claim')}</span></li>"
                for s in r.get("sentences", [])
            )
            out.append(
                f"<div class=diff><b>{escape(r['config'])}</b> — {escape(r['query'])}<ul>{sents}</ul></div>"
            )
        out.append("</details>")
    return "\n".join(out)


def _settings_html(retrieval: Mapping[str, Any] | None) -> str:
    if not retrieval:
        return ""
    out = ["<h2>Run configuration and models</h2>"]
    models = retrieval.get("models", {})
    for role in ("base", "finetuned"):
        info = models.get(role)
        if not info:
            continue
        out.append(f"<h3>{escape(role)} model: <code>{escape(info.get('spec'))}</code></h3>")
        if info.get("run"):
            out.append(
                f"<details><summary>run.json</summary><pre>{escape(json.dumps(info['run'], indent=2))}</pre></details>"
            )
        if info.get("model_card"):
            out.append(
                f"<details><summary>model card</summary><pre>{escape(info['model_card'])}</pre></details>"
            )
    if models.get("reranker"):
        out.append(f"<p>Reranker: {escape(models['reranker'])}</p>")
    out.append(
        f"<details><summary>settings</summary><pre>{escape(json.dumps(retrieval.get('settings', {}), indent=2))}</pre></details>"
    )
    return "\n".join(out)


def render_html(
    retrieval: Mapping[str, Any] | None, answers: Mapping[str, Any] | None, title: str
) -> str:
    created = (retrieval or answers or {}).get("created", "")
    body = [f"<h1>{escape(title)}</h1><p class=muted>Created {escape(created)}.</p>"]
    notes = gather_notes(retrieval, answers)
    if notes:
        body.append(
            "<div class=box><b>Notes.</b><ul>"
            + "".join(f"<li>{escape(n)}</li>" for n in notes)
            + "</ul></div>"
        )
    if retrieval:
        body.append(_retrieval_html(retrieval))
    if answers:
        body.append(_answers_html(answers))
    body.append(_settings_html(retrieval))
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )


# --- entry point ----------------------------------------------------------------------------
def latest_result(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p.parent for p in folder.glob("*/results.json")]
    return max(found, key=lambda p: (p / "results.json").stat().st_mtime) if found else None


def write_report(
    retrieval: str | Path | Mapping[str, Any] | None = None,
    answers: str | Path | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    *,
    settings: Settings | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Write report.html, report.md and report.json; returns their paths.

    ``retrieval`` / ``answers`` are saved result folders (or loaded dicts); with ``settings``
    and neither given, the newest folders under ``<workspace>/eval/{retrieval,answers}`` are
    used. ``out_dir`` defaults to the retrieval folder (else the answers folder).
    """
    if retrieval is None and answers is None and settings is not None:
        retrieval = latest_result(Path(settings.eval_dir) / "retrieval")
        answers = latest_result(Path(settings.eval_dir) / "answers")
    if retrieval is None and answers is None:
        raise FileNotFoundError(
            "no eval results to report on; run `rag-app eval retrieval` or `rag-app eval answers`"
        )
    r_data = load_results(retrieval) if isinstance(retrieval, str | Path) else retrieval
    a_data = load_results(answers) if isinstance(answers, str | Path) else answers
    first = r_data or a_data
    assert first is not None
    target = Path(out_dir or first.get("path") or ".")
    target.mkdir(parents=True, exist_ok=True)
    name = (first.get("dataset") or {}).get("name", "eval")
    split = (first.get("dataset") or {}).get("split", "")
    title = title or f"rag-app eval report: {name} ({split})"
    from rag_app.fsutil import atomic_write_text

    paths = {
        "html": target / "report.html",
        "markdown": target / "report.md",
        "json": target / "report.json",
    }
    atomic_write_text(paths["html"], render_html(r_data, a_data, title))
    atomic_write_text(paths["markdown"], render_markdown(r_data, a_data, title))
    summary = {
        "title": title,
        "retrieval": {k: v for k, v in (r_data or {}).items() if k not in ("per_query", "diff")}
        or None,
        "answers": {k: v for k, v in (a_data or {}).items() if k not in ("per_query",)} or None,
    }
    atomic_write_text(paths["json"], json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    return paths


__all__ = [
    "config_cis",
    "render_html",
    "render_markdown",
    "svg_bars",
    "svg_winloss",
    "write_report",
]
