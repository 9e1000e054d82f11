"""The prompts that ask an LLM for synthetic search queries, in one place.

A small generator (the default SmolLM2-135M) follows examples far better than
instructions, so each style is a few-shot chat: a short system line, then worked
(passage -> query) turns, then the real passage. One call asks for *one* query, which keeps
the output easy to parse; several candidates per chunk come from several calls at a
non-zero temperature, alternating styles (keyword queries and natural questions, as users
really search).

Users override any part with a TOML file (`synth.prompts_file`)::

    system = "You write search queries for a maintenance library."
    [keyword]
    instruction = "Write a short keyword search for this passage."
    examples = [["<document title>", "<passage>", "<query>"], ...]  # or [passage, query]

Changing the prompts changes `PromptSet.version`, so a resumed synth run never mixes rows
from two prompt versions under one key.

Example:
    >>> prompts = load_prompts(None)
    >>> messages = prompts.messages("question", "Pump P-12 is overhauled every 600 hours.")
    >>> messages[-1]["role"]
    'user'
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rag_app.llm.base import Message

PROMPT_FORMAT = 2

SYSTEM = (
    "You write one search query that a user would type to find the given passage. "
    "Reply with the query only, on one line."
)

# Examples are (title, passage, query): the generator sees each passage under its document
# title (and section), as the embedder does, so it can name what the passage is about even
# when the passage itself never repeats it (measured on medquad-small, issue 10).
_EXAMPLES_KEYWORD: list[tuple[str, str, str]] = [
    (
        "Main landing gear > Wheel installation",
        "The main landing gear wheel nuts are torqued in two stages: seat the nut at 270 Nm "
        "while rotating the wheel, back off to zero, then apply the final torque of 135 Nm.",
        "main wheel nut torque",
    ),
    (
        "Asthma",
        "Asthma is treated with quick-relief inhalers such as albuterol during an attack and "
        "with inhaled corticosteroids as long-term control.",
        "asthma inhaler treatment",
    ),
]

_EXAMPLES_QUESTION: list[tuple[str, str, str]] = [
    (
        "Main landing gear > Wheel installation",
        "The main landing gear wheel nuts are torqued in two stages: seat the nut at 270 Nm "
        "while rotating the wheel, back off to zero, then apply the final torque of 135 Nm.",
        "How do I torque the main landing gear wheel nuts?",
    ),
    (
        "Asthma",
        "Asthma is treated with quick-relief inhalers such as albuterol during an attack and "
        "with inhaled corticosteroids as long-term control.",
        "How is asthma treated?",
    ),
]


@dataclass(frozen=True)
class StylePrompt:
    """One query style: the instruction in the user turn and its worked examples."""

    instruction: str
    examples: tuple[tuple[str, str, str], ...]  # (title, passage, query)
    question: bool  # True when the answer should be a question (the filter checks it)


DEFAULT_STYLES: dict[str, StylePrompt] = {
    "keyword": StylePrompt(
        "Write a short keyword search (2 to 6 words) for this passage.",
        tuple(_EXAMPLES_KEYWORD),
        question=False,
    ),
    # "The main question", not "a question": asked for any question, SmolLM2-135M picks a
    # detail of the passage; asked for the question the whole passage answers, naming the
    # subject, its questions are what users ask (issue 10, BENCHMARKS.md).
    "question": StylePrompt(
        "Write the main question that this passage answers, as a user would ask it. "
        "Name the document's subject. Do not ask about a small detail.",
        tuple(_EXAMPLES_QUESTION),
        question=True,
    ),
}


@dataclass(frozen=True)
class PromptSet:
    """The system line and every style's prompt; `version` keys synth rows for resume."""

    system: str = SYSTEM
    styles: dict[str, StylePrompt] = field(default_factory=lambda: dict(DEFAULT_STYLES))

    @property
    def version(self) -> str:
        raw = json.dumps(
            {
                "format": PROMPT_FORMAT,
                "system": self.system,
                "styles": {
                    k: [v.instruction, [list(e) for e in v.examples], v.question]
                    for k, v in sorted(self.styles.items())
                },
            },
            sort_keys=True,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:10]

    def with_examples(self, style: str, examples: Sequence[tuple[str, str, str]]) -> PromptSet:
        """The same prompts with `style`'s worked examples replaced (e.g. real questions)."""
        if style not in self.styles:
            raise ValueError(f"unknown query style {style!r}")
        styles = dict(self.styles)
        styles[style] = replace(styles[style], examples=tuple(examples))
        return PromptSet(system=self.system, styles=styles)

    def messages(self, style: str, passage: str, title: str = "") -> list[Message]:
        """A few-shot chat asking for one query of `style` about `passage` (from `title`)."""
        try:
            prompt = self.styles[style]
        except KeyError:
            raise ValueError(
                f"unknown query style {style!r}; known: {', '.join(sorted(self.styles))}"
            ) from None
        out: list[Message] = [{"role": "system", "content": self.system}]
        for example_title, example_passage, example_query in prompt.examples:
            user = _user(prompt.instruction, example_passage, example_title)
            out.append({"role": "user", "content": user})
            out.append({"role": "assistant", "content": example_query})
        out.append({"role": "user", "content": _user(prompt.instruction, passage, title)})
        return out


def _user(instruction: str, passage: str, title: str) -> str:
    source = f"Document: {title}\n" if title.strip() else ""
    return f"{instruction}\n\n{source}Passage: {passage}"


def load_prompts(path: Path | None) -> PromptSet:
    """The default prompts, with whatever a user's TOML file overrides."""
    if path is None:
        return PromptSet()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"synth.prompts_file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"synth.prompts_file {path} is not valid TOML: {exc}") from exc
    styles = dict(DEFAULT_STYLES)
    for name, value in data.items():
        if name == "system" or not isinstance(value, dict):
            continue
        base = styles.get(name, StylePrompt("Write one search query for this passage.", (), False))
        examples = value.get("examples")
        if examples is not None:
            if not all(isinstance(e, list | tuple) and len(e) in (2, 3) for e in examples):
                raise ValueError(
                    f"{path}: [{name}].examples must be [passage, query] or "
                    "[title, passage, query] lists"
                )
            examples = tuple(
                ("", str(e[0]), str(e[1])) if len(e) == 2 else (str(e[0]), str(e[1]), str(e[2]))
                for e in examples
            )
        styles[name] = StylePrompt(
            instruction=str(value.get("instruction", base.instruction)),
            examples=base.examples if examples is None else examples,
            question=bool(value.get("question", base.question)),
        )
    return PromptSet(system=str(data.get("system", SYSTEM)), styles=styles)
