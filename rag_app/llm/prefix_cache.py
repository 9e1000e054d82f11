"""A few-shot prefix computed once and shared by every prompt of a batch (embedded backend).

Synth's prompts are the same system line and worked examples (~275 tokens) followed by one
passage; without this, a left-padded batch evaluates that prefix again for every prompt,
and evaluating prompts is most of the backend's time. The prefix's keys and values are
computed once (batch of one, positions 0..L-1) and placed in each row of a left-padded
batch at the columns where that row's prefix sits (a row with p padding columns holds
prefix tokens 0..L-p-1 in columns p..L-1; its last p prefix tokens are evaluated with its
passage). Positions follow the attention mask, so every token keeps the position it has
without the cache; only floating-point rounding differs from evaluating the whole prompt.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

# Below this many shared tokens the copying costs more than it saves.
MIN_SHARED_TOKENS = 32


def shared_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    if not rows:
        return 0
    first = rows[0]
    length = min(len(r) for r in rows) - 1
    for i in range(max(0, length)):
        token = first[i]
        if any(r[i] != token for r in rows):
            return i
    return max(0, length)


class PrefixCache:
    """The keys and values of one token prefix under one causal language model."""

    def __init__(self, model: Any, prefix: Sequence[int]) -> None:
        import torch

        self.model = model
        self.prefix = tuple(prefix)
        ids = torch.tensor([list(prefix)], device=model.device)
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]
        # transformers 5 names the argument `cache` (`past_key_values` is deprecated there)
        forward = inspect.signature(model.forward).parameters
        self.cache_argument = "cache" if "cache" in forward else "past_key_values"

    def inputs(self, rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any]:
        """`generate` arguments for `rows` (each starting with the prefix), left-padded."""
        import torch
        from transformers import DynamicCache

        n, width_prefix = len(rows), len(self.prefix)
        width = max(map(len, rows))
        device = self.model.device
        input_ids = torch.full((n, width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((n, width), dtype=torch.long, device=device)
        pads = [width - len(r) for r in rows]
        for b, row in enumerate(rows):
            input_ids[b, pads[b] :] = torch.tensor(row, device=device)
            mask[b, pads[b] :] = 1
        cache_data = []
        for keys, values in self.layers:
            batch_keys = keys.new_zeros((n, *keys.shape[1:]))
            batch_values = values.new_zeros((n, *values.shape[1:]))
            for b, pad in enumerate(pads):
                if pad < width_prefix:
                    batch_keys[b, :, pad:] = keys[0, :, : width_prefix - pad]
                    batch_values[b, :, pad:] = values[0, :, : width_prefix - pad]
            cache_data.append((batch_keys, batch_values))
        cache = DynamicCache(ddp_cache_data=cache_data, config=self.model.config)
        return {"input_ids": input_ids, "attention_mask": mask, self.cache_argument: cache}
