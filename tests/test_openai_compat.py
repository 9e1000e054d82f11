"""The OpenAI-compatible backend against real servers on loopback: `transformers serve` with
the dequantised SmolLM2 and llama.cpp's server with the bundled GGUF (both offline; every
real-server test runs against each), a port that refuses connections, and a server too
slow to answer within the timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _llm_helpers import (
    broken_stream_server,
    free_port,
    llamacpp_server,
    llm_settings,
    shared_base,
    slow_server,
    tool_hits,
    transformers_server,
)

from rag_app.answer import answer, parse_citations, stream_answer
from rag_app.llm.base import LLM, LLMError, LLMUnavailableError
from rag_app.llm.factory import build_llm
from rag_app.llm.openai_compat import OpenAICompatLLM

QUESTION = [{"role": "user", "content": "What is the capital of France? One sentence."}]
SHORT = 8


@pytest.fixture(scope="module", params=["transformers", "llama.cpp"])
def server_url(request, tmp_path_factory):
    """A real OpenAI-compatible server on the default generator: `transformers serve` on the
    embedded model's dequantised copy (written if missing), or `llama_cpp.server` on the
    bundled GGUF (skipped, saying why, only where llama-cpp-python is not installed)."""
    from rag_app.models import resolve_generator

    settings = llm_settings(shared_base(tmp_path_factory))
    resolved = resolve_generator(settings.models.generator)
    log = tmp_path_factory.mktemp("server") / f"{request.param}-server.log"
    start = time.perf_counter()
    if request.param == "llama.cpp":
        from rag_app.llm.llamacpp import llama_cpp_available

        if not llama_cpp_available():
            pytest.skip("llama-cpp-python is not installed (`make test` installs it)")
        server = llamacpp_server(Path(resolved.location) / resolved.gguf_file, log)
    else:
        from rag_app.llm.embedded import dequantised_dir, is_complete, load_model

        root = settings.cache_dir / "llm"
        folder = dequantised_dir(resolved, root)
        if not is_complete(folder):
            load_model(resolved, device="cpu", cache_root=root, reuse=False)
        server = transformers_server(folder, log)
    with server as url:
        print(f"\n{request.param} server up in {time.perf_counter() - start:.1f} s at {url}")
        yield url


@pytest.fixture(scope="module")
def served(server_url, tmp_path_factory):
    """The backend built by the factory, as a user would configure it (no model name)."""
    settings = llm_settings(
        shared_base(tmp_path_factory), backend="openai", base_url=server_url, timeout_s=120
    )
    return build_llm(settings)


# --- a real server ----------------------------------------------------------------------------
@pytest.mark.slow
def test_generates_through_a_real_server(served, server_url):
    assert isinstance(served, OpenAICompatLLM) and isinstance(served, LLM)
    text = served.generate(QUESTION, max_new_tokens=SHORT, temperature=0)
    assert text and isinstance(text, str)
    # No llm.model configured: the server's only model was discovered from /v1/models.
    assert "SmolLM2-135M-Instruct" in served.model
    assert server_url in served.name


@pytest.mark.slow
def test_streams_pieces_through_a_real_server(served):
    whole = served.generate(QUESTION, max_new_tokens=SHORT, temperature=0)
    pieces = list(served.stream(QUESTION, max_new_tokens=SHORT, temperature=0))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == whole


@pytest.mark.slow
def test_generate_many_and_stop_through_a_real_server(served):
    outputs = served.generate_many(
        [QUESTION, [{"role": "user", "content": "Name one colour."}]],
        max_new_tokens=4,
        temperature=0,
    )
    assert len(outputs) == 2 and all(outputs)
    stopped = served.generate(QUESTION, max_new_tokens=SHORT, temperature=0, stop=[" of"])
    assert " of" not in stopped


@pytest.mark.slow
def test_grounded_answer_through_a_real_server(served):
    hits = tool_hits()
    a = answer("What battery does the multimeter use?", hits, served, max_new_tokens=24)
    assert a.error is None, a.error
    assert a.citations == parse_citations(a.text, len(hits)) and a.citations
    text = "".join(stream_answer("What battery?", hits, served, max_new_tokens=16))
    assert text and "could not answer" not in text


@pytest.mark.slow
def test_unknown_model_is_an_error_without_retries(server_url, request):
    if request.node.callspec.params["server_url"] == "llama.cpp":
        pytest.skip("llama.cpp's server answers any model name with its one model")
    llm = OpenAICompatLLM(server_url, model="no-such-model", timeout_s=30, max_retries=3)
    start = time.perf_counter()
    with pytest.raises(LLMError) as info:
        llm.generate(QUESTION, max_new_tokens=2)
    assert not isinstance(info.value, LLMUnavailableError)
    assert server_url in str(info.value)
    assert time.perf_counter() - start < 5  # a 4xx is not retried


# --- servers that are down or slow -----------------------------------------------------------------
def test_refused_connection_fails_fast_with_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAICompatLLM(url, model="m", api_key="sk-very-secret", timeout_s=5, max_retries=2)
    start = time.perf_counter()
    with pytest.raises(LLMUnavailableError) as info:
        llm.generate(QUESTION)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert url in message and "3 attempts" in message and "cannot connect" in message
    assert "llm.base_url" in message  # says what to do
    assert "sk-very-secret" not in message
    assert 1.4 <= elapsed < 5  # backoff 0.5 s + 1 s, then gives up
    with pytest.raises(LLMUnavailableError):
        list(llm.stream(QUESTION))


def test_model_discovery_on_a_down_server_is_unavailable_not_a_crash():
    llm = OpenAICompatLLM(f"http://127.0.0.1:{free_port()}/v1", timeout_s=2, max_retries=0)
    with pytest.raises(LLMUnavailableError):
        llm.generate(QUESTION)


def test_slow_server_times_out():
    with slow_server(delay_s=30) as url:
        llm = OpenAICompatLLM(url, model="m", timeout_s=0.5, max_retries=1)
        start = time.perf_counter()
        with pytest.raises(LLMUnavailableError, match=r"timed out after 0\.5 s; 2 attempts"):
            llm.generate(QUESTION)
        assert time.perf_counter() - start < 5


def test_slow_server_gives_a_retrieval_only_answer():
    with slow_server(delay_s=30) as url:
        llm = OpenAICompatLLM(url, model="m", timeout_s=0.5, max_retries=0)
        a = answer("What battery does the multimeter use?", tool_hits(), llm)
    assert a.error and "timed out" in a.error
    assert a.citations == [1, 2, 3] and "9 V alkaline" in a.text


def test_openai_backend_needs_a_base_url(settings_factory):
    with pytest.raises(LLMError, match="base_url"):
        build_llm(settings_factory(llm={"backend": "openai"}))


def test_server_dying_mid_answer_keeps_what_was_said_and_adds_the_passages():
    with broken_stream_server("The multimeter uses") as url:
        llm = OpenAICompatLLM(url, model="m", timeout_s=5, max_retries=0)
        with pytest.raises(LLMError):
            list(llm.stream(QUESTION))
        text = "".join(stream_answer("What battery?", tool_hits(), llm))
    assert text.startswith("The multimeter uses")
    assert "could not answer" in text and "[2] tools/multimeter.md" in text
