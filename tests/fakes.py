"""Fakes for the fast tests (`make check`): a scripted generator and a deterministic embedder.

They stand in for the two models only; everything around them (Chroma, SQLite, the loaders, the checks,
`qa.api.Assistant`) stays real. Use them through the real API:

    gen = ScriptedGenerator(yes=0.9)
    gen.enqueue("The orchard grows forty kinds of apples [1].")
    assistant = Assistant(settings, generator=gen, embedder=HashEmbedder())
    answer = assistant.ask("How many kinds of apples does the orchard grow?")
    gen.prompts   # every chat the model was asked to continue (rewrite, draft), in order
    gen.judged    # every chat the judge was asked about

The generator is in the spirit of simonw/llm's MockModel: replies are queued up front and handed out in order;
a call with nothing queued fails the test (so "the model was never asked" is something a test can rely on).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

Messages = list[dict]
Reply = str | Callable[[Messages], str]  # a fixed text, or one computed from the prompt the model sees


class UnscriptedCall(AssertionError):
    """The code under test asked the fake model for something no test queued."""


class ScriptedChat:
    """A generator without the judge capability (like an OpenAI-compatible endpoint): stream() and generate().

    Each reply is taken from the queue in order, whichever of the two methods asks. stream() yields the reply in
    a few pieces (split at word boundaries), so streaming code sees more than one piece.
    """

    def __init__(self, name: str = "scripted", replies: Iterable[Reply] = (), pieces: int = 3):
        self.name = name
        self.replies: deque[Reply] = deque(replies)
        self.pieces = max(1, pieces)
        self.prompts: list[Messages] = []  # every messages list given to stream() or generate(), in order
        self.calls: list[tuple[str, Messages]] = []  # ("stream" | "generate" | "judge", messages), in order

    def enqueue(self, *replies: Reply) -> ScriptedChat:
        self.replies.extend(replies)
        return self

    def _next(self, kind: str, messages: Messages) -> str:
        messages = [dict(m) for m in messages]  # a copy: what the model saw, even if the caller reuses the list
        self.prompts.append(messages)
        self.calls.append((kind, messages))
        if not self.replies:
            raise UnscriptedCall(f"{self.name}: {kind}() called with no reply queued; prompt ends: {_tail(messages)}")
        reply = self.replies.popleft()
        return reply(messages) if callable(reply) else reply

    def stream(self, messages: Messages, max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        # Taken at the call, not at the first next(): the prompt is recorded even if nobody iterates.
        return iter(split_pieces(self._next("stream", messages), self.pieces))

    def generate(self, messages: Messages, max_tokens: int, temperature: float = 0.0) -> str:
        return self._next("generate", messages)

    # conveniences for assertions
    def prompt_text(self, index: int = -1) -> str:
        """All message contents of one recorded prompt, joined: what the model read."""
        return "\n".join(m["content"] for m in self.prompts[index])

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


class ScriptedGenerator(ScriptedChat):
    """ScriptedChat plus the judge: yes_probability(messages) -> P("yes, the sources state the answer").

    `yes` is the fixed probability; enqueue_yes() queues values that are used first, in order. With neither,
    a judge call fails the test.
    """

    def __init__(self, name: str = "scripted", replies: Iterable[Reply] = (), yes: float | None = 1.0, pieces: int = 3):
        super().__init__(name, replies, pieces)
        self.yes = yes
        self.yes_queue: deque[float] = deque()
        self.judged: list[Messages] = []  # every messages list the judge was called with, in order

    def enqueue_yes(self, *probabilities: float) -> ScriptedGenerator:
        self.yes_queue.extend(probabilities)
        return self

    def yes_probability(self, messages: Messages, then: Messages | None = None) -> float:
        messages = [dict(m) for m in messages]
        self.judged.append(messages)
        self.calls.append(("judge", messages))
        if self.yes_queue:
            return self.yes_queue.popleft()
        if self.yes is None:
            raise UnscriptedCall(f"{self.name}: yes_probability() called with none queued; prompt: {_tail(messages)}")
        return self.yes


def split_pieces(text: str, n: int) -> list[str]:
    """`text` in up to n consecutive pieces, cut after spaces; "".join(pieces) == text."""
    if not text:
        return []
    cuts = [m.end() for m in re.finditer(r"\s+", text)]
    if n <= 1 or not cuts:
        return [text]
    step = max(1, len(cuts) // n)
    chosen = sorted(set(cuts[step - 1 :: step][: n - 1]))
    bounds = [0, *chosen, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if text[a:b]]


def _tail(messages: Messages) -> str:
    return repr(messages[-1]["content"][-200:]) if messages else "(none)"


# ---- embedder ------------------------------------------------------------------------------------------

_STOP = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her his how i if in into is "
    "it its me my no not of on or our she so than that the their them then there these they this those to was we "
    "were what when where which who whom whose why will with would you your".split()
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def features(text: str) -> list[str]:
    """The bag of words the embedder hashes: lower-cased, stemmed, stop words dropped."""
    return [_stem(w) for w in re.findall(r"[^\W_]+", text.lower()) if w not in _STOP]


class HashEmbedder:
    """A deterministic embedder: a bag of hashed words (signed feature hashing), L2-normalised.

    Texts that share words are close, texts that share none are near-orthogonal (up to hash collisions), the
    same text always gets the same vector in every process. No model is loaded. Good enough for retrieval on
    corpora of a few files; it knows nothing of meaning ("car" and "automobile" are unrelated).
    """

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.name = f"hash-bag-of-words-{dim}"
        self.calls: list[list[str]] = []  # every batch embed_documents() was given

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        for word in features(text):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            v[value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
        norm = np.linalg.norm(v)
        if norm == 0:  # no words (or words that cancel): a fixed unit vector rather than zeros, which Chroma
            v[0], norm = 1.0, 1.0  # cannot compare by cosine
        return (v / norm).astype(np.float32)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)
