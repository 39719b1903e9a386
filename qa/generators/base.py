"""The generator interface: chat messages in, text out, whole or streamed; optionally a yes/no judge."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypedDict, TypeGuard, runtime_checkable


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class Generator(Protocol):
    name: str  # shown to users: which model answers
    # tokens read and written by the last call, {"prompt_tokens", "completion_tokens"} (OpenAI's names); None
    # where the back end does not count them
    last_usage: dict[str, int] | None

    def stream(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        """Yield pieces of the reply as they are produced. Raises GeneratorError on failure."""
        ...

    def generate(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        """The whole reply."""
        ...


@runtime_checkable
class Judge(Protocol):
    """A generator that can also say how likely "yes" is as its next token: the answer stages' judge.

    A back end declares it by implementing `yes_probability` (llama.cpp reads the next-token logits; an
    OpenAI-compatible endpoint has no such call, so it answers without the judge)."""

    def yes_probability(self, messages: list[Message], then: list[Message] | None = None) -> float:
        """P("yes") against P("no") for the next token after `messages` (a yes/no question last), 0..1.

        `then`: the messages the next `stream()` call will most likely draft from. A back end may read them in
        the same pass (llama.cpp does: see LlamaCppGenerator) or ignore them; the draft must be the same."""
        ...


def can_judge(generator: object) -> TypeGuard[Judge]:
    return isinstance(generator, Judge)
