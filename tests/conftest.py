"""Shared fixtures. Everything here is real: the shipped embedding model, real Chroma, real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"

# A user's own QA_* settings must not change what the tests see. QA_TEST_* are knobs of the tests themselves
# (no setting has that prefix), so they stay.
for _key in [k for k in os.environ if k.startswith("QA_") and not k.startswith("QA_TEST_")]:
    del os.environ[_key]
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture
def settings(tmp_path):
    from qa.config import load_settings

    return load_settings(
        {
            "vectorstore": tmp_path / "index",
            "corpus": tmp_path / "corpus",
            "cache_dir": os.environ.get("QA_TEST_CACHE", str(Path.home() / ".cache" / "qa")),
        },
        env={},
    )


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return folder


@pytest.fixture
def seed_corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(SEEDS, folder)
    return folder


# Markers (pyproject.toml): `slow` loads the language model, `model` the real embedding model (or a cross-encoder),
# `server` starts a server process. `make check` runs everything else; `make test` runs everything.
HASH, MINILM = "hash", "minilm"
EMBEDDERS = [pytest.param(HASH, id=HASH), pytest.param(MINILM, marks=pytest.mark.model, id=MINILM)]
# For a test of the `assistant` fixture that needs the real model's sense of meaning: it runs with MiniLM only.
real_embedder_only = pytest.mark.parametrize("assistant", [EMBEDDERS[1]], indirect=True)


def fake_settings(root: Path, embedder=None, **overrides):
    """Settings for an index under `root` (corpus in root/corpus) built with tests.fakes.HashEmbedder: the index
    records the fake's name, so the real model can never be used on it by mistake."""
    from qa.config import load_settings
    from tests.fakes import HashEmbedder

    name = (embedder or HashEmbedder()).name
    values = {"vectorstore": root / "index", "corpus": root / "corpus", "embed_model": name, "embed_backend": "torch"}
    return load_settings({**values, **overrides}, env={})


@pytest.fixture(params=EMBEDDERS)
def assistant(request, settings):
    """An Assistant on an empty index in tmp_path. Every test that takes it runs twice in `make test`: with the
    hash embedder of tests/fakes.py (also in `make check`) and with the shipped MiniLM (marked `model`)."""
    from qa.api import Assistant
    from tests.fakes import HashEmbedder

    if request.param == HASH:
        embedder = HashEmbedder()
        a = Assistant(settings.replace(embed_model=embedder.name, embed_backend="torch"), embedder=embedder)
    else:
        a = Assistant(settings)
    yield a
    a.store.close()


@pytest.fixture(autouse=True)
def _real_models_only_in_marked_tests(request, monkeypatch):
    """Keep `make check` fast: a test that loads the real embedding model in this process must be marked `model`
    (or `slow`), else it fails here saying so. (A qa subprocess that loads it must be marked by hand.)"""
    if request.node.get_closest_marker("model") or request.node.get_closest_marker("slow"):
        return
    import qa.embeddings

    def refuse(*args, **kwargs):
        pytest.fail(
            f"{request.node.nodeid} loads a real embedding model: mark it @pytest.mark.model, "
            "or use tests.fakes.HashEmbedder",
            pytrace=False,
        )

    monkeypatch.setattr(qa.embeddings, "get_embedder", refuse)
    monkeypatch.setattr(qa.embeddings.SentenceTransformerEmbedder, "__init__", refuse)
    monkeypatch.setattr(qa.embeddings.CrossEncoderReranker, "__init__", refuse)


def run_qa(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qa.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )


def wait_until_serving(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll `url` until it answers; fail at once if the process that should serve it exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited"
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {timeout:g}s")


def start_llama_server(model: str, alias: str, port: int, cache_dir: Path) -> subprocess.Popen:
    """A real OpenAI-compatible endpoint: llama.cpp's server on 127.0.0.1 with a shipped GGUF."""
    from qa.generators.llama_cpp import assemble

    gguf = assemble(model, cache_dir)
    args = ["--model", str(gguf), "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", *args, "--n_ctx", "4096", "--n_threads", "2", "--verbose", "False"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_serving(f"http://127.0.0.1:{port}/v1/models", proc, 120, "llama.cpp server")
    return proc
