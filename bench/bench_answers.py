"""Answer modes on the shipped corpus's questions: is the answer right, and how fast?

    .venv/bin/python bench/bench_answers.py                       # extractive, base model
    .venv/bin/python bench/bench_answers.py --generative          # + the bundled LLM (llama.cpp)
    .venv/bin/python bench/bench_answers.py --finetuned <run name>   # its embedder scores

`corpus/eval` is split by document as `rag-app demo` splits it (seeded, half the documents'
questions play the users and train the feedback run): that half is **dev** (where the
extractive weights and the abstain threshold were chosen), the other half **test**. Every
mode answers the same questions from the same served hybrid retrieval (top 5) in one run.
Out-of-domain questions (MedQuAD's, asked of an aircraft-maintenance library) measure
abstention where the answer is not in the documents.

Reports per mode and split: key-fact recall, token F1, abstention, answers over 80 words,
yes/no polarity errors (listed), and latency after retrieval p50 / p95; the paired bootstrap
of key-fact recall, extractive against generative. Metrics: `eval.answer_quality`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import DEFAULT_DATASET, REPO, percentile, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(REPO / "workspace"))
    parser.add_argument("--corpus", default=str(REPO / "corpus"))
    parser.add_argument("--generative", action="store_true", help="Also the bundled LLM.")
    parser.add_argument("--backend", default="llamacpp", help="LLM backend for --generative.")
    parser.add_argument("--finetuned", default=None, help="A fine-tuned run of the workspace.")
    parser.add_argument("--splits", default="dev,test")
    parser.add_argument(
        "--generative-limit",
        type=int,
        default=0,
        help="Generate for only the first N questions of each split (0: all); the paired "
        "comparison uses those questions.",
    )
    parser.add_argument("--ood", type=int, default=40, help="Out-of-domain questions.")
    parser.add_argument(
        "--dense-units",
        type=int,
        default=None,
        help="Override rag_app.extractive.DENSE_UNITS (0: encode every unit).",
    )
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    from eval.answer_quality import answer_body, score_answer
    from eval.feedback_play import split_by_document
    from eval.sets import _references_from
    from rag_app.chat import BASELINE, ChatService, RetrieverChoice
    from rag_app.config import load_settings
    from rag_app.ir.beir import load_beir
    from rag_app.ir.stats import compare

    PLAIN = RetrieverChoice.of(BASELINE, "hybrid", False)  # the served hybrid, no reranker
    if args.dense_units is not None:
        from rag_app import extractive as extractive_mod

        extractive_mod.DENSE_UNITS = args.dense_units or 10**9

    base = load_settings(workspace=Path(args.workspace), corpus=Path(args.corpus))
    dataset = load_beir(Path(args.corpus) / "eval", split="test")
    split = split_by_document(dataset.qrels, 0.5, seed=base.seed)
    references, _ = _references_from(dataset)
    wanted = set(args.splits.split(","))
    questions = [
        (qid, dataset.queries[qid], name)
        for name, ids in (("dev", split.feedback), ("test", split.test))
        if name in wanted
        for qid in ids
        if qid in references
    ]
    ood = load_beir(DEFAULT_DATASET, split="dev", on_duplicate_query="drop")
    ood_questions = list(ood.queries.values())[: args.ood]

    extractive = base.model_copy(
        update={"answer": base.answer.model_copy(update={"mode": "extractive"})}
    )
    modes: dict[str, tuple[ChatService, str]] = {
        "extractive": (ChatService(extractive, load_llm=False), BASELINE)
    }
    if args.finetuned:  # a run of this workspace, by name (`rag-app runs`)
        modes["extractive (fine-tuned)"] = (ChatService(extractive, load_llm=False), args.finetuned)
    if args.generative:
        gen = base.model_copy(
            update={
                "answer": base.answer.model_copy(update={"mode": "generative"}),
                "llm": base.llm.model_copy(update={"backend": args.backend}),
            }
        )
        modes["generative (bundled 135M)"] = (ChatService(gen), BASELINE)

    retrieval = ChatService(base, load_llm=False)
    rows: dict[str, list[dict]] = {m: [] for m in modes}
    for i, (qid, text, name) in enumerate(questions):
        hits = retrieval.search(text, PLAIN)
        for mode, (service, key) in modes.items():
            if "generative" in mode and args.generative_limit:
                done = sum(r["split"] == name for r in rows[mode])
                if done >= args.generative_limit:
                    continue
            t0 = time.perf_counter()
            final = service.answer(text, hits, choice=RetrieverChoice.of(key, "hybrid", False))
            elapsed = (time.perf_counter() - t0) * 1000
            body = answer_body(final)
            score = score_answer(body, references[qid], abstained=final.abstained)
            rows[mode].append(
                {
                    "id": qid,
                    "split": name,
                    "question": text,
                    "reference": references[qid],
                    "answer": final.text,
                    "mode": final.mode,
                    "ms": elapsed,
                    **score.__dict__,
                }
            )
        print(f"{i + 1}/{len(questions)} {qid}", file=sys.stderr)

    ood_abstained: dict[str, float] = {}
    for mode, (service, key) in modes.items():
        if "generative" in mode:
            continue
        n = 0
        for text in ood_questions:
            hits = retrieval.search(text, PLAIN)
            final = list(
                service.answer_turn(text, hits, choice=RetrieverChoice.of(key, "hybrid", False))
            )[-1]
            n += final.abstained
        ood_abstained[mode] = n / max(len(ood_questions), 1)

    md = [
        f"Answer modes on corpus/eval ({base.workspace}), served hybrid top 5, "
        f"{time.strftime('%Y-%m-%d')}; `python bench/bench_answers.py "
        + " ".join(sys.argv[1:])
        + "`",
        "",
        "| mode | split | n | key-fact recall | token F1 | abstained | > 80 words | polarity errors | "
        "ms after retrieval p50 / p95 | out-of-domain abstained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, results in rows.items():
        for name in ("dev", "test"):
            part = [r for r in results if r["split"] == name]
            if not part:
                continue
            recall = [r["key_fact_recall"] for r in part if r["key_fact_recall"] is not None]
            ms = [r["ms"] for r in part]
            errors = [r["id"] for r in part if r["polarity_error"]]
            md.append(
                f"| {mode} | {name} | {len(part)} | {statistics.fmean(recall):.2f} | "
                f"{statistics.fmean(r['token_f1'] for r in part):.2f} | "
                f"{statistics.fmean(r['abstained'] for r in part):.2f} | "
                f"{sum(r['words'] > 80 for r in part)} | {len(errors)} {' '.join(errors)} | "
                f"{statistics.median(ms):.0f} / {percentile(ms, 95):.0f} | "
                f"{ood_abstained.get(mode, float('nan')):.2f} |"
            )
    if "generative (bundled 135M)" in rows:
        for name in ("dev", "test"):
            ext = {
                r["id"]: r["key_fact_recall"]
                for r in rows["extractive"]
                if r["split"] == name and r["key_fact_recall"] is not None
            }
            gen = {
                r["id"]: r["key_fact_recall"]
                for r in rows["generative (bundled 135M)"]
                if r["split"] == name and r["key_fact_recall"] is not None
            }
            shared = sorted(ext.keys() & gen.keys())
            if shared:
                c = compare(
                    {q: gen[q] for q in shared}, {q: ext[q] for q in shared}, n_resamples=2000
                )
                md.append("")
                md.append(
                    f"{name}: key-fact recall extractive - generative = {c.delta:+.2f} "
                    f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}] (95% paired bootstrap, n={c.n}, p={c.p_value:.3g})"
                )
    tag = f"-{args.tag}" if args.tag else ""
    write_results(f"answers{tag}", {"rows": rows, "ood_abstained": ood_abstained}, md)


if __name__ == "__main__":
    main()
