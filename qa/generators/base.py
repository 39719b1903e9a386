"""The generator interface: chat messages in, text out, whole or streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypedDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class Generator(Protocol):
    name: str  # shown to users: which model answers

    def stream(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        """Yield pieces of the reply as they are produced. Raises GeneratorError on failure."""
        ...

    def generate(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        """The whole reply."""
        ...
