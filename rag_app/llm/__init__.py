"""LLM backends behind one small interface (`rag_app.llm.base.LLM`).

- `embedded`: SmolLM2-135M-Instruct (or any local/hub chat model) run by transformers,
  offline, the default;
- `llamacpp`: GGUF models through llama-cpp-python (optional extra);
- `openai`: any OpenAI-compatible server through LangChain's ChatOpenAI.

`build_llm(settings)` picks one; backends import their heavy dependencies only when built.
"""

from rag_app.llm.base import LLM, LLMError, LLMUnavailableError, Message


def build_llm(settings):
    """See `rag_app.llm.factory.build_llm`."""
    from rag_app.llm.factory import build_llm as _build

    return _build(settings)


__all__ = ["LLM", "LLMError", "LLMUnavailableError", "Message", "build_llm"]
