"""What the chat does, without the UI: pick a retriever, retrieve, answer.

The application layer: the Gradio UI (`rag_app.ui`), `rag-app ask`, the eval and the
benches all call it, so it lives outside the UI package and the UI only maps widgets to
these calls. One `ChatService` is shared by all sessions
of a server; it holds no per-session state (each session passes its own choices in), so
two users never see each other's retriever choice or history.

Access control (`rag_app.access`): every call that returns passages takes the logged-in
`user`; with `server.access_policy` set, chunks their groups may not read are filtered out
before retrieval and checked again on the way out.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rag_app.access import AccessPolicy
from rag_app.answer import Answer
from rag_app.config import Settings
from rag_app.errors import RagAppError
from rag_app.feedback import FeedbackRecorder
from rag_app.runs import Method, Run, RunKind, Verdict, is_usable, list_runs
from rag_app.types import Hit, SearchMode

log = logging.getLogger(__name__)

Mode = SearchMode  # the name callers used before the enum
BASELINE = "baseline"


@dataclass(frozen=True)
class RetrieverOption:
    """One embedder the user can choose in the UI: the base model or a fine-tuned run."""

    key: str  # "baseline" or the run name
    label: str  # shown in the UI
    model: str  # spec or path given to build_retriever


@dataclass(frozen=True)
class RetrieverChoice:
    """What a session chose to search with: the embedder (`key`: "baseline" or a run name),
    the search mode, reranking and the embedding dimension (None: `retrieval.dim` or the
    model's own).

    One value instead of four loose parameters, so every `ChatService` call that builds,
    describes or logs a retriever sees the same, already checked choice. Frozen and
    hashable: it is also the key of the service's retriever cache. Build it from outside
    input (CLI, UI, API, eval specs) with `of`, which parses a string mode."""

    key: str = BASELINE
    mode: SearchMode = SearchMode.HYBRID
    rerank: bool = True
    dim: int | None = None

    def __post_init__(self) -> None:
        # however it was built (untyped callers may pass "dense"), a choice holds a
        # checked mode, and a 0 / "" / "384" dimension becomes None / 384, so equal
        # choices share one cached retriever
        if not isinstance(self.mode, SearchMode):
            object.__setattr__(self, "mode", SearchMode.parse(self.mode))
        object.__setattr__(self, "rerank", bool(self.rerank))
        object.__setattr__(self, "dim", int(self.dim) if self.dim else None)

    @classmethod
    def of(
        cls,
        key: str = BASELINE,
        mode: SearchMode | str = SearchMode.HYBRID,
        rerank: bool = True,
        dim: int | None = None,
    ) -> RetrieverChoice:
        """The choice named by outside input: `mode` may be a string ("dense"); an unknown
        one raises a ValueError listing the modes (`SearchMode.parse`)."""
        return cls(key, SearchMode.parse(mode), rerank, dim)


@dataclass
class Turn:
    """The result of one question: hits shown as sources, and the answer text."""

    hits: list[Hit]
    answer: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def run_label(run: Run) -> str:
    """ "Fine-tuned (<run>)" plus what is known of its quality, so nobody mistakes a model
    that lost on real questions, or was never checked on any, for an improvement."""
    record = run.record
    method = " · query adapter" if record.method is Method.ADAPTER else ""
    after = run.metrics.get("labelled_mrr@10")
    before = run.metrics.get("labelled_mrr@10_base")
    if record.verified and isinstance(after, int | float) and isinstance(before, int | float):
        verdict = f"labelled MRR@10 {before:.3f} → {after:.3f}"
        if record.verdict is not Verdict.RECOMMENDED:
            verdict += ", not recommended"
    else:
        verdict = record.verdict_text
    return f"Fine-tuned ({run.name}){method} — {verdict}"


class QuestionTooLong(RagAppError, ValueError):
    """A question over `server.max_question_chars` (it would be stored whole in the logs)."""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_question(query: str, limit: int) -> str:
    """`query` without control characters (tabs and newlines become spaces) and trimmed;
    `QuestionTooLong` over `limit` characters."""
    query = " ".join(_CONTROL.sub(" ", query).split())
    if len(query) > limit:
        raise QuestionTooLong(
            f"the question is {len(query):,} characters long; the limit is {limit:,} "
            "(server.max_question_chars)"
        )
    return query


class ChatService:
    """Shared, thread-safe access to retrievers and the LLM for every chat session."""

    def __init__(self, settings: Settings, *, load_llm: bool = True) -> None:
        self.settings = settings
        self._load_llm = load_llm and settings.llm.backend != "none"
        self._retrievers: dict[RetrieverChoice, object] = {}
        self.access = AccessPolicy.from_settings(settings)
        self._lock = threading.Lock()
        self._llm = None
        self._llm_error: str | None = None
        self._llm_loaded = False
        self._reranker_reason: str | None = None
        self._has_reranker: bool | None = None
        self.feedback = FeedbackRecorder(settings)

    # --- choices -----------------------------------------------------------------------
    def options(self) -> list[RetrieverOption]:
        """The base embedder plus every usable fine-tuned embedder run (`runs.is_usable`:
        a model in its folder). A full fine-tune not indexed yet is listed; choosing it says
        which `rag-app index --model` command builds its collection."""
        opts = [RetrieverOption(BASELINE, f"Baseline ({self.settings.models.embedder})", "")]
        for run in list_runs(self.settings, kind=RunKind.EMBEDDER):
            if not is_usable(run):
                continue
            opts.append(RetrieverOption(run.name, run_label(run), str(run.path)))
        return opts

    def option(self, key: str) -> RetrieverOption:
        for opt in self.options():
            if opt.key == key:
                return opt
        raise KeyError(f"unknown retriever {key!r}")

    def default_finetuned(self) -> RetrieverOption | None:
        """The newest fine-tuned run, which the UI offers as the alternative to baseline."""
        opts = self.options()
        return opts[-1] if len(opts) > 1 else None

    def reranker_status(self) -> tuple[bool, str]:
        """Whether reranking can run, and why not when it cannot."""
        if self._has_reranker is None:
            from rag_app.rerank import load_reranker

            reranker, reason = load_reranker(self.settings)
            self._has_reranker = reranker is not None
            self._reranker_reason = reason
        return self._has_reranker, self._reranker_reason or ""

    # --- retrieval ---------------------------------------------------------------------
    def runnable(self, choice: RetrieverChoice) -> RetrieverChoice:
        """`choice` as it runs here: without reranking when no reranker can be loaded."""
        if choice.rerank and not self.reranker_status()[0]:
            return replace(choice, rerank=False)
        return choice

    def retriever(self, choice: RetrieverChoice):
        """Build (once) and return the retriever for a choice of model, mode, rerank and
        embedding dimension."""
        choice = self.runnable(choice)
        with self._lock:
            if choice not in self._retrievers:
                from rag_app.retrieve import build_retriever

                model = self.option(choice.key).model or None
                self._retrievers[choice] = build_retriever(
                    self.settings,
                    model=model,
                    mode=choice.mode,
                    rerank=choice.rerank,
                    dim=choice.dim,
                )
            return self._retrievers[choice]

    def search_note(self, query: str, choice: RetrieverChoice) -> str:
        """How this query was searched, for the sources panel: the fusion a hybrid search
        used and why ("weighted, dense weight 0.7, chosen on 812 synthetic validation
        questions", or "exact match on 72-61-009: keyword-led ...")."""
        from rag_app.retrieve import HybridRetriever, RerankedRetriever, warnings_in

        retriever = self.retriever(choice)
        warnings = warnings_in(retriever.notes)
        base = retriever.base if isinstance(retriever, RerankedRetriever) else retriever
        note = (
            f"hybrid: {base.fusion_note(query)}"
            if isinstance(base, HybridRetriever)
            else f"{choice.mode} only"
        )
        return " · ".join([note, *(f"⚠️ {w}" for w in warnings)])

    def describe(self, choice: RetrieverChoice) -> dict:
        """The retriever behind an answer, as the feedback and query logs record it."""
        option = self.option(choice.key)
        choice = self.runnable(choice)
        return {
            "key": choice.key,
            "model": option.model or self.settings.models.embedder,
            "mode": choice.mode,
            "rerank": choice.rerank,
            "dim": choice.dim,
        }

    def record_turn(
        self,
        query: str,
        choice: RetrieverChoice,
        hits: list[Hit],
        *,
        user: str | None = None,
        session: str | None = None,
        endpoint: str = "ask",
    ) -> dict:
        """One answered question as marks refer to it (turn id, retriever, shown passages),
        written to the query log when it is on. A failing log write is reported in the
        server log and never breaks the chat."""
        from rag_app.feedback import hit_record

        query = clean_question(query, self.settings.server.max_question_chars)
        turn: dict[str, Any] = {
            "turn": uuid.uuid4().hex,
            "query": query,
            "retriever": self.describe(choice),
            "hits": [hit_record(h, i) for i, h in enumerate(hits, start=1)],
        }
        try:
            self.feedback.log_query(
                turn=turn["turn"],
                query=query,
                retriever=turn["retriever"],
                hits=turn["hits"],
                user=user,
                session=session,
                endpoint=endpoint,
            )
        except OSError:
            log.exception("query log not written")
        return turn

    def dims(self, key: str = BASELINE) -> list[int]:
        """Embedding dimensions indexed for a retriever choice, largest (full) first."""
        from rag_app.embedder import Embedder
        from rag_app.store.chroma import indexed_dims

        spec = self.option(key).model or self.settings.models.embedder
        embedder = Embedder.load(
            spec,
            device=self.settings.models.device,
            trust_remote_code=self.settings.models.trust_remote_code,
        )
        return indexed_dims(self.settings, embedder.fingerprint)

    def access_filter(self, user: str | None, filters=None):
        """`filters` AND what `user` may read (unchanged when no policy is configured)."""
        if not self.access.enforced:
            return filters
        from rag_app.retrieve import load_corpus

        values = load_corpus(self.settings).filter_values(["access"]).get("access", [])
        return self.access.filter_for(user, values, filters)

    def search(
        self,
        query: str,
        choice: RetrieverChoice = RetrieverChoice(),
        filters=None,
        k: int | None = None,
        *,
        user: str | None = None,
    ) -> list[Hit]:
        """Top-k hits for `query`, only among chunks `user` may read. A question over
        `server.max_question_chars` is refused (`QuestionTooLong`)."""
        query = clean_question(query, self.settings.server.max_question_chars)
        if not query:
            return []
        retriever = self.retriever(choice)
        flt = self.access_filter(user, filters)
        hits = retriever.retrieve(query, k=k or self.settings.retrieval.top_k, filters=flt)
        if self.access.enforced:
            hits = self.access.visible(user, hits)
        return hits

    def filter_values(self, keys: tuple[str, ...], user: str | None = None) -> dict[str, list[str]]:
        """Distinct values of the given metadata keys among the chunks `user` may read.

        Reads the retrievers' shared, cached corpus rather than the chunk file again.
        """
        from rag_app import chunkstore
        from rag_app.filters import filter_values
        from rag_app.retrieve import load_corpus

        try:
            chunks = load_corpus(self.settings).chunks
        except (chunkstore.NotIngestedError, chunkstore.CorruptWorkspaceError):
            return {}
        readable = [c for c in chunks if self.access.can_read(user, c.metadata)]
        return filter_values(readable, keys)

    def status_markdown(self) -> str:
        """One line telling the user what is running: models, reranker, LLM."""
        can_rerank, reason = self.reranker_status()
        rerank = "reranker on" if can_rerank else f"reranking off: {reason}"
        tuned = self.default_finetuned()
        tuned_text = f"fine-tuned: {tuned.key}" if tuned else "no fine-tuned retriever yet"
        mode, _ = self.answer_mode()
        return f"<sub>{tuned_text} · {rerank} · {self.llm_status()} · answers: {mode}</sub>"

    # --- answers -----------------------------------------------------------------------
    def llm(self):
        """The configured LLM, loaded once; None (with a reason) when it cannot be used."""
        if not self._load_llm:
            return None
        with self._lock:
            if not self._llm_loaded:
                from rag_app.llm.base import LLMError
                from rag_app.llm.factory import build_llm

                try:
                    self._llm = build_llm(self.settings)
                except (LLMError, OSError, ImportError, ValueError) as exc:
                    self._llm_error = f"LLM not available ({exc}); showing retrieved passages only."
                    log.warning(self._llm_error)
                self._llm_loaded = True
            return self._llm

    def llm_status(self) -> str:
        from rag_app.answer_modes import needs_llm

        if not self._load_llm:
            return "LLM off: answers quote the documents."
        if not needs_llm(self.settings):  # not loaded: answers never use it
            return f"LLM {self.settings.models.generator} not used for answers"
        self.llm()
        return self._llm_error or f"LLM: {getattr(self._llm, 'name', '?')}"

    def embedder_for(self, choice: RetrieverChoice):
        """The embedder of a retriever choice (base or fine-tuned), which scores the
        sentences of an extractive answer; BM25-only search uses the choice's model too.
        None when it cannot be loaded (lexical scores alone then)."""
        from rag_app.retrieve import embedder_of

        found = embedder_of(self.retriever(choice))
        if found is not None:
            return found
        from rag_app.embedder import Embedder

        try:
            return Embedder.load(
                self.option(choice.key).model or self.settings.models.embedder,
                device=self.settings.models.device,
                trust_remote_code=self.settings.models.trust_remote_code,
            )
        except Exception as exc:  # the answer still works on lexical scores
            log.warning("no embedder for extractive answers: %s", exc)
            return None

    def answer_mode(self) -> tuple[str, str]:
        """The answer mode that serves now (`answer.mode` resolved against the LLM), and why."""
        from rag_app.answer_modes import needs_llm, resolve_mode

        llm = self.llm() if needs_llm(self.settings) else None
        return resolve_mode(self.settings, llm, self._llm_error)

    def answer_turn(
        self,
        question: str,
        hits: list[Hit],
        history: list[tuple[str, str]] | None = None,
        *,
        choice: RetrieverChoice = RetrieverChoice(),
    ) -> Iterator[Answer]:
        """The answer as it grows (generative) or at once (extractive); the last one yielded
        is final and says which mode answered and why. An LLM that fails gives way to an
        extractive answer that says so."""
        from rag_app.answer import parse_citations, stream_answer
        from rag_app.answer_modes import check_generated, extractive_answer
        from rag_app.retrieve import load_corpus

        cfg = self.settings.answer
        answer_mode, why = self.answer_mode()
        index = load_corpus(self.settings).bm25
        embedder = self.embedder_for(choice)

        def extractive(reason: str) -> Answer:
            return extractive_answer(
                question, hits, embedder, index, why=reason, abstain_below=cfg.abstain_below
            )

        if answer_mode == "extractive" or not hits:
            yield extractive(why)
            return
        text = ""
        errors: list[str] = []
        for piece in stream_answer(question, hits, self.llm(), history=history, errors=errors):
            if errors:
                break
            text += piece
            yield Answer(text, [], hits, mode="generative", why=why)
        if errors:
            yield extractive(f"quoted from the documents: the LLM failed ({errors[0]})")
            return
        final = Answer(text, parse_citations(text, len(hits)), hits, mode="generative", why=why)
        yield check_generated(
            final, question, embedder, index, drop_unsupported=cfg.unsupported == "drop"
        )

    def answer(
        self,
        question: str,
        hits: list[Hit],
        history: list[tuple[str, str]] | None = None,
        *,
        choice: RetrieverChoice = RetrieverChoice(),
    ) -> Answer:
        """The final answer of `answer_turn` (for scripts, the CLI and the eval)."""
        final = None
        for final in self.answer_turn(question, hits, history, choice=choice):  # noqa: B007
            pass
        assert final is not None  # answer_turn always yields
        return final
