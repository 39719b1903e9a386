"""Retrieval: dense (Chroma) and keyword (SQLite FTS5 BM25) results fused by reciprocal rank, optionally
re-scored by a cross-encoder."""

from __future__ import annotations

from dataclasses import dataclass

from qa.chunking import Chunk
from qa.errors import ConfigError
from qa.store import Store

MODES = ("bm25", "dense", "hybrid", "hybrid+rerank")
RRF_K = 60  # the constant from Cormack et al. (2009); flattens the difference between top ranks


@dataclass
class Passage:
    chunk: Chunk
    # the mode's score: cosine (dense), BM25 (bm25), fused RRF (hybrid); for hybrid+rerank the cross-encoder's
    # score for the best `rerank_depth` passages, which come first, then the rest in fused order
    score: float
    dense: float | None = None  # cosine similarity to the question, when the dense search saw it
    keyword: float | None = None  # BM25 score, when the keyword search saw it


class Retriever:
    def __init__(self, store: Store, embedder, candidates: int = 30, reranker=None, rerank_depth: int = 20):
        self.store = store
        self.embedder = embedder
        self.candidates = candidates
        self.reranker = reranker  # anything with scores(query, texts) -> list[float]; see embeddings.py
        self.rerank_depth = rerank_depth

    @property
    def default_mode(self) -> str:
        return "hybrid+rerank" if self.reranker else "hybrid"

    def search(self, query: str, k: int, mode: str | None = None, sources: list[str] | None = None) -> list[Passage]:
        """The k best passages for `query`, optionally only from the files in `sources`. The default mode is
        hybrid, reranked when a reranker is configured."""
        mode = mode or self.default_mode
        if mode not in MODES:
            raise ValueError(f"retrieval mode '{mode}': expected one of {', '.join(MODES)}")
        if mode == "hybrid+rerank":
            if self.reranker is None:
                raise ConfigError("retrieval mode 'hybrid+rerank' needs a rerank_model (a CrossEncoder)")
            fused = self.search(query, max(k, self.rerank_depth), "hybrid", sources)
            top = fused[: self.rerank_depth]
            for p, score in zip(top, self.reranker.scores(query, [p.chunk.text for p in top]), strict=True):
                p.score = score
            return (sorted(top, key=lambda p: p.score, reverse=True) + fused[self.rerank_depth :])[:k]
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
