"""How much a generated question owes to its passage: the generator's pointwise mutual
information, log P(q | prompt with the passage) - log P(q | the same prompt, passage empty).

A candidate of issue 19 (query likelihood, as in UPR and doc2query--): the small
generator's off-target questions ("How will I prepare for my appointment?") are likely
with or without the passage, so their PMI is low; a question that names what the passage
says gains from seeing it. Scored with the embedded transformers model the generator
defaults to (SmolLM2-135M), whatever backend wrote the replies, on the synth prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def _logprob(loaded, prompt: str, continuation: str) -> float:
    """Sum of log P(continuation tokens | prompt) under the model."""
    import torch

    tok = loaded.tokenizer
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    tail = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + tail], device=loaded.device)
    with torch.inference_mode():
        logits = loaded.model(ids).logits[0, len(head) - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp.gather(1, torch.tensor(tail, device=logp.device)[:, None]).sum())


def score_questions(
    settings, chunks: Sequence, questions: Sequence[tuple[str, str, str]], cache: Path
) -> dict[tuple[str, str], float]:
    """PMI of each (chunk id, style, question); cached as JSON lines in `cache`."""
    from finetune.prompts import load_prompts
    from finetune.synth import _source_title
    from rag_app.llm.embedded import EmbeddedLLM, load_model
    from rag_app.models import resolve_device, resolve_generator

    done: dict[tuple[str, str], float] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[(row["chunk_id"], row["query"])] = row["pmi"]
    todo = [q for q in questions if (q[0], q[2]) not in done]
    if not todo:
        return done
    prompts = load_prompts(settings.synth.prompts_file)
    loaded = load_model(
        resolve_generator(settings.models.generator),
        device=resolve_device(settings.models.device),
        cache_root=settings.cache_dir / "llm",
    )
    llm = EmbeddedLLM(loaded)
    by_id = {c.id: c for c in chunks}
    limit = settings.synth.max_chunk_chars
    empty = {style: llm._prompt(prompts.messages(style, "", title="")) for style in prompts.styles}
    with cache.open("a", encoding="utf-8") as out:
        for chunk_id, style, query in todo:
            chunk = by_id[chunk_id]
            full = llm._prompt(
                prompts.messages(style, chunk.text[:limit], title=_source_title(chunk))
            )
            pmi = _logprob(loaded, full, query) - _logprob(loaded, empty[style], query)
            done[(chunk_id, query)] = pmi
            out.write(json.dumps({"chunk_id": chunk_id, "query": query, "pmi": pmi}) + "\n")
    return done
