"""Any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, llama.cpp's server), over plain HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from qa.config import Settings
from qa.errors import GeneratorError
from qa.generators.base import Message

_USAGE = ("prompt_tokens", "completion_tokens")


class OpenAICompatGenerator:
    def __init__(self, settings: Settings):
        self.base_url = settings.llm_base_url.rstrip("/")
        self.model = settings.llm_model
        self.name = f"openai:{self.model}@{self.base_url}"
        self.timeout = settings.llm_timeout
        self.last_usage: dict[str, int] | None = None
        headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
        # The timeout bounds connecting and every wait for the next byte, so a dead endpoint never hangs us.
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10)))

    def _payload(self, messages: list[Message], max_tokens: int, temperature: float, stream: bool) -> dict:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
            # the last event then carries the token counts (OpenAI, vLLM, llama.cpp's server; others ignore it)
            **({"stream_options": {"include_usage": True}} if stream else {}),
        }

    def stream(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        url = f"{self.base_url}/chat/completions"
        self.last_usage = None
        answering = False  # the endpoint accepted the request: a failure from here on is a broken-off answer
        finished = False  # "[DONE]" or a finish_reason arrived: the answer is whole
        try:
            with self.client.stream("POST", url, json=self._payload(messages, max_tokens, temperature, True)) as r:
                if r.status_code != 200:
                    body = r.read().decode("utf-8", "replace")[:200]
                    raise GeneratorError(f"model endpoint {url} answered HTTP {r.status_code}: {body}")
                answering = True
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finished = True
                        break
                    try:
                        event = json.loads(data)
                        if event.get("usage"):
                            self.last_usage = {k: int(event["usage"].get(k) or 0) for k in _USAGE}
                        if not event.get("choices"):
                            continue  # the usage-only event of include_usage
                        choice = event["choices"][0]
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        raise GeneratorError(f"model endpoint {url} sent an unreadable stream event") from None
                    finished = finished or bool(choice.get("finish_reason"))
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
            if not finished:
                # A connection that simply closes ends the body without an error; the answer is still cut off.
                raise GeneratorError(
                    f"model endpoint {url} stopped in the middle of its answer (the stream ended without [DONE])"
                )
        except httpx.TimeoutException:
            raise GeneratorError(
                f"model endpoint {url} did not answer within {self.timeout:g}s (llm_timeout)"
            ) from None
        except httpx.HTTPError as exc:
            if answering:
                raise GeneratorError(
                    f"model endpoint {url} stopped in the middle of its answer ({type(exc).__name__}: {exc})"
                ) from None
            raise GeneratorError(f"model endpoint {url} is unreachable ({type(exc).__name__}: {exc})") from None

    def generate(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        return "".join(self.stream(messages, max_tokens, temperature))
