"""Settings in one place.

Precedence, lowest first: the defaults below < a TOML config file (`qa.toml` in the working directory,
or the file named by `QA_CONFIG`) < `QA_*` environment variables < CLI flags (passed as overrides).
Every field has an environment variable: the field name upper-cased with a `QA_` prefix
(`vectorstore` -> `QA_VECTORSTORE`, `chroma_url` -> `QA_CHROMA_URL`, `llm` -> `QA_LLM`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from qa.errors import ConfigError


def __getattr__(name: str) -> Any:
    # SUPPORTED_SUFFIXES comes from the loader registry (qa.documents.FILE_TYPES), looked up on first use so that
    # qa.documents can import this module.
    if name == "SUPPORTED_SUFFIXES":
        from qa.documents import SUPPORTED_SUFFIXES

        return SUPPORTED_SUFFIXES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LLM = Literal["local", "openai"]  # llama.cpp with a GGUF file, or any OpenAI-compatible endpoint
EmbedBackend = Literal["torch", "onnx", "onnx-int8"]
# Settings with a fixed set of values: read as text, then checked against their choices when Settings is built.
_CHOICES = {"llm": LLM, "embed_backend": EmbedBackend}


@dataclass(frozen=True)
class Settings:
    # Corpus and index
    corpus: Path = Path("seeds")
    vectorstore: Path = Path("vectorstore")
    chroma_url: str = ""  # e.g. http://127.0.0.1:8000 ; empty = embedded store under `vectorstore`
    collection: str = "qa_chunks"
    store_timeout: float = 10.0  # seconds for one Chroma server request
    lock_wait: float = 0.0  # seconds a second writer waits for the index lock before giving up
    # On a Chroma server: how long the writer lease of a host that stopped renewing it (killed, cut off) holds
    # the other hosts' ingests back. Renewed every third of it while an ingest runs.
    lease_seconds: float = 30.0
    max_file_mb: float = 20.0  # larger files are skipped with a reason
    ocr: bool = True  # PDF pages without a text layer (scans) are read by tesseract

    # Embedding and chunking. "all-MiniLM-L6-v2" resolves to the copy shipped in a PyPI package.
    embed_model: str = "all-MiniLM-L6-v2"
    embed_batch: int = 32
    # onnx-int8 | onnx | torch. int8 ONNX (exported once into cache_dir, offline) keeps retrieval quality and is
    # faster where the CPU has int8 kernels (2x with AVX-512 VNNI; 1.35x ingest end to end on AVX2, qa/bench.py).
    embed_backend: EmbedBackend = "onnx-int8"
    chunk_size: int = 600  # characters (~140 tokens: under MiniLM's 256-token window, and short prompts)
    chunk_overlap: int = 100
    threads: int = 2

    # Retrieval
    top_k: int = 4
    candidates: int = 30  # per retriever, before fusion
    # What the model reads (qa/context.py): the best sentences of the best `context_chunks` retrieved chunks,
    # each with `context_window` neighbouring sentences a side, up to `context_tokens` (estimated) of text.
    # context_tokens 0: the `top_k` whole chunks instead. Chosen on the ClapNQ calibration ids.
    context_tokens: int = 220
    context_chunks: int = 8
    context_window: int = 1
    max_question_chars: int = 2000
    min_relevance: float = 0.25  # best dense cosine below this: decline without asking the model
    # A sentence-transformers CrossEncoder (hub name or folder) that re-scores the best `rerank_depth` fused
    # passages; empty: no reranking. None installs offline here (MODELS.md), so it is off by default.
    rerank_model: str = ""
    rerank_depth: int = 20
    # Unset: the model's own fitted decline decision (qa/decide.py, fitted on held-apart ClapNQ questions by
    # eval/fit_decline.py), or the judge alone at 0.6 for a model without one. A number: decline when the model's
    # P("yes, the sources state the answer") is below it, whatever was fitted; 0 turns the judge off.
    judge_threshold: float | None = None
    # When the checks remove every sentence of a draft written from several windows, draft once more from the
    # best window alone (qa.stages.redraft). Off: with the 1.5B model it answered 3 more questions right and 8
    # more wrong outside the seeds (ClapNQ, the held-out and dev sets; eval/HISTORY.md, session 21).
    redraft: bool = False

    # Generator: "local" (llama.cpp GGUF) or "openai" (any OpenAI-compatible endpoint)
    llm: LLM = "local"
    llm_model: str = "qwen2.5-coder-1.5b"  # builtin name, a .gguf path, or the API model name
    llm_base_url: str = "http://127.0.0.1:8080/v1"
    llm_api_key: str = ""
    llm_timeout: float = 60.0
    llm_max_tokens: int = 256
    llm_ctx: int = 4096
    # llama.cpp's flash-attention kernel for the local model: a faster prompt evaluation on CPU too
    # (eval/llama_speed.py). It shifts the judge's numbers slightly, so it was measured with the answers
    # (eval/HISTORY.md, sessions 7-8).
    llm_flash_attn: bool = False
    # Web UI login (both set = login required)
    ui_user: str = ""
    ui_password: str = ""
    cache_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "qa"
    )

    def __post_init__(self):
        # A bad number would otherwise surface deep inside a library as a traceback (or, for top_k 0, as an
        # empty answer); here it is one line naming the setting.
        for name, low, high, low_inclusive in _BOUNDS:
            value = getattr(self, name)
            if value is None:  # an optional setting left unset (judge_threshold)
                continue
            # Written so that NaN (which compares false with everything) fails too.
            above_low = value > low or (value == low and low_inclusive)
            if not above_low or (high is not None and not value <= high):
                above = f"{'at least' if low_inclusive else 'more than'} {low:g}"
                limit = f"between {low:g} and {high:g}" if high is not None else above
                raise ConfigError(f"setting '{name}': must be {limit}, got {value:g}")
        if self.chunk_overlap >= self.chunk_size:
            raise ConfigError(
                f"setting 'chunk_overlap' ({self.chunk_overlap}) must be smaller than 'chunk_size' ({self.chunk_size})"
            )
        # A mistyped choice would otherwise fail only when first used (the model, at the first question).
        for name, kind in _CHOICES.items():
            choices = get_args(kind)
            if getattr(self, name) not in choices:
                raise ConfigError(f"setting '{name}': must be one of {', '.join(choices)}, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# (setting, lowest, highest or None, whether the lowest itself is allowed)
_BOUNDS = [
    ("store_timeout", 0, None, False),
    ("lock_wait", 0, None, True),
    ("lease_seconds", 1, None, True),
    ("max_file_mb", 0, None, False),
    ("embed_batch", 1, None, True),
    ("chunk_size", 1, None, True),
    ("chunk_overlap", 0, None, True),
    ("threads", 1, None, True),
    ("top_k", 1, None, True),
    ("candidates", 1, None, True),
    ("context_tokens", 0, None, True),
    ("context_chunks", 1, None, True),
    ("context_window", 0, None, True),
    ("max_question_chars", 1, None, True),
    ("min_relevance", -1, 1, True),
    ("rerank_depth", 1, None, True),
    ("judge_threshold", 0, 1, True),
    ("llm_timeout", 0, None, False),
    ("llm_max_tokens", 1, None, True),
    ("llm_ctx", 512, None, True),  # the instructions and one passage alone need a few hundred tokens
]


def _coerce(name: str, kind: Any, raw: Any, origin: str = "") -> Any:
    """The value of setting `name` as its type, strictly: a value that does not say exactly one thing of that type
    (3.9 or true for a whole number, nan for a threshold, a list for a folder) is refused, never rounded or
    stringified into something else. `origin` (where the value came from) ends the message."""
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    kind_name = kind_name.removesuffix(" | None")  # an optional setting is set with a value of its type
    if kind_name == "bool":
        return _as_bool(name, raw)
    where = f" (from {origin})" if origin else ""

    def refuse(why: str = "") -> ConfigError:
        return ConfigError(f"setting '{name}': expected {kind_name}, got {raw!r}{why}{where}")

    if isinstance(raw, bool) or isinstance(raw, list | dict | tuple | set) or raw is None:
        raise refuse()
    if "Path" in kind_name:
        if not isinstance(raw, str | os.PathLike) or not str(raw).strip():
            raise refuse(" (a folder or file path, as a string)")
        return Path(raw).expanduser()
    if kind_name == "int":
        if isinstance(raw, float):
            if not raw.is_integer():
                raise refuse(" (a whole number)")
            return int(raw)
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise refuse() from None
    if kind_name == "float":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise refuse() from None
        if not math.isfinite(value):
            raise refuse(" (a finite number)")
        return value
    if not isinstance(raw, str):
        raise refuse(" (text, in quotes in a config file)")
    return raw


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _as_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise ConfigError(f"setting '{name}': expected true or false (or on/off, yes/no, 1/0), got {raw!r}")


def load_settings(overrides: dict[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from defaults, config file, environment and explicit overrides (CLI flags).

    Overrides whose value is None are ignored, so a CLI can pass every flag unconditionally.
    Raises ConfigError naming the setting or file that is wrong.
    """
    env = os.environ if env is None else env
    types = {f.name: "str" if f.name in _CHOICES else f.type for f in fields(Settings)}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    config_path = env.get("QA_CONFIG")
    path = Path(config_path) if config_path else Path("qa.toml")
    if config_path and not path.is_file():
        raise ConfigError(f"QA_CONFIG names {path}, which is not a file")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in data.items():
            if key not in types:
                raise ConfigError(f"config file {path}: unknown setting '{key}'")
            values[key] = raw
            origins[key] = f"config file {path}"

    for name in types:
        raw = env.get(f"QA_{name.upper()}")
        if raw is not None and raw != "":
            values[name] = raw
            origins[name] = f"QA_{name.upper()}"

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in types:
            raise ConfigError(f"unknown setting '{name}'")
        values[name] = raw
        origins[name] = f"--{name.replace('_', '-')}"

    return Settings(**{name: _coerce(name, types[name], raw, origins[name]) for name, raw in values.items()})
