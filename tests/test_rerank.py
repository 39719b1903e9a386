"""The optional rerank stage: a sentence-transformers CrossEncoder named in config re-scores the best fused passages.

No trained cross-encoder installs with its weights from PyPI here (MODELS.md), so these tests build a real
CrossEncoder from the shipped MiniLM with a seeded, untrained scoring head. Its scores carry no meaning; what is
tested is that whatever the configured model scores is what orders the passages, in every edge that retrieves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa.api import Assistant
from qa.errors import ConfigError
from tests.conftest import ROOT, real_embedder_only, run_qa

QUESTION = "Who rejected the asylum offer, and why?"


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> str:
    import torch
    from sentence_transformers import CrossEncoder

    from qa.embeddings import resolve_model_path

    folder = tmp_path_factory.mktemp("rerank") / "minilm-cross-encoder"
    torch.manual_seed(0)  # the head is untrained: seed it so every load scores the same
    CrossEncoder(resolve_model_path("all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return str(folder)


@pytest.mark.model
def test_the_configured_cross_encoder_orders_the_best_fused_passages(settings, seed_corpus, cross_encoder):
    from sentence_transformers import CrossEncoder

    assistant = Assistant(settings.replace(rerank_model=cross_encoder, rerank_depth=8, min_relevance=0.99))
    assistant.ingest()
    fused = assistant.retriever.search(QUESTION, 8, "hybrid")
    expected = CrossEncoder(cross_encoder, device="cpu").predict([(QUESTION, p.chunk.text) for p in fused])
    best_first = [fused[i].chunk.id for i in np.argsort(-expected, kind="stable")[:4]]
    assert best_first != [p.chunk.id for p in fused[:4]], "pick a question whose order the reranker changes"

    reranked = assistant.retriever.search(QUESTION, 4, "hybrid+rerank")
    assert [p.chunk.id for p in reranked] == best_first
    assert [p.score for p in reranked] == pytest.approx(sorted(expected, reverse=True)[:4], abs=1e-5)

    # asking uses it too (min_relevance 0.99 declines before the model runs: only retrieval is exercised)
    answer = assistant.ask(QUESTION)
    assert answer.abstained and [p.chunk.id for p in answer.retrieved] == best_first
    assistant.store.close()


@real_embedder_only  # loading a cross-encoder (even a missing one) imports torch and sentence-transformers
def test_reranking_without_a_model_or_with_a_missing_one_is_a_clear_error(assistant, seed_corpus, tmp_path):
    assistant.ingest()
    with pytest.raises(ConfigError, match="needs a rerank_model"):
        assistant.retriever.search(QUESTION, 4, "hybrid+rerank")
    broken = Assistant(assistant.settings.replace(rerank_model=str(tmp_path / "no-such-model")))
    with pytest.raises(ConfigError, match=r"rerank_model '.*no-such-model': cannot load it"):
        broken.retriever  # noqa: B018


@pytest.mark.model
def test_eval_beir_scores_hybrid_plus_rerank_when_a_model_is_configured(tmp_path, cross_encoder):
    scifact = ROOT.parent / "shared" / "bench" / "scifact"
    if not scifact.is_dir():
        pytest.skip("needs ../shared/bench/scifact beside the checkout")
    out = tmp_path / "beir.json"
    args = ["--max-docs", "30", "--max-queries", "3", "--vectorstore", str(tmp_path / "index"), "--json", str(out)]
    result = run_qa("eval-beir", str(scifact), *args, "--rerank-model", cross_encoder, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    modes = [row["mode"] for row in json.loads(out.read_text())["modes"]]
    assert modes == ["bm25", "dense", "hybrid", "hybrid+rerank"]
    assert "mode=hybrid+rerank" in result.stdout
