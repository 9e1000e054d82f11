"""Synthetic-query throughput (issue 21): the product's LLM path against bare loops.

    .venv/bin/python bench/bench_synth.py                        # llama.cpp, 48 passages
    .venv/bin/python bench/bench_synth.py --styles question,keyword --n 32
    .venv/bin/python bench/bench_synth.py --backend embedded --n 16

Same prompts for every path: the synth prompt (`finetune.prompts.PromptSet`, few-shot
examples, then the passage) for `--n` medquad-small passages, one prompt per passage and
style in synth's order, `synth.max_new_tokens`, `synth.temperature`, stop at a newline, the
seeds synth gives them. Paths, run in turn in one process after a warm-up, `--repeats`
times, medians compared:

llama.cpp
- "bare, no cache": `Llama.create_chat_completion` per prompt after `Llama.reset()`, i.e.
  every prompt evaluated from its first token;
- "bare": `create_chat_completion` per prompt (llama-cpp-python reuses the KV cache of the
  longest prefix shared with the previous prompt);
- "rag-app": `LlamaCppLLM.generate_many`, the path `rag-app finetune` takes.
  Each at llama-cpp-python's default threads (generation on half the CPUs, prompt
  evaluation on all) and at `--threads` for generation, set on the same model with
  `llama_set_n_threads`. Prompt-evaluation and generation time come from llama.cpp's own
  counters (`llama_perf_context`), so the share of each is measured, not estimated.

embedded (transformers)
- "bare": `model.generate` one prompt at a time; "rag-app": `EmbeddedLLM.generate_many`
  (left-padded batches of `llm.batch_size`, the shared few-shot prefix computed once,
  `rag_app.llm.prefix_cache`); "rag-app, prefix evaluated per prompt (before)": the same
  batches with the prefix cache off, the path before it.

Outputs of two paths are compared reply by reply: seeded sampling in llama.cpp is
deterministic, so identical replies mean the faster path changed nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from _common import DEFAULT_DATASET


def load_prompts(dataset: Path, n: int, styles: list[str]):
    """Synth's prompts for the first `n` passages, grouped as synth's `generate_many` calls
    (`synth.batch_size` chunks x styles each), with the seeds synth gives them."""
    from finetune.prompts import PromptSet
    from finetune.synth import chunk_seed
    from rag_app.config import load_settings

    settings = load_settings()
    cfg = settings.synth
    prompts = PromptSet()
    rows = []
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    calls: list[tuple[list, list[int]]] = []  # (messages, seeds) of each generate_many call
    for start in range(0, len(rows), cfg.batch_size):
        batch = rows[start : start + cfg.batch_size]
        messages = [
            prompts.messages(style, row["text"][: cfg.max_chunk_chars], title=row.get("title", ""))
            for row in batch
            for style in styles
        ]
        seeds = [
            chunk_seed(settings.seed, row["_id"]) + j for row in batch for j in range(len(styles))
        ]
        calls.append((messages, seeds))
    return calls


def timed(fn: Callable[[], list[str]], counters: Callable[[], dict] | None):
    before = counters() if counters else {}
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    after = counters() if counters else {}
    return out, seconds, {k: after[k] - before[k] for k in after}


def per_prompt(calls):
    """(messages, seed) of every prompt: each prompt has its own seed (synth's per chunk
    and style seeds)."""
    return [(m, seeds[i]) for messages, seeds in calls for i, m in enumerate(messages)]


def llamacpp_paths(args, calls):
    import llama_cpp

    from rag_app.config import load_settings
    from rag_app.llm.llamacpp import LlamaCppLLM, load_llama
    from rag_app.models import resolve_generator

    settings = load_settings()
    llama = load_llama(resolve_generator(settings.models.generator))
    llm = LlamaCppLLM(llama, temperature=settings.synth.temperature)
    kwargs = {
        "max_tokens": settings.synth.max_new_tokens,
        "temperature": settings.synth.temperature,
        "stop": ["\n"],
    }

    def counters() -> dict:
        perf = llama_cpp.llama_perf_context(llama.ctx)
        return {
            "prompt_ms": perf.t_p_eval_ms,
            "gen_ms": perf.t_eval_ms,
            "prompt_tokens": perf.n_p_eval,
            "gen_tokens": perf.n_eval,
        }

    def bare(reset: bool) -> list[str]:
        out = []
        for m, seed in per_prompt(calls):
            if reset:
                llama.reset()  # forget the evaluated tokens: no prefix match, all evaluated
            reply = llama.create_chat_completion(messages=m, seed=seed, **kwargs)
            out.append((reply["choices"][0]["message"].get("content") or "").strip())
        return out

    def ours() -> list[str]:
        out = []
        for messages, seed in calls:
            out += llm.generate_many(
                messages,
                max_new_tokens=settings.synth.max_new_tokens,
                temperature=settings.synth.temperature,
                stop=["\n"],
                seed=seed,
            )
        return out

    default_threads = (llama.n_threads, llama.n_threads_batch)
    threads = [default_threads] + [
        (t, max(t, default_threads[1])) for t in args.threads if t != default_threads[0]
    ]
    paths = []
    for gen, batch in threads:

        def set_threads(gen=gen, batch=batch) -> None:
            llama_cpp.llama_set_n_threads(llama.ctx, gen, batch)

        tag = f"threads {gen}/{batch}"
        paths += [
            (f"bare, no cache, {tag}", set_threads, lambda: bare(True)),
            (f"bare, {tag}", set_threads, lambda: bare(False)),
            (f"rag-app, {tag}", set_threads, ours),
        ]
    return paths, counters


def embedded_paths(args, calls):
    import torch

    from rag_app.config import load_settings
    from rag_app.llm.factory import build_llm

    settings = load_settings(llm={"backend": "embedded"})
    llm = build_llm(settings)
    kwargs = {
        "max_new_tokens": settings.synth.max_new_tokens,
        "temperature": settings.synth.temperature,
        "stop": ["\n"],
    }

    def bare() -> list[str]:
        out = []
        for m, seed in per_prompt(calls):
            torch.manual_seed(seed)
            out += llm.generate_many([m], seed=seed, **kwargs)
        return out

    def ours() -> list[str]:
        out = []
        for messages, seed in calls:
            out += llm.generate_many(messages, seed=seed, **kwargs)
        return out

    from rag_app.llm import embedded

    def without_prefix_cache() -> None:
        embedded.MIN_SHARED_TOKENS = 10**9

    def with_prefix_cache(default: int = embedded.MIN_SHARED_TOKENS) -> None:
        embedded.MIN_SHARED_TOKENS = default

    return [
        ("bare", with_prefix_cache, bare),
        ("rag-app, prefix evaluated per prompt (before)", without_prefix_cache, ours),
        ("rag-app", with_prefix_cache, ours),
    ], None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["llamacpp", "embedded"], default="llamacpp")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--n", type=int, default=48, help="Passages.")
    parser.add_argument("--styles", default="question")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", default=str(os.cpu_count() or 1), help="Generation threads to try too."
    )
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    calls = load_prompts(args.dataset, args.n, args.styles.split(","))
    n_prompts = sum(len(messages) for messages, _ in calls)
    build = llamacpp_paths if args.backend == "llamacpp" else embedded_paths
    paths, counters = build(args, calls)

    paths[0][1]()
    paths[0][2]()  # warm-up (model load, first allocations)
    times: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    perf: dict[str, list[dict]] = {name: [] for name, _, _ in paths}
    outputs: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        order = paths if repeat % 2 == 0 else paths[::-1]
        for name, prepare, fn in order:
            prepare()
            outputs[name], seconds, spent = timed(fn, counters)
            times[name].append(seconds)
            perf[name].append(spent)

    date = datetime.now(UTC).date().isoformat()
    print(
        f"\n### Synthetic queries: {args.backend}, {n_prompts} prompts "
        f"({args.n} {args.dataset.name} passages x styles {args.styles}); {date}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print(f"Command: `python bench/bench_synth.py {' '.join(sys.argv[1:])}`\n")
    base_name = paths[0][0]
    base = statistics.median(times[base_name])
    header = "| path | median s | queries/min | vs " + base_name + " |"
    if counters:
        header += " prompt tokens / query | prompt s share | generated tokens / query |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name, values in times.items():
        median = statistics.median(values)
        row = f"| {name} | {median:.1f} | {60 * n_prompts / median:.1f} | {base / median:.2f}x |"
        if counters:
            spent = perf[name][len(perf[name]) // 2]
            total = spent["prompt_ms"] + spent["gen_ms"]
            row += (
                f" {spent['prompt_tokens'] / n_prompts:.0f} "
                f"| {spent['prompt_ms'] / total:.0%} "
                f"| {spent['gen_tokens'] / n_prompts:.1f} |"
            )
        print(row)
    names = list(outputs)
    for i, name in enumerate(names[1:], start=1):
        other = names[i - 1] if args.backend == "embedded" else names[0]
        same = sum(a == b for a, b in zip(outputs[other], outputs[name], strict=True))
        print(f"\nreplies identical to {other!r}: {name!r} {same}/{n_prompts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
