"""LLM backends: the embedded SmolLM2 really generates; its GGUF cache is written once and
reused; the factory shares one model per process; llama.cpp fails clearly when missing."""

from __future__ import annotations

import threading
import time

import pytest
from _llm_helpers import llm_settings, shared_base

from rag_app.llm.base import LLM, LLMError, StopFilter, approx_tokens, cut_at_stop
from rag_app.llm.factory import build_llm

QUESTION = [{"role": "user", "content": "What is the capital of France? One sentence."}]
SHORT = 8  # new tokens per generation: enough to check behaviour, cheap on 2 cores


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return llm_settings(shared_base(tmp_path_factory))


@pytest.fixture(scope="module")
def llm(settings):
    start = time.perf_counter()
    model = build_llm(settings)
    print(f"\nembedded LLM ready in {time.perf_counter() - start:.1f} s: {model.name}")
    return model


# --- pure helpers ---------------------------------------------------------------------------
def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("abc STOP def END", ["END", "STOP"]) == "abc "
    assert cut_at_stop("abc", None) == "abc"
    assert cut_at_stop("abc", [""]) == "abc"


def test_stop_filter_catches_a_stop_string_split_across_pieces():
    f = StopFilter(["</passage"])
    out = [f.feed(p) for p in ["Hello ", "wor", "ld </pa", "ssage> more"]]
    assert "".join(out) + f.flush() == "Hello world "
    assert f.done
    g = StopFilter(["XYZ"])
    assert "".join(g.feed(p) for p in ["ab", "cX", "Y"]) + g.flush() == "abcXY"
    assert not g.done


def test_approx_tokens_is_conservative_for_english():
    text = "The torque wrench must be calibrated every six months. " * 10
    assert approx_tokens(text) >= len(text.split())
    assert approx_tokens("") == 0


def test_backend_none_builds_nothing(settings_factory):
    assert build_llm(settings_factory(llm={"backend": "none"})) is None


def test_llamacpp_backend_explains_how_to_install(settings_factory, monkeypatch):
    """Where llama-cpp-python is missing, the backend says how to get it (simulated by hiding
    the module, so the path is tested where it is installed too)."""
    import sys

    from rag_app.llm import llamacpp

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now fails
    monkeypatch.setattr(llamacpp, "_MODELS", {})  # no model loaded earlier in this process
    assert not llamacpp.llama_cpp_available()
    with pytest.raises(LLMError, match=r"pip install 'rag-app\[llamacpp\]'"):
        build_llm(settings_factory(llm={"backend": "llamacpp"}))


@pytest.mark.slow
def test_llamacpp_backend_generates_streams_and_seeds(settings_factory):
    """The llama.cpp backend on the bundled GGUF: greedy output is repeatable, the stream
    adds up to it, and seeded sampling gives the same replies for the same seed."""
    from rag_app.llm.llamacpp import LlamaCppLLM, llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed (`make test` installs it)")
    llm = build_llm(settings_factory(llm={"backend": "llamacpp", "temperature": 0.0}))
    assert isinstance(llm, LlamaCppLLM) and isinstance(llm, LLM)
    first = llm.generate(QUESTION, max_new_tokens=SHORT)
    assert first and first == llm.generate(QUESTION, max_new_tokens=SHORT)
    assert "".join(llm.stream(QUESTION, max_new_tokens=SHORT)).strip() == first.strip()
    assert 0 < llm.count_tokens(first) <= SHORT + 1
    prompts = [QUESTION, [{"role": "user", "content": "Name one colour."}]]
    sampled = llm.generate_many(prompts, max_new_tokens=SHORT, temperature=1.0, seed=7)
    assert len(sampled) == 2 and all(sampled)
    assert sampled == llm.generate_many(prompts, max_new_tokens=SHORT, temperature=1.0, seed=7)
    # per-prompt seeds: a prompt's reply does not depend on the batch it is in (a resumed
    # synth run asks a chunk in another batch than the run that crashed)
    together = llm.generate_many(prompts, max_new_tokens=SHORT, temperature=1.0, seed=[11, 29])
    alone = llm.generate_many(prompts[1:], max_new_tokens=SHORT, temperature=1.0, seed=[29])
    assert together[1] == alone[0]


def test_unknown_generator_is_an_llm_error(settings_factory):
    s = settings_factory(models={"generator": "no-such-model"})
    with pytest.raises(LLMError, match="no-such-model"):
        build_llm(s)


# --- the embedded model -----------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_model_generates_greedily(llm):
    assert isinstance(llm, LLM)
    first = llm.generate(QUESTION, max_new_tokens=SHORT, temperature=0)
    second = llm.generate(QUESTION, max_new_tokens=SHORT, temperature=0)
    assert first and isinstance(first, str)
    assert first == second  # greedy at temperature 0
    assert llm.count_tokens(first) <= SHORT + 1


@pytest.mark.slow
def test_stream_pieces_join_to_the_generated_text(llm):
    whole = llm.generate(QUESTION, max_new_tokens=SHORT, temperature=0)
    pieces = list(llm.stream(QUESTION, max_new_tokens=SHORT, temperature=0))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == whole


@pytest.mark.slow
def test_generate_many_returns_one_output_per_input(llm):
    batch = [
        QUESTION,
        [{"role": "user", "content": "Name one colour."}],
        [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Is water wet?"},
        ],
    ]
    outputs = llm.generate_many(batch, max_new_tokens=SHORT, temperature=0)
    assert len(outputs) == 3
    assert all(isinstance(o, str) and o for o in outputs)
    assert llm.generate_many([], max_new_tokens=SHORT) == []


@pytest.mark.slow
def test_seeded_sampling_repeats_and_leaves_the_global_rng_alone(llm):
    """synth passes a seed so a run can be reproduced; sampling must honour it."""
    import torch

    batch = [QUESTION, [{"role": "user", "content": "Name a colour."}]]
    state = torch.random.get_rng_state()
    first = llm.generate_many(batch, max_new_tokens=SHORT, temperature=1.0, seed=7)
    second = llm.generate_many(batch, max_new_tokens=SHORT, temperature=1.0, seed=7)
    assert first == second
    assert torch.equal(torch.random.get_rng_state(), state)
    llm.generate_many(batch, max_new_tokens=SHORT, temperature=1.0)  # unseeded: it advances
    assert not torch.equal(torch.random.get_rng_state(), state)


def test_stop_strings_end_generation(llm):
    text = llm.generate(QUESTION, max_new_tokens=SHORT, temperature=0)
    word = text.split()[1]  # "The capital of ..." -> stop at the second word
    stopped = llm.generate(QUESTION, max_new_tokens=SHORT, temperature=0, stop=[word])
    assert word not in stopped
    assert text.startswith(stopped)
    streamed = "".join(llm.stream(QUESTION, max_new_tokens=SHORT, temperature=0, stop=[word]))
    assert word not in streamed


@pytest.mark.slow
def test_abandoned_stream_releases_the_model(llm):
    stream = llm.stream(QUESTION, max_new_tokens=200, temperature=0)
    assert next(stream)
    start = time.perf_counter()
    stream.close()  # the worker must stop early, not run 200 tokens
    assert time.perf_counter() - start < 20
    assert not llm.loaded.lock.locked()


@pytest.mark.slow
def test_concurrent_calls_from_threads_are_serialised(llm):
    results: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            results.append(llm.generate(QUESTION, max_new_tokens=4, temperature=0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1


@pytest.mark.slow
def test_bad_messages_are_llm_errors(llm):
    with pytest.raises(LLMError, match="role"):
        llm.generate([{"role": "wizard", "content": "hi"}])
    with pytest.raises(LLMError, match="no messages"):
        llm.generate([])


@pytest.mark.slow
def test_factory_shares_one_model_per_process(llm, settings):
    again = build_llm(settings.model_copy(update={"llm": settings.llm.model_copy()}))
    assert again.loaded is llm.loaded
    assert again is not llm  # wrappers carry their own defaults


@pytest.mark.slow
def test_dequantised_gguf_is_cached_and_reused(llm, settings):
    import torch

    from rag_app.llm.embedded import dequantised_dir, is_complete, load_model
    from rag_app.models import resolve_generator

    resolved = resolve_generator(settings.models.generator)
    root = settings.cache_dir / "llm"
    folder = dequantised_dir(resolved, root)
    if not is_complete(folder):  # the model came from another test's workspace: dequantise here
        load_model(resolved, device="cpu", cache_root=root, reuse=False)
    assert is_complete(folder)
    assert (folder / "model.safetensors").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    fresh = load_model(resolved, device="cpu", cache_root=root, reuse=False)
    assert fresh.from_cache and fresh.source == str(folder)
    print(f"\nload from the dequantised cache: {fresh.load_s:.2f} s")
    assert fresh.load_s < 20  # vs ~20-35 s to dequantise the GGUF
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten
    for (name, a), (_, b) in zip(
        llm.loaded.model.state_dict().items(), fresh.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_llamacpp_generate_many_runs_shared_prefixes_together_with_the_same_replies(
    settings_factory,
):
    """Two few-shot prefixes in turn (A, B, A, B): run as A, A, B, B so llama.cpp reuses the
    cached prefix, yet every reply is the one its prompt and seed give when asked alone."""
    from rag_app.llm.llamacpp import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed (`make test` installs it)")
    llm = build_llm(settings_factory(llm={"backend": "llamacpp"}))
    shots = {
        "a": [{"role": "system", "content": "Answer with one word."}],
        "b": [{"role": "system", "content": "Answer with a short sentence about medicine."}],
    }
    batch = [
        [*shots[style], {"role": "user", "content": f"Name a {thing}."}]
        for thing in ("fruit", "colour")
        for style in ("a", "b")
    ]
    calls: list[str] = []
    generate = llm.generate

    def spy(messages, **kwargs):
        calls.append(messages[0]["content"])
        return generate(messages, **kwargs)

    llm.generate = spy  # type: ignore[method-assign]
    replies = llm.generate_many(batch, max_new_tokens=SHORT, temperature=1.0, seed=11)
    assert calls == [shots["a"][0]["content"]] * 2 + [shots["b"][0]["content"]] * 2
    alone = [
        generate(m, max_new_tokens=SHORT, temperature=1.0, seed=11 + i) for i, m in enumerate(batch)
    ]
    assert replies == alone


def test_shared_prefix_len_leaves_every_row_a_token_of_its_own():
    from rag_app.llm.prefix_cache import shared_prefix_len

    assert shared_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows keep one token
    assert shared_prefix_len([[7, 1], [8, 1]]) == 0
    assert shared_prefix_len([]) == 0


def test_embedded_generate_many_with_a_shared_prefix_gives_the_replies_without_it(llm, monkeypatch):
    """Synth's prompts share a long few-shot prefix: it is computed once and copied into the
    left-padded batch, and the seeded replies are those of evaluating every prompt whole."""
    from rag_app.llm import embedded

    system = (
        "You write search queries. Answer with one short question about the passage, "
        "naming its subject, as a patient or an engineer would type it into a search box."
    )
    batch = [
        [{"role": "system", "content": system}, {"role": "user", "content": f"Passage: {text}"}]
        for text in (
            "Asthma is treated with inhalers.",
            "The pump must be drained before the seal is replaced, then refilled to 2 bar.",
            "Glaucoma damages the optic nerve.",
        )
    ]
    options = {"max_new_tokens": SHORT, "temperature": 1.0, "seed": 5}
    llm.loaded.prefix_cache = None
    with_prefix = llm.generate_many(batch, **options)
    assert llm.loaded.prefix_cache is not None and len(llm.loaded.prefix_cache.prefix) >= 32
    monkeypatch.setattr(embedded, "MIN_SHARED_TOKENS", 10**9)  # the whole-prompt path
    assert with_prefix == llm.generate_many(batch, **options)
