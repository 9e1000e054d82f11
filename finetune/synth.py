"""Synthetic training queries for every chunk (`rag-app synth`).

Two sources, mixed (`synth.llm_queries_per_chunk`, `synth.structural_queries_per_chunk`):

- **LLM queries**: few-shot prompts (`finetune.prompts`) in alternating styles (keyword
  query, natural question), several candidates a chunk, batched through
  `LLM.generate_many`. Raw replies are appended to ``synth/raw.jsonl`` one line per chunk
  as they arrive, keyed by chunk id + prompt version, so a crash or Ctrl-C loses at most
  the batch in flight: the next run skips finished chunks, and a truncated last line (a
  kill mid-write) is cut off and redone.
- **Structural pseudo-queries**: from the corpus's own structure, no LLM needed: the
  section heading with the document's title, and the document's title with the terms
  that set the chunk apart from its sibling chunks as a glossary-style keyword query
  (`finetune.structural`).

Then `finetune.query_filters` cleans and filters every candidate, and a round-trip check with
the base embedder keeps a query only when its chunk ranks in the top
`synth.consistency_top_k` (20; unfiltered queries made the model worse, issue 10). The kept
queries go to ``synth/queries.jsonl`` (rewritten atomically) and the counts to
``synth/report.json``.

Example:
    >>> report = run(load_settings())
    >>> print(report.summary())
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune import query_filters
from finetune.prompts import PromptSet, load_prompts
from finetune.raw_log import RAW_FILE, append_rows, generator_id, raw_key, read_raw
from finetune.split import Origin, kind_of
from finetune.structural import Candidate, clean_heading, structural_queries, term_statistics
from rag_app.chunkstore import load_chunks
from rag_app.config import Settings
from rag_app.fsutil import atomic_write_json, atomic_write_text
from rag_app.types import Chunk

if TYPE_CHECKING:
    from rag_app.embedder import Embedder
    from rag_app.llm.base import LLM

log = logging.getLogger(__name__)

QUERIES_FILE = "queries.jsonl"
KEYWORD_MAX_WORDS = 10  # a "keyword query" longer than this is a pasted fragment
REPORT_FILE = "report.json"


@dataclass
class SynthReport:
    """What one synth run did; `filter` holds generated / kept / dropped-by-reason counts."""

    chunks: int  # asked of the LLM: all eligible ones, or a sample (`synth.max_chunks`)
    chunks_skipped: int
    chunks_eligible: int  # long enough to query
    chunks_generated: int  # chunks the LLM was asked about in this run (not resumed)
    llm_queries: int  # LLM replies written in this run
    seconds: float
    llm_seconds: float
    output: Path
    llm_name: str | None
    prompt_version: str
    filter: query_filters.FilterReport = field(default_factory=query_filters.FilterReport)
    real_examples: int = 0  # real questions used as the question prompt's examples

    @property
    def queries_per_min(self) -> float:
        return 60.0 * self.llm_queries / self.llm_seconds if self.llm_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "chunks_skipped": self.chunks_skipped,
            "chunks_eligible": self.chunks_eligible,
            "chunks_generated": self.chunks_generated,
            "llm_queries": self.llm_queries,
            "llm_queries_per_min": round(self.queries_per_min, 1),
            "seconds": round(self.seconds, 1),
            "llm": self.llm_name,
            "prompt_version": self.prompt_version,
            "real_examples": self.real_examples,
            "output": str(self.output),
            **self.filter.as_dict(),
        }

    def summary(self) -> str:
        rate = f" ({self.queries_per_min:.0f} LLM queries/min)" if self.llm_queries else ""
        real = (
            f", {self.real_examples} real questions as the prompt's examples"
            if self.real_examples
            else ""
        )
        sample = (
            f" (LLM asked about a sample of {self.chunks} of {self.chunks_eligible}, "
            "synth.max_chunks)"
            if self.llm_name is not None and self.chunks < self.chunks_eligible
            else ""
        )
        reused = self.chunks - self.chunks_generated
        kept = (
            f", replies for {reused} chunks reused from {self.llm_name}"
            if self.llm_name is not None and reused > 0
            else ""
        )
        return (
            f"synth: {self.chunks_eligible} chunks{sample} "
            f"({self.chunks_skipped} skipped as too short), "
            f"{self.llm_queries} new LLM replies{rate}{kept}{real}; {self.filter.summary()}; "
            f"{self.seconds:.0f}s -> {self.output}"
        )


# --- the run ------------------------------------------------------------------------------
def select_chunks(chunks: Sequence[Chunk], settings: Settings) -> tuple[list[Chunk], int]:
    """Chunks worth querying (boilerplate-short ones dropped), sampled when capped."""
    cfg = settings.synth
    good = [c for c in chunks if len(query_filters.words(c.text)) >= cfg.min_chunk_words]
    skipped = len(chunks) - len(good)
    if cfg.max_chunks and len(good) > cfg.max_chunks:
        rng = random.Random(settings.seed)
        good = sorted(rng.sample(good, cfg.max_chunks), key=lambda c: (c.doc_id, c.start_char))
    return good, skipped


def _source_title(chunk: Chunk) -> str:
    """Document title and section path as the generator sees them ("Title > Section")."""
    title = clean_heading(chunk.title)
    heads = [clean_heading(h) for h in chunk.heading_path.split(">") if h.strip()]
    if heads and title and query_filters.normalise(heads[0]) == query_filters.normalise(title):
        heads = heads[1:]
    return " > ".join([p for p in [title, *heads] if p])


def real_examples(settings: Settings, chunks: Sequence[Chunk]) -> list[tuple[str, str, str]]:
    """Up to `synth.real_examples` (title, passage, question) examples from the real
    labelled pairs of `finetune.train_data`, training side only (`split_real`, the split
    the guard uses), one a document, seeded; [] without real pairs.

    Promptagator (Dai et al. 2022) showed that a handful of real questions as the
    generator's few-shot examples carries the users' style into synthetic questions.
    """
    from finetune.split import Passages, load_labelled, split_real

    cfg, ft = settings.synth, settings.finetune
    if cfg.real_examples <= 0 or not ft.train_data:
        return []
    passages = Passages.from_chunks(chunks)
    real = []
    for path in ft.train_data:
        real.extend(load_labelled(Path(path), passages, chunks, split=ft.train_data_split))
    train, _ = split_real(real, guard_fraction=ft.labelled_guard_fraction, seed=settings.seed)
    by_id = {c.id: c for c in chunks}
    picked: dict[str, tuple[str, str, str]] = {}
    order = sorted(train, key=lambda p: (p.doc_id, p.query, p.passage_id))
    random.Random(settings.seed).shuffle(order)
    for pair in order:
        chunk = by_id.get(pair.passage_id)
        if chunk is None or pair.doc_id in picked:
            continue
        text = chunk.text[: cfg.real_example_chars]
        picked[pair.doc_id] = (_source_title(chunk), text, pair.query)
        if len(picked) >= cfg.real_examples:
            break
    return list(picked.values())


def chunk_seed(seed: int, chunk_id: str) -> int:
    """The sampling seed of one chunk's prompts (its styles add 0, 1, ...): fixed by the
    run's seed and the chunk, so the same corpus and settings give the same synthetic
    queries whatever batch a chunk falls in."""
    digest = hashlib.sha256(f"{seed}:{chunk_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 2


def _styles_for(cfg, n: int) -> list[str]:
    styles = list(cfg.styles) or ["question"]
    return [styles[i % len(styles)] for i in range(n)]


def generate(
    chunks: Sequence[Chunk],
    llm,
    prompts: PromptSet,
    settings: Settings,
    raw_path: Path,
    *,
    progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], int, int, float]:
    """Fill the raw log for `chunks`; returns (rows by key, chunks done now, replies, seconds)."""
    from tqdm.auto import tqdm

    cfg = settings.synth
    version = prompts.version
    rows = read_raw(raw_path)
    n = cfg.llm_queries_per_chunk
    if n == 0 or llm is None:
        return rows, 0, 0, 0.0
    gen = generator_id(llm, cfg.temperature, cfg.max_new_tokens, cfg.max_chunk_chars)
    todo = [c for c in chunks if raw_key(c.id, version, gen) not in rows]
    if not todo:
        return rows, 0, 0, 0.0
    styles = _styles_for(cfg, n)
    bar = tqdm(
        total=len(chunks),
        initial=len(chunks) - len(todo),
        desc="synth",
        unit="chunk",
        disable=not progress,
    )
    replies = 0
    seconds = 0.0
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        messages = [
            prompts.messages(style, c.text[: cfg.max_chunk_chars], title=_source_title(c))
            for c in batch
            for style in styles
        ]
        began = time.perf_counter()
        outputs = llm.generate_many(
            messages,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            stop=["\n"],
            # one seed per chunk and style, not per batch: a chunk asked again after a
            # crash (in another batch) gets the reply an uninterrupted run gave it, on
            # backends that answer one prompt at a time (llama.cpp, OpenAI-compatible)
            seed=[chunk_seed(settings.seed, c.id) + j for c in batch for j in range(n)],
        )
        seconds += time.perf_counter() - began
        if len(outputs) != len(messages):
            raise RuntimeError(
                f"the LLM returned {len(outputs)} replies for {len(messages)} prompts"
            )
        new_rows: list[dict[str, Any]] = []
        for i, chunk in enumerate(batch):
            replies_i = outputs[i * n : (i + 1) * n]
            new_rows.append(
                {
                    "key": raw_key(chunk.id, version, gen),
                    "chunk_id": chunk.id,
                    "prompt_version": version,
                    "llm": getattr(llm, "name", type(llm).__name__),
                    "generator": gen,
                    "replies": [
                        {"style": s, "raw": r if isinstance(r, str) else ""}
                        for s, r in zip(styles, replies_i, strict=True)
                    ],
                }
            )
        append_rows(raw_path, new_rows)
        for row in new_rows:
            rows[row["key"]] = row
        replies += len(outputs)
        bar.update(len(batch))
    bar.close()
    return rows, len(todo), replies, seconds


def _embed_chunks(embedder, chunks: Sequence[Chunk], settings: Settings):
    """Base-model vectors of every chunk, cached on disk per model fingerprint + chunk set."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256("\n".join(c.id for c in chunks).encode()).hexdigest()[:16]
    cache = settings.cache_dir / "finetune" / f"chunks-{embedder.fingerprint}-{digest}.npy"
    if cache.is_file():
        try:
            vectors = np.load(cache)
            if vectors.shape == (len(chunks), embedder.dim):
                return vectors
        except (OSError, ValueError):
            pass
    vectors = embedder.encode_documents(
        [c.embedding_text() for c in chunks], batch_size=settings.models.embed_batch_size
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, cache)
    return vectors


def filter_candidates(
    candidates: list[Candidate],
    chunks_by_id: dict[str, Chunk],
    all_chunks: Sequence[Chunk],
    settings: Settings,
    prompts: PromptSet,
    report: query_filters.FilterReport,
    *,
    embedder=None,
) -> list[Candidate]:
    """Apply every filter of `finetune.query_filters`; counts go to `report`."""
    cfg = settings.synth
    examples = [q for style in prompts.styles.values() for *_, q in style.examples]
    kept: list[Candidate] = []
    for cand in candidates:
        style = cand.source.split(":", 1)[-1]
        llm = kind_of(cand.source) == "llm"
        question = llm and bool(prompts.styles.get(style) and prompts.styles[style].question)
        reason = query_filters.check_query(
            cand.query,
            chunks_by_id[cand.chunk_id].text,
            question=question,
            min_words=cfg.min_query_words if llm else 1,
            max_words=min(cfg.max_query_words, KEYWORD_MAX_WORDS)
            if cand.source == Origin.LLM_KEYWORD
            else cfg.max_query_words,
            max_copy_overlap=cfg.max_copy_overlap,
            examples=examples if llm else (),
            copy_check=llm,
        )
        if reason:
            report.drop(reason)
        else:
            kept.append(cand)
    # Duplicates: within a chunk near-duplicates; across chunks, an identical query is
    # ambiguous (which chunk answers it?), so every copy goes.
    by_chunk: dict[str, list[list[str]]] = defaultdict(list)
    unique: list[Candidate] = []
    for cand in kept:
        if query_filters.dedupe(
            [cand.query], threshold=cfg.near_duplicate, seen=by_chunk[cand.chunk_id]
        )[0]:
            unique.append(cand)
        else:
            report.drop(query_filters.DUPLICATE)
    owners: dict[str, set[str]] = defaultdict(set)
    for cand in unique:
        owners[query_filters.normalise(cand.query)].add(cand.chunk_id)
    kept = []
    for cand in unique:
        if len(owners[query_filters.normalise(cand.query)]) > 1:
            report.drop(query_filters.DUPLICATE)
        else:
            kept.append(cand)
    # Round trip: the base retriever must already find the source chunk near the top.
    k = cfg.consistency_top_k
    if k > 0 and kept:
        if embedder is None:
            from rag_app.embedder import Embedder

            embedder = Embedder.load(
                settings.models.embedder,
                device=settings.models.device,
                trust_remote_code=settings.models.trust_remote_code,
            )
        passages = _embed_chunks(embedder, all_chunks, settings)
        row_of = {c.id: i for i, c in enumerate(all_chunks)}
        qvecs = embedder.encode_queries([c.query for c in kept])
        rows = [row_of[c.chunk_id] for c in kept]
        ranks = query_filters.source_ranks(qvecs, passages, rows)
        if cfg.consistency_margin > 0:
            margins = query_filters.source_margins(qvecs, passages, rows)
            ranks = [
                r if m >= cfg.consistency_margin else k + 1
                for r, m in zip(ranks, margins, strict=True)
            ]
        if cfg.consistency_bm25:
            from rag_app.store.bm25 import BM25Index

            index = BM25Index.build(list(all_chunks))
            sparse = query_filters.bm25_ranks(
                index, [c.query for c in kept], [c.chunk_id for c in kept]
            )
        else:
            sparse = [1] * len(kept)
        survivors = []
        for cand, rank, sparse_rank in zip(kept, ranks, sparse, strict=True):
            if rank <= k and sparse_rank <= k:
                survivors.append(
                    Candidate(cand.query, cand.chunk_id, cand.doc_id, cand.source, rank)
                )
            else:
                report.drop(query_filters.INCONSISTENT)
        kept = survivors
    # Per-chunk cap: best round-trip rank first, LLM styles and structure interleaved.
    grouped: dict[str, list[Candidate]] = defaultdict(list)
    for cand in kept:
        grouped[cand.chunk_id].append(cand)
    final: list[Candidate] = []
    for cands in grouped.values():
        cands.sort(key=lambda c: (c.rank or 0, kind_of(c.source) == "structural"))
        final.extend(cands[: cfg.keep_per_chunk])
        if len(cands) > cfg.keep_per_chunk:
            report.drop(query_filters.PER_CHUNK_CAP, len(cands) - cfg.keep_per_chunk)
    order = {c.id: i for i, c in enumerate(all_chunks)}
    final.sort(key=lambda c: (order[c.chunk_id], c.source, c.query))
    report.kept = len(final)
    report.by_source = Counter(c.source for c in final)
    return final


def run(
    settings: Settings,
    llm: LLM | None = None,
    progress: bool = True,
    *,
    embedder: Embedder | None = None,
) -> SynthReport:
    """Generate, filter and save synthetic queries for the workspace's chunks.

    `llm` defaults to `rag_app.llm.factory.build_llm(settings)`; with
    `synth.llm_queries_per_chunk = 0` (or `llm.backend = "none"`) only structural queries
    are made. Resumable: finished chunks in ``synth/raw.jsonl`` are not asked again.
    """
    began = time.perf_counter()
    cfg = settings.synth
    all_chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    chunks, skipped = select_chunks(all_chunks, settings)
    prompts = load_prompts(cfg.prompts_file)
    real = real_examples(settings, all_chunks)
    if real:
        prompts = prompts.with_examples("question", real)
    out_dir = settings.synth_dir
    raw_path = out_dir / RAW_FILE
    if llm is None and cfg.llm_queries_per_chunk > 0:
        from rag_app.llm.factory import build_llm

        llm = build_llm(settings)
        if llm is None:
            log.warning("llm.backend is 'none': structural pseudo-queries only")
    rows, done_now, replies, llm_seconds = generate(
        chunks, llm, prompts, settings, raw_path, progress=progress
    )
    version = prompts.version
    candidates: list[Candidate] = []
    report = query_filters.FilterReport()
    llm_name = getattr(llm, "name", None) if llm is not None else None
    if cfg.llm_queries_per_chunk and llm is not None:
        gen = generator_id(llm, cfg.temperature, cfg.max_new_tokens, cfg.max_chunk_chars)
        for chunk in chunks:
            row = rows.get(raw_key(chunk.id, version, gen))
            if row is None:
                continue
            for reply in row.get("replies", []):
                report.generated += 1
                query = query_filters.parse_query(reply.get("raw"))
                if query is None:
                    report.drop(query_filters.EMPTY)
                    continue
                candidates.append(
                    Candidate(query, chunk.id, chunk.doc_id, Origin.llm(reply.get("style", "")))
                )
    if cfg.structural_queries_per_chunk:
        # Structural queries are cheap, so they cover every eligible chunk; `max_chunks`
        # only caps what the (slow) LLM is asked about.
        stats = term_statistics(all_chunks)
        eligible = [
            c for c in all_chunks if len(query_filters.words(c.text)) >= cfg.min_chunk_words
        ]
        for chunk in eligible:
            made = structural_queries(chunk, stats, cfg.structural_queries_per_chunk)
            report.generated += len(made)
            candidates.extend(made)
    by_id = {c.id: c for c in all_chunks}
    kept = filter_candidates(
        candidates, by_id, all_chunks, settings, prompts, report, embedder=embedder
    )
    out_path = out_dir / QUERIES_FILE
    atomic_write_text(
        out_path, "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in kept)
    )
    result = SynthReport(
        chunks=len(chunks),
        chunks_skipped=skipped,
        chunks_eligible=len(all_chunks) - skipped,
        chunks_generated=done_now,
        llm_queries=replies,
        seconds=time.perf_counter() - began,
        llm_seconds=llm_seconds,
        output=out_path,
        llm_name=llm_name,
        prompt_version=version,
        filter=report,
        real_examples=len(real),
    )
    atomic_write_json(out_dir / REPORT_FILE, result.as_dict())
    return result


def load_queries(settings: Settings) -> list[Candidate]:
    """The kept synthetic queries of the last synth run (empty when there are none)."""
    path = settings.synth_dir / QUERIES_FILE
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Candidate(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: {exc}; re-run `rag-app synth`") from exc
    return out
