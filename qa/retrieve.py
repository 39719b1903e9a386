"""Retrieval: dense (Chroma) and keyword (SQLite FTS5 BM25) results fused by reciprocal rank, then passed through
the rerankers in order (none by default; a configured cross-encoder is one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qa.errors import ConfigError
from qa.store import Store
from qa.types import Passage  # defined there, importable from here as before

MODES = ("bm25", "dense", "hybrid", "hybrid+rerank")  # hybrid+rerank: hybrid, then the rerankers
# The constant of reciprocal rank fusion: 60 in Cormack et al. (2009), 30 here. A smaller k lets a chunk that one
# list ranks far ahead (BM25 12.9 against 9.3 for "the December 25, 2011 Memorandum of Understanding") keep more
# of that lead. eval/fusion_sweep.py (eval/HISTORY.md, sessions 8 and 13): k = 30 was never worse than 60 on any
# set, and on the fresh test it waited for (170 answerable ClapNQ questions no sweep had used) the two are the same.
RRF_K = 30


class QueryEmbedder(Protocol):
    """What retrieval needs of an embedder (qa.embeddings.Embedder has it)."""

    def embed_query(self, text: str) -> np.ndarray: ...


class Scorer(Protocol):
    """Scores (query, text) pairs, higher is better: a cross-encoder (qa.embeddings.CrossEncoderReranker)."""

    def scores(self, query: str, texts: list[str]) -> list[float]: ...


class Reranker(Protocol):
    """A stage after fusion: takes the fused passages, best first, and returns them in its order."""

    depth: int  # how many of the best fused passages it looks at; the retriever fuses at least this many

    def rerank(self, query: str, passages: list[Passage]) -> list[Passage]: ...


@dataclass
class ScoreReranker:
    """Re-scores the best `depth` passages with a Scorer and puts them first, best first; the rest follow in the
    order they came."""

    scorer: Scorer
    depth: int = 20

    def rerank(self, query: str, passages: list[Passage]) -> list[Passage]:
        top = passages[: self.depth]
        for p, score in zip(top, self.scorer.scores(query, [p.chunk.text for p in top]), strict=True):
            p.score = score
        return sorted(top, key=lambda p: p.score, reverse=True) + passages[self.depth :]


class Retriever:
    def __init__(self, store: Store, embedder: QueryEmbedder, candidates: int = 30, rerankers: Sequence[Reranker] = ()):
        self.store = store
        self.embedder = embedder
        self.candidates = candidates
        self.rerankers = list(rerankers)  # applied in order after fusion, in mode hybrid+rerank

    @property
    def default_mode(self) -> str:
        return "hybrid+rerank" if self.rerankers else "hybrid"

    def search(self, query: str, k: int, mode: str | None = None, sources: list[str] | None = None) -> list[Passage]:
        """The k best passages for `query`, optionally only from the files in `sources`. The default mode is
        hybrid, reranked when rerankers are configured."""
        mode = mode or self.default_mode
        if mode not in MODES:
            raise ValueError(f"retrieval mode '{mode}': expected one of {', '.join(MODES)}")
        if mode == "hybrid+rerank":
            if not self.rerankers:
                raise ConfigError("retrieval mode 'hybrid+rerank' needs a rerank_model (a CrossEncoder)")
            passages = self.search(query, max(k, *(r.depth for r in self.rerankers)), "hybrid", sources)
            for reranker in self.rerankers:
                passages = reranker.rerank(query, passages)
            return passages[:k]
        n = max(k, self.candidates)
        dense = []
        if mode in ("dense", "hybrid"):
            dense = self.store.search_dense(self.embedder.embed_query(query), n, sources)
        keyword = self.store.search_keyword(query, n, sources) if mode in ("bm25", "hybrid") else []
        if mode == "dense":
            return [Passage(h.chunk, h.score, dense=h.score) for h in dense[:k]]
        if mode == "bm25":
            return [Passage(h.chunk, h.score, keyword=h.score) for h in keyword[:k]]
        fused: dict[str, Passage] = {}
        for rank, hit in enumerate(dense):
            fused[hit.chunk.id] = Passage(hit.chunk, 1.0 / (RRF_K + rank + 1), dense=hit.score)
        for rank, hit in enumerate(keyword):
            p = fused.setdefault(hit.chunk.id, Passage(hit.chunk, 0.0))
            p.score += 1.0 / (RRF_K + rank + 1)
            p.keyword = hit.score
        return sorted(fused.values(), key=lambda p: p.score, reverse=True)[:k]
