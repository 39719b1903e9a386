"""Sweep how dense and keyword retrieval are fused (qa/retrieve.py, mode "hybrid"), without a language model.

Each question's dense list (`store.search_dense(embedder.embed_query(q), n)`, cosine similarity) and keyword list
(`store.search_keyword(q, n)`, BM25) are retrieved ONCE, n = 100 for SciFact and `settings.candidates` (30)
otherwise, as `Retriever.search` fetches them; every variant fuses the same two lists in memory:
  - rrf{RRF_K} (rrf30 since session 13, rrf60 before): reciprocal rank fusion with qa's k, what
    `Retriever.search(q, k, "hybrid")` does (asserted: same chunks
    in the same order with the same scores for the first questions of each set);
  - rrf10/20/30/60 (other than qa's): other k;
  - wrrf-kw0.5/1.5/2.0: RRF (qa's k) with the keyword term weighted;
  - convex-a0.3 ... a0.7: alpha * dense + (1 - alpha) * keyword, each score min-max normalised per query over its
    own list (a list whose scores are all equal gives 1.0); a chunk missing from one list gets 0 for that part;
  - dense, keyword: one list alone.

Where a variant is CHOSEN (ties keep the current fusion):
  - SciFact (BEIR test split, all 5,183 documents, 300 queries; nDCG@10 at document level, a document ranked by its
    first chunk as qa.evaluate.beir_scores does): 2-fold cross-validation, the queries split by SPLIT_SEED into
    halves A and B; the variant best on A is scored on B and the one best on B on A, and their size-weighted mean
    is the cross-validated nDCG@10, compared with the current fusion's nDCG@10 on all queries.
  - ClapNQ calibration ids (the 30 answerable of qa/data/clapnq_calibration_ids.txt): by mean answer_token_recall
    of the top 8 chunks (the context_chunks the answer path reads), then gold-passage hit@8.
Only REPORTED (never chosen on): a seeded sample of 100 other answerable ClapNQ questions (the same sample as
eval/context_sweep.py) and the answerable seed questions (eval/questions.jsonl; gold answer in the top 4 / top 8
chunks, and where seed-27's answer ranks under each variant).

Corpora: SciFact as qa/evaluate.py's run_beir writes it, every ClapNQ dev passage, the repository's seeds/; each indexed
through the normal Assistant in a work folder outside the repo (incremental, so a rerun skips the ingest).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python eval/fusion_sweep.py [--work DIR]  (about 4 min, most of it the SciFact ingest)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
from context_sweep import assistant_for, clapnq_split  # eval/ is on sys.path when a script in it runs

from qa.api import Assistant
from qa.bench import machine
from qa.chunking import Chunk
from qa.evaluate import (
    _ndcg10,
    answer_token_recall,
    contains_answer,
    load_beir,
    load_clapnq,
    load_questions,
    write_beir_corpus,
)
from qa.retrieve import RRF_K
from qa.store.sqlite import Hit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "bench"
SCIFACT_DEPTH = 100  # per list, for SciFact (beir_scores ranks documents from a deep list)
TOP = (4, 8)  # top_k (whole chunks) and context_chunks (what the context stage reads)
SPLIT_SEED = 29  # SciFact halves A and B
CHECKED = 5  # questions per set on which the in-memory current fusion is asserted to equal Retriever.search
BOOTSTRAP = 2000
CURRENT = f"rrf{RRF_K}"


@dataclass
class Candidates:
    dense: list[Hit]
    keyword: list[Hit]


# ---- fusion variants: Candidates -> (chunk, score) best first ----------------------------------------------


def rrf(c: Candidates, k: int = RRF_K, keyword_weight: float = 1.0) -> list[tuple[Chunk, float]]:
    """Retriever.search's fusion, term for term (the same float sums, and the same order among ties: dense
    candidates first, then keyword-only ones, by a stable sort)."""
    fused: dict[str, list] = {}
    for rank, hit in enumerate(c.dense):
        fused[hit.chunk.id] = [hit.chunk, 1.0 / (k + rank + 1)]
    for rank, hit in enumerate(c.keyword):
        entry = fused.setdefault(hit.chunk.id, [hit.chunk, 0.0])
        entry[1] += keyword_weight * (1.0 / (k + rank + 1))
    return [(ch, s) for ch, s in sorted(fused.values(), key=lambda e: e[1], reverse=True)]


def minmax(hits: list[Hit]) -> dict[str, float]:
    if not hits:
        return {}
    low, high = min(h.score for h in hits), max(h.score for h in hits)
    return {h.chunk.id: (h.score - low) / (high - low) if high > low else 1.0 for h in hits}


def convex(c: Candidates, alpha: float) -> list[tuple[Chunk, float]]:
    dense, keyword = minmax(c.dense), minmax(c.keyword)
    chunks = {h.chunk.id: h.chunk for h in c.dense + c.keyword}  # dense order first, as rrf
    scored = [(ch, alpha * dense.get(i, 0.0) + (1 - alpha) * keyword.get(i, 0.0)) for i, ch in chunks.items()]
    return sorted(scored, key=lambda e: e[1], reverse=True)


VARIANTS: dict[str, Callable[[Candidates], list[tuple[Chunk, float]]]] = {
    CURRENT: rrf,  # first: ties in a choice keep it
    **{f"rrf{k}": partial(rrf, k=k) for k in (10, 20, 30, 60) if k != RRF_K},
    **{f"wrrf-kw{w}": partial(rrf, keyword_weight=w) for w in (0.5, 1.5, 2.0)},
    **{f"convex-a{a}": partial(convex, alpha=a) for a in (0.3, 0.4, 0.5, 0.6, 0.7)},
    "dense": lambda c: [(h.chunk, h.score) for h in c.dense],
    "keyword": lambda c: [(h.chunk, h.score) for h in c.keyword],
}


def ranked_chunks(c: Candidates) -> dict[str, list[Chunk]]:
    return {name: [ch for ch, _ in fuse(c)] for name, fuse in VARIANTS.items()}


# ---- retrieval, once per question ------------------------------------------------------------------------


def candidates(assistant: Assistant, questions: list[str], depth: int) -> dict[str, Candidates]:
    """Both lists per question, then the in-memory current fusion checked against Retriever.search on the first
    few."""
    store, embedder = assistant.store, assistant.embedder
    found = {
        q: Candidates(store.search_dense(embedder.embed_query(q), depth), store.search_keyword(q, depth))
        for q in questions
    }
    k = depth if depth > assistant.settings.candidates else max(TOP)  # Retriever fetches max(k, candidates)
    for q in questions[:CHECKED]:
        mine = [(ch.id, s) for ch, s in rrf(found[q])[:k]]
        theirs = [(p.chunk.id, p.score) for p in assistant.retriever.search(q, k, "hybrid")]
        assert mine == theirs, f"{CURRENT} does not reproduce Retriever.search for {q!r}"
    return found


# ---- the sets ------------------------------------------------------------------------------------------


def scifact(work: Path, folder: Path, embedder=None) -> tuple[dict, dict, Assistant]:
    """{variant: {ndcg@10 on all, A, B}}, the 2-fold choice, and the assistant (for its embedder)."""
    documents, queries, qrels = load_beir(folder)
    corpus = work / "scifact-corpus"
    write_beir_corpus(documents, corpus)
    assistant = assistant_for(work, "scifact", corpus, embedder)
    ids = sorted(queries, key=int)
    found = candidates(assistant, [queries[i] for i in ids], SCIFACT_DEPTH)
    half_a = set(random.Random(SPLIT_SEED).sample(ids, len(ids) // 2))
    per_query: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for qid in ids:
        for name, chunks in ranked_chunks(found[queries[qid]]).items():
            docs = list(dict.fromkeys(ch.source.removesuffix(".txt") for ch in chunks))
            per_query[name].append(_ndcg10(docs, qrels[qid]))
    in_a = [qid in half_a for qid in ids]
    rows = {}
    for name, scores in per_query.items():
        a = [s for s, x in zip(scores, in_a, strict=True) if x]
        b = [s for s, x in zip(scores, in_a, strict=True) if not x]
        rows[name] = {
            "ndcg@10": mean(scores),
            "ndcg@10_A": mean(a),
            "ndcg@10_B": mean(b),
            "vs_current": paired(scores, per_query[CURRENT]),
        }
    best_a = max(rows, key=lambda n: rows[n]["ndcg@10_A"])
    best_b = max(rows, key=lambda n: rows[n]["ndcg@10_B"])
    n_a, n_b = len(half_a), len(ids) - len(half_a)
    cross = (n_b * rows[best_a]["ndcg@10_B"] + n_a * rows[best_b]["ndcg@10_A"]) / len(ids)
    choice = {
        "split_seed": SPLIT_SEED,
        "queries_A": n_a,
        "queries_B": n_b,
        "chosen_on_A": best_a,
        "its_ndcg@10_on_B": rows[best_a]["ndcg@10_B"],
        "chosen_on_B": best_b,
        "its_ndcg@10_on_A": rows[best_b]["ndcg@10_A"],
        "cross_validated_ndcg@10": round(cross, 4),
        "current_ndcg@10": rows[CURRENT]["ndcg@10"],
    }
    return rows, choice, assistant


def clapnq(work: Path, folder: Path, embedder) -> dict[str, dict]:
    """{"clapnq-calibration" | "clapnq-report": {variant: hit@4, hit@8, token recall@8}}."""
    passages, questions = load_clapnq(folder)
    corpus = work / "clapnq-corpus"
    write_beir_corpus({name.removesuffix(".txt"): tp for name, tp in passages.items()}, corpus)
    assistant = assistant_for(work, "clapnq", corpus, embedder)
    chosen, report = clapnq_split(questions)
    # Answerable questions in neither set: nothing was chosen or reported on them before session 13, which tests
    # on them the one change session 8 left waiting for a fresh test set (RRF k = 30).
    used = {q.id for q in chosen + report}
    fresh = [q for q in questions if q.answerable and q.id not in used]
    out = {}
    for set_name, items in (("clapnq-calibration", chosen), ("clapnq-report", report), ("clapnq-fresh", fresh)):
        found = candidates(assistant, [q.question for q in items], assistant.settings.candidates)
        per_query: dict[str, dict[str, list]] = {name: {"hit@4": [], "hit@8": [], "recall@8": []} for name in VARIANTS}
        for q in items:
            for name, chunks in ranked_chunks(found[q.question]).items():
                sources = [ch.source for ch in chunks]
                for k in TOP:
                    per_query[name][f"hit@{k}"].append(float(any(s in q.sources for s in sources[:k])))
                per_query[name]["recall@8"].append(answer_token_recall([ch.text for ch in chunks[:8]], q.answers))
        out[set_name] = {
            name: {
                "n": len(items),
                **{metric: mean(values) for metric, values in m.items()},
                "vs_current_recall@8": paired(m["recall@8"], per_query[CURRENT]["recall@8"]),
            }
            for name, m in per_query.items()
        }
    return out


def seeds(work: Path, embedder) -> tuple[dict, dict]:
    """{variant: share of answerable seeds with a gold answer in the top 4 / top 8 chunks}, and for seed-27 the
    rank of the first chunk holding its answer under each variant."""
    questions = [q for q in load_questions(ROOT / "eval" / "questions.jsonl") if q.answerable]
    assistant = assistant_for(work, "seeds", ROOT / "seeds", embedder)
    found = candidates(assistant, [q.question for q in questions], assistant.settings.candidates)
    rows = {name: {"n": len(questions), "top4": [], "top8": []} for name in VARIANTS}
    seed27: dict[str, dict] = {}
    for q in questions:
        for name, chunks in ranked_chunks(found[q.question]).items():
            holds = [contains_answer(ch.text, q.answers) for ch in chunks]
            rows[name]["top4"].append(any(holds[:4]))
            rows[name]["top8"].append(any(holds[:8]))
            if q.id == "seed-27":
                rank = holds.index(True) + 1 if any(holds) else None  # None: in neither candidate list
                hit = chunks[rank - 1] if rank else None
                where = f"{hit.source} lines {hit.start_line}-{hit.end_line}" if hit else None
                seed27[name] = {"rank": rank, "chunk": where, "in_top8": bool(rank and rank <= 8)}
    for row in rows.values():
        row["top4"], row["top8"] = mean(row["top4"]), mean(row["top8"])
    return rows, seed27


# ---- helpers ---------------------------------------------------------------------------------------------


def mean(values) -> float:
    return round(statistics.mean(float(v) for v in values), 4)


def paired(mine: list[float], base: list[float]) -> dict:
    """Mean difference from the base per question, a seeded paired-bootstrap 95% interval, and the counts of
    questions better / worse."""
    diff = np.array(mine) - np.array(base)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "diff": round(float(diff.mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "better": int((diff > 1e-12).sum()),
        "worse": int((diff < -1e-12).sum()),
    }


def choose_clapnq(rows: dict) -> str:
    return max(rows, key=lambda n: (rows[n]["recall@8"], rows[n]["hit@8"]))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(results: dict) -> str:
    head = (
        f"{'variant':<13} | {'SciFact nDCG@10 all/A/B':<23} | {'ClapNQ cal hit@4/hit@8/recall':<29} | "
        f"{'ClapNQ report hit@4/hit@8/recall':<32} | {'ClapNQ fresh hit@4/hit@8/recall':<31} | seeds top4/top8"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        s, c, p, d = r["scifact"], r["clapnq-calibration"], r["clapnq-report"], r["seeds"]
        f = r["clapnq-fresh"]
        lines.append(
            f"{name:<13} | {s['ndcg@10']:.4f} {s['ndcg@10_A']:.4f} {s['ndcg@10_B']:.4f}   | "
            f"{c['hit@4']:.3f} {c['hit@8']:.3f} {c['recall@8']:.3f}           | "
            f"{p['hit@4']:.3f} {p['hit@8']:.3f} {p['recall@8']:.3f}              | "
            f"{f['hit@4']:.3f} {f['hit@8']:.3f} {f['recall@8']:.3f}             | {d['top4']:.3f} {d['top8']:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fusion-work"), help="indexes and corpora")
    parser.add_argument("--scifact", type=Path, default=BENCH / "scifact")
    parser.add_argument("--clapnq", type=Path, default=BENCH / "clapnq")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "fusion-sweep.json")
    args = parser.parse_args()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    sci_rows, sci_choice, first = scifact(args.work, args.scifact)
    embedder = first.embedder  # one model load for the three indexes
    clap = clapnq(args.work, args.clapnq, embedder)
    seed_rows, seed27 = seeds(args.work, embedder)
    results = {
        name: {
            "scifact": sci_rows[name],
            "clapnq-calibration": clap["clapnq-calibration"][name],
            "clapnq-report": clap["clapnq-report"][name],
            "clapnq-fresh": clap["clapnq-fresh"][name],
            "seeds": seed_rows[name],
        }
        for name in VARIANTS
    }
    cal_choice = choose_clapnq(clap["clapnq-calibration"])
    print(table(results))
    print(f"\nSciFact 2-fold: {json.dumps(sci_choice)}")
    print(f"ClapNQ calibration choice (recall@8, then hit@8; ties keep {CURRENT}): {cal_choice}")
    ranks = ", ".join(f"{name} {r['rank']}" for name, r in seed27.items())
    print(f"seed-27, rank of the first chunk holding its answer: {ranks}")
    elapsed = time.perf_counter() - started
    print(f"run time {elapsed:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "run_seconds": round(elapsed),
        "depth": {"scifact": SCIFACT_DEPTH, "other": "settings.candidates (30)"},
        "choice": {"scifact_2fold": sci_choice, "clapnq_calibration": cal_choice},
        "seed-27": seed27,
        "variants": results,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
