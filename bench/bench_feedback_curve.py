"""Learning curve of real questions (issue 18): test nDCG@10 gain against the number of
questions users marked, per MedQuAD subset, split by document.

    .venv/bin/python bench/bench_feedback_curve.py                      # report subsets
    .venv/bin/python bench/bench_feedback_curve.py --subsets NINDS,NIHSeniorHealth \\
        --weights 1,4,16 --sizes 50,all --tag dev                       # choose the weight

Protocol, per subset (its own workspace, passages indexed once with the base model):
- questions are grouped by document (the MedQuAD focus, i.e. the passage title); a seeded
  40% of the documents are *unseen*: their questions are only tested, never marked;
- of the other documents' questions, a seeded 30% are held back as *seen* test candidates;
  N questions (seeded) are drawn from the rest and played through the chat's feedback path
  (`eval.feedback_play`: top-5 hybrid results shown, each marked from the qrels), then
  `rag-app feedback export` and the default `rag-app finetune` (query adapter, the guard
  held out by the product from the marks) run on them, with or without the structural
  synthetic queries (no LLM: `synth.llm_queries_per_chunk = 0`);
- scored: dense retrieval, exact cosine over every passage of the subset, nDCG@10 of the
  *served* retriever (the run when the guard recommends it, else the base model) minus the
  base model's, with a 95% paired bootstrap, on seen-document questions (held-back
  questions about documents that got at least one mark) and unseen-document questions.

Weight sweeps (`--weights 4,16` or shares `--weights s0.3,s0.5`) are for choosing
`finetune.labelled_weight` / `finetune.labelled_share` on subsets that
are not reported (`--tag dev`). Writes bench/results/feedback-curve-<date>[-tag].{json,md}
and a plot (.png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS

from rag_app.config import updated_finetune

MEDQUAD = REPO.parent / "shared" / "datasets" / "medquad"


def subset_dataset(source: str, root: Path) -> Path:
    """A BEIR folder of one MedQuAD source: its passages, and all its questions (qrels/all)."""
    folder = root / "data" / source
    if (folder / "qrels" / "all.tsv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    keep = {}
    with (MEDQUAD / "corpus.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    lines = [r for r in rows if (r.get("metadata") or {}).get("source") == source]
    keep = {r["_id"] for r in lines}
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    qrels = ["query-id\tcorpus-id\tscore\n"]
    wanted = set()
    for split in ("train", "dev", "test"):
        for line in (MEDQUAD / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
            qid, pid, score = line.split("\t")
            if pid in keep:
                qrels.append(f"{qid}\t{pid}\t{score}\n")
                wanted.add(qid)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "all.tsv").write_text("".join(qrels))
    with (MEDQUAD / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [line for line in handle if json.loads(line)["_id"] in wanted]
    (folder / "queries.jsonl").write_text("".join(queries))
    return folder


class Scorer:
    """Exact dense nDCG@10 of the base model and of adapter runs, with cached vectors."""

    def __init__(self, ns, dataset) -> None:
        from _dense import ExactDense

        self.exact = ExactDense(ns)
        self.exact.encode(dataset.queries)
        self.qrels = dataset.qrels

    def per_query(self, qids: list[str], run: Path | None) -> dict[str, float]:
        from rag_app.ir.metrics import ndcg_at_k

        top = self.exact.top(qids, run, 10)
        return {qid: ndcg_at_k(self.qrels[qid], [pid for pid, _ in top[qid]], 10) for qid in qids}


def gain(scorer: Scorer, qids: list[str], run: Path | None) -> dict[str, Any] | None:
    from rag_app.ir.stats import paired_bootstrap

    if not qids:
        return None
    base = scorer.per_query(qids, None)
    served = scorer.per_query(qids, run) if run is not None else base
    ci = paired_bootstrap([base[q] for q in qids], [served[q] for q in qids], seed=0)
    mean = sum(base.values()) / len(base)
    return {
        "n": len(qids),
        "base": mean,
        "delta": ci.mean_diff,
        "ci": [ci.ci_low, ci.ci_high],
    }


def one_point(ns, scorer, dataset, args, *, subset, seed, size, synthetic, weight, splits):
    """Play `size` questions as feedback, export, fine-tune, score served vs base."""
    from eval.feedback_play import play_feedback
    from finetune import adapter, train
    from finetune import data as data_mod
    from finetune.data import NoTrainingDataError
    from rag_app.feedback.export import export

    began = time.perf_counter()
    pool, seen_pool, unseen, title_of = splits
    rng = random.Random(seed * 1000 + 17)
    asked = rng.sample(pool, min(size, len(pool)))
    seen_docs = {title_of[q] for q in asked}
    seen = [q for q in seen_pool if title_of[q] in seen_docs]
    shutil.rmtree(ns.feedback_dir, ignore_errors=True)
    point: dict[str, Any] = {
        "subset": subset,
        "seed": seed,
        "requested": "all" if size >= 10**6 else str(size),
        "size": len(asked),
        "synthetic": synthetic,
        "weight": weight,
        "method": args.method,
    }
    train_data = []
    if asked:
        played = play_feedback(ns, {q: dataset.queries[q] for q in asked}, dataset.qrels)
        out = args.workspace / "exports" / f"{subset}-{seed}-{size}"
        report = export(ns, out, force=True)
        train_data = [out]
        point.update({"marked_relevant": report.relevant, "found_in_top5": played.found})
    settings = ns.model_copy(
        update={
            "seed": seed,
            "finetune": updated_finetune(
                ns.finetune,
                **{
                    "train_data": train_data,
                    "use_synthetic": synthetic,
                    **(
                        {"labelled_share": float(weight[1:])}
                        if isinstance(weight, str)
                        else {"labelled_weight": weight}
                    ),
                    "reranker": {"enabled": False},
                },
            ),
        }
    )
    run = None
    try:
        data = data_mod.prepare(settings)
        name = f"fb-{subset}-{seed}-{size}-{'syn' if synthetic else 'real'}-w{weight}"
        if args.method == "full":
            name += "-full"
        shutil.rmtree(settings.models_dir / name, ignore_errors=True)
        trainer = train.train_embedder if args.method == "full" else adapter.train_adapter
        trained = trainer(settings, data, name=name, progress=False)
        point.update(
            {
                "recommended": trained.recommended,
                "verified": trained.verified,
                "guard_queries": trained.record.guard["queries"],
                "train_pairs": trained.train_pairs,
                "train_seconds": round(trained.train_seconds, 1),
            }
        )
        run = trained.path if trained.recommended else None
        point["tuned_seen"] = gain(scorer, seen, trained.path)
        point["tuned_unseen"] = gain(scorer, unseen, trained.path)
    except NoTrainingDataError:
        point.update({"recommended": False, "verified": False, "guard_queries": 0})
    point["seen"] = gain(scorer, seen, run)
    point["unseen"] = gain(scorer, unseen, run)
    point["seconds"] = round(time.perf_counter() - began, 1)
    return point


def splits_for(dataset, seed: int):
    """(feedback pool, seen-test candidates, unseen test, title of each question)."""
    title_of = {}
    for qid, judged in dataset.qrels.items():
        titles = {dataset.corpus[d].get("title") or d for d, g in judged.items() if g > 0}
        if len(titles) == 1:
            title_of[qid] = titles.pop()
    titles = sorted(set(title_of.values()))
    rng = random.Random(seed)
    rng.shuffle(titles)
    unseen_titles = set(titles[: round(0.4 * len(titles))])
    unseen = sorted(q for q, t in title_of.items() if t in unseen_titles)
    rest = sorted(q for q, t in title_of.items() if t not in unseen_titles)
    rng.shuffle(rest)
    cut = round(0.3 * len(rest))
    return sorted(rest[cut:]), sorted(rest[:cut]), unseen, title_of


def fmt(cell: dict | None) -> str:
    if not cell:
        return "–"
    low, high = cell["ci"]
    return f"{cell['delta'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def write(stem: Path, points: list[dict], meta: dict) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({**meta, "points": points}, indent=2))
    md = [
        f"Command: `{meta['command']}` ({meta['date']}, {meta['machine']})",
        "",
        "Served = the run when its guard recommends it, else the base model. Gains are "
        "nDCG@10 points, 95% paired bootstrap.",
        "",
        "| subset | seed | N real | synthetic | weight | guard q | recommended "
        "| seen docs: served gain (n) | unseen docs: served gain (n) | run's own gain, unseen "
        "| s |",
        "|---|---:|---:|---|---:|---:|---|---|---|---|---:|",
    ]
    for p in points:
        seen = p.get("seen")
        unseen = p.get("unseen")
        md.append(
            f"| {p['subset']} | {p['seed']} | {p['size']} | {'yes' if p['synthetic'] else 'no'} "
            f"| {p['weight']} | {p.get('guard_queries', 0)} | {p.get('recommended')} "
            f"| {fmt(seen)} ({seen['n'] if seen else 0}) | {fmt(unseen)} "
            f"({unseen['n'] if unseen else 0}) | {fmt(p.get('tuned_unseen'))} | {p['seconds']} |"
        )
    summary = defaultdict(list)
    for p in points:
        for side in ("seen", "unseen"):
            if p.get(side):
                key = (
                    p["subset"],
                    p["size"] if p["size"] < 10**6 else "all",
                    p["synthetic"],
                    p["weight"],
                    side,
                )
                summary[key].append(p[side]["delta"] * 100)
    md += [
        "",
        "Mean over seeds:",
        "",
        "| subset | N | synthetic | weight | side | mean gain | seeds |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for key, values in sorted(summary.items(), key=lambda kv: tuple(map(str, kv[0]))):
        subset, size, syn, weight, side = key
        md.append(
            f"| {subset} | {size} | {'yes' if syn else 'no'} | {weight} | {side} "
            f"| {sum(values) / len(values):+.2f} | {len(values)} |"
        )
    text = "\n".join(md) + "\n"
    stem.with_suffix(".md").write_text(text)
    return text


SIZES = ("0", "10", "25", "50", "100", "300", "all")


def requested(points: list[dict]) -> list[str]:
    """The N each point was asked for ("all" included), from the order points are made in
    (a small subset's pool can make "300" and "all" the same number of questions)."""
    out: list[str] = []
    seen: dict[tuple, int] = defaultdict(int)
    for p in points:
        key = (p["subset"], p["seed"], p["synthetic"], p["weight"])
        if "requested" in p:
            out.append(str(p["requested"]))
            continue
        offset = 0 if p["synthetic"] else 1  # N = 0 is skipped without synthetic pairs
        out.append(SIZES[min(seen[key] + offset, len(SIZES) - 1)])
        seen[key] += 1
    return out


def plot(stem: Path, points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = sorted({p["subset"] for p in points})
    asked = requested(points)
    fig, axes = plt.subplots(1, len(subsets), figsize=(5 * len(subsets), 4), squeeze=False)
    for ax, subset in zip(axes[0], subsets, strict=True):
        for syn in (True, False):
            for side, style in (("unseen", "-"), ("seen", "--")):
                by_size = defaultdict(list)
                for p, n in zip(points, asked, strict=True):
                    if p["subset"] == subset and p["synthetic"] == syn and p.get(side):
                        by_size[SIZES.index(n)].append(p[side]["delta"] * 100)
                if not by_size:
                    continue
                xs = sorted(by_size)
                ys = [sum(by_size[x]) / len(by_size[x]) for x in xs]
                label = f"{side} docs, {'real + structural' if syn else 'real only'}"
                ax.plot(xs, ys, style, marker="o", label=label)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(SIZES)), SIZES)
        ax.set_title(f"MedQuAD {subset}")
        ax.set_xlabel("real questions marked (N, mean of seeds)")
        ax.set_ylabel("served nDCG@10 gain (points)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subsets", default="CancerGov,NHLBI,NIDDK")
    parser.add_argument("--sizes", default="0,10,25,50,100,300,all")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--weights",
        default="",
        help="default: finetune.labelled_weight; 's0.3' sets finetune.labelled_share instead",
    )
    parser.add_argument("--synthetic", default="yes,no", help="with / without structural pairs")
    parser.add_argument(
        "--method",
        choices=("adapter", "full"),
        default="adapter",
        help="query adapter (the default) or full fine-tuning (`rag-app finetune --full`)",
    )
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-feedback")
    parser.add_argument("--tag", default="")
    parser.add_argument("--replot", type=Path, help="only redraw the plot of a results .json")
    args = parser.parse_args(argv)
    if args.replot:
        plot(args.replot.with_suffix(""), json.loads(args.replot.read_text())["points"])
        return 0

    from eval.sets import ingest_beir_corpus
    from finetune import synth
    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.ir.beir import fingerprint, load_beir

    settings = load_settings(
        workspace=args.workspace, llm={"backend": "none"}, synth={"llm_queries_per_chunk": 0}
    )
    weights: list[int | str] = [
        w if w.startswith("s") else int(w) for w in args.weights.split(",") if w
    ] or [settings.finetune.labelled_weight]
    sizes = [10**9 if s == "all" else int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    synthetic = [s.strip() == "yes" for s in args.synthetic.split(",")]
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    meta = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": "python bench/bench_feedback_curve.py " + " ".join(argv or sys.argv[1:]),
    }
    stem = RESULTS / f"feedback-curve-{date}{'-' + args.tag if args.tag else ''}"
    points: list[dict] = []
    for subset in args.subsets.split(","):
        began = time.perf_counter()
        folder = subset_dataset(subset, args.workspace)
        dataset = load_beir(folder, split="all", on_duplicate_query="disambiguate")
        ns = ingest_beir_corpus(settings, dataset, fingerprint(folder))
        index.run(ns, progress=False)
        if True in synthetic:
            print(f"[{subset}] {synth.run(ns, progress=False).summary()}")
        scorer = Scorer(ns, dataset)
        print(f"[{subset}] ready in {time.perf_counter() - began:.0f}s", flush=True)
        for seed in seeds:
            splits = splits_for(dataset, seed)
            for size in sizes:
                for syn in synthetic:
                    if size == 0 and not syn:
                        continue  # nothing to train: the base model by definition
                    for weight in weights if size else weights[:1]:
                        point = one_point(
                            ns,
                            scorer,
                            dataset,
                            args,
                            subset=subset,
                            seed=seed,
                            size=size,
                            synthetic=syn,
                            weight=weight,
                            splits=splits,
                        )
                        print(
                            json.dumps(
                                {
                                    k: point[k]
                                    for k in (
                                        "subset",
                                        "seed",
                                        "size",
                                        "synthetic",
                                        "weight",
                                        "recommended",
                                    )
                                }
                            ),
                            "seen",
                            fmt(point["seen"]),
                            "unseen",
                            fmt(point["unseen"]),
                            flush=True,
                        )
                        points.append(point)
                        write(stem, points, meta)
    text = write(stem, points, meta)
    plot(stem, points)
    print(text)
    print(f"written {stem}.json / .md / .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
