"""Answering models behind one small interface. Adding a back end means adding a file here."""

from __future__ import annotations

from qa.config import Settings
from qa.errors import ConfigError
from qa.generators.base import Generator, Message

__all__ = ["Generator", "Message", "make_generator"]


def make_generator(settings: Settings) -> Generator:
    """The generator the settings name: `local` (llama.cpp) or `openai` (any OpenAI-compatible endpoint)."""
    if settings.llm == "local":
        from qa.generators.llama_cpp import LlamaCppGenerator

        return LlamaCppGenerator.shared(settings)
    if settings.llm == "openai":
        from qa.generators.openai_compat import OpenAICompatGenerator

        return OpenAICompatGenerator(settings)
    raise ConfigError(f"llm '{settings.llm}': expected 'local' or 'openai'")
