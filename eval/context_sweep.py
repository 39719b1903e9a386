"""Sweep the context stage (qa/context.py) without a language model: does what the model would read hold the answer,
and how many prompt tokens does it cost?

The seeds and every ClapNQ dev passage are indexed once through the normal Assistant (a work folder, reused by
later runs: the ingest is incremental); each question is retrieved once, as the answer path does
(`retriever.search(question, max(top_k, context_chunks))`), and every variant of `select_context` reads the same
retrieved chunks. Sentence embeddings are cached per text, so a variant costs about a second.

Sets: ClapNQ calibration ids (answerable) are where a variant is CHOSEN; the seeds and a seeded sample of the other
answerable ClapNQ questions are only REPORTED (choosing on them would fit the figures we are measured on).

Measures per set: the share of questions whose windows hold a gold answer (seeds: `contains_answer`; ClapNQ, whose
gold answers are annotators' sentences: mean `answer_token_recall` and the share with recall >= 0.8), the median
estimated passage tokens (windows + headers, what `context_tokens` budgets) and the median real draft prompt
tokens (qa.prompts.build_messages through the Qwen GGUF's chat template and tokenizer, vocab only).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python eval/context_sweep.py [--work DIR] [--clapnq DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from qa.api import Assistant
from qa.config import load_settings
from qa.context import HEADER_TOKENS, LEXICAL_WEIGHT, MAX_WINDOWS, RANK_WEIGHT, estimate_tokens, select_context
from qa.evaluate import (
    answer_token_recall,
    clapnq_calibration_ids,
    contains_answer,
    load_clapnq,
    load_questions,
    write_beir_corpus,
)
from qa.prompts import build_messages

ROOT = Path(__file__).resolve().parent.parent
CLAPNQ = ROOT.parent / "shared" / "bench" / "clapnq"  # as qa eval-clapnq and eval/fit_decline.py expect it
REPORT_SAMPLE = 100  # ClapNQ answerable non-calibration questions reported on
SAMPLE_SEED = 11
RECALL_BAR = 0.8
SEARCH_DEPTH = 12  # the widest context_chunks swept; a narrower one reads a prefix of the same ranking


class CachedEmbedder:
    """The Assistant's embedder with a cache per query. Sentences need none here: the context stage embeds each
    alone and remembers it per embedder (qa.context.sentence_vectors), so a sentence is embedded once for all
    variants, and its vector is the app's (before session 10 the sweep batched them, and its vectors differed)."""

    def __init__(self, inner):
        self.inner = inner
        self.queries: dict[str, np.ndarray] = {}

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self.queries:
            self.queries[text] = self.inner.embed_query(text)
        return self.queries[text]


class PromptCounter:
    """Real draft prompt tokens: the llama generator's own template and tokenizer over a vocab-only load."""

    def __init__(self, settings):
        from qa.generators.llama_cpp import ChatPrompt

        self.chat = ChatPrompt.of_model(settings)

    def __call__(self, question: str, passages) -> int:
        return len(self.chat.tokens(build_messages(question, passages)))


def assistant_for(work: Path, name: str, corpus: Path, embedder=None) -> Assistant:
    """An Assistant over `corpus` with its index in `work` (incremental: a rerun skips the ingest); `embedder`
    shares one loaded model between several indexes."""
    settings = load_settings({"corpus": str(corpus), "vectorstore": str(work / f"{name}-index")}, env={})
    assistant = Assistant(settings, embedder=embedder)
    t = time.perf_counter()
    report = assistant.ingest(corpus)
    print(f"{name}: {report.summary()} ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    return assistant


def question_sets(work: Path, clapnq: Path) -> tuple[dict[str, list], dict[str, Path]]:
    """{set name: [(question, answers)]} and the corpus folder of each set."""
    seeds = [(q.question, q.answers) for q in load_questions(ROOT / "eval" / "questions.jsonl") if q.answerable]
    passages, questions = load_clapnq(clapnq)
    corpus = work / "clapnq-corpus"
    write_beir_corpus({name.removesuffix(".txt"): tp for name, tp in passages.items()}, corpus)
    chosen, report = clapnq_split(questions)
    sets = {
        "calibration": [(q.question, q.answers) for q in chosen],
        "seeds": seeds,
        "clapnq-report": [(q.question, q.answers) for q in report],
    }
    return sets, {"calibration": corpus, "seeds": ROOT / "seeds", "clapnq-report": corpus}


def clapnq_split(questions: list) -> tuple[list, list]:
    """The answerable ClapNQ questions a sweep chooses on (the calibration ids) and the seeded sample of
    REPORT_SAMPLE others it only reports on; eval/fusion_sweep.py uses the same two sets."""
    calibration = clapnq_calibration_ids()
    answerable = [q for q in questions if q.answerable]
    chosen = [q for q in answerable if q.id.removeprefix("clapnq-") in calibration]
    rest = [q for q in answerable if q.id.removeprefix("clapnq-") not in calibration]
    return chosen, random.Random(SAMPLE_SEED).sample(rest, REPORT_SAMPLE)


DEFAULT = {
    "budget": 220,
    "chunks": 8,
    "window": 1,
    "lexical_weight": LEXICAL_WEIGHT,
    "max_windows": MAX_WINDOWS,
    "rank_weight": RANK_WEIGHT,
}


# each knob moved alone from DEFAULT, in this order
ONE_AT_A_TIME = {
    "rank_weight": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    "budget": (240, 260, 300),
    "window": (0, 2),
    "lexical_weight": (0.0, 1.0),
    "chunks": (6, 12),
    "max_windows": (4, 8),
    "redundancy": (0.2, 0.4),
    "window_share": (0.35, 0.5),
    "kind_weight": (0.05, 0.1, 0.2),
    "window_after": (0,),  # neighbours before the sentence only (the name a "he" stands for), none after
    "score_titles": (True,),  # a title the header shows whole is a candidate sentence again (before session 11)
    "cut_titles": (True,),  # a title too long for the header is a candidate (before session 21)
}


# select_context's keyword knobs a variant may set (the rest of DEFAULT are its positional values)
SELECT_KNOBS = (
    "rank_weight",
    "redundancy",
    "window_share",
    "kind_weight",
    "score_titles",
    "window_after",
    "cut_titles",
)


def variants(quick: bool) -> list[dict]:
    """Each a dict of changes to DEFAULT: config values (budget, chunks, window) and select_context's knobs."""
    # the default (no retrieval-rank prior, as in session 6), and the prior at its best calibration weight, 0.7
    out: list[dict] = [{}, {"rank_weight": 0.7}]
    out += [{knob: value} for knob, values in ONE_AT_A_TIME.items() for value in values]
    if quick:
        return out
    # the rules together, and with the config values around them
    for rank in (0.0, 0.3, 0.5, 0.7, 1.0):
        for extra in ({}, {"redundancy": 0.2}, {"kind_weight": 0.1}, {"window_share": 0.5}):
            for window in (1, 2):
                for chunks in (6, 8, 12):
                    out.append({"rank_weight": rank, **extra, "window": window, "chunks": chunks})
    return out


def label(v: dict) -> str:
    return ", ".join(f"{k}={v[k]}" for k in sorted(v)) or "default"


def passage_tokens(windows) -> int:
    return sum(estimate_tokens(p.chunk.text) + HEADER_TOKENS for p in windows)


def evaluate(v: dict, sets: dict, retrieved: dict, assistants: dict, embedder, count) -> dict:
    knobs = {**DEFAULT, **v}
    extra = {k: knobs[k] for k in SELECT_KNOBS if k in knobs}
    row: dict = {"variant": label(v), "settings": knobs}
    for name, items in sets.items():
        store = assistants[name].store
        recall, hits, est, real = [], [], [], []
        for question, answers in items:
            found = retrieved[name][question]
            if knobs.get("whole"):
                windows = found[: assistants[name].settings.top_k]
            else:
                windows = select_context(
                    question,
                    found[: knobs["chunks"]],
                    store.chunks_of,
                    embedder,
                    knobs["budget"],
                    knobs["window"],
                    knobs["lexical_weight"],
                    knobs["max_windows"],
                    **extra,
                )
            texts = [p.chunk.text for p in windows]
            if name == "seeds":
                hits.append(any(contains_answer(t, answers) for t in texts))
            else:
                r = answer_token_recall(texts, answers)
                recall.append(r)
                hits.append(r >= RECALL_BAR)
            est.append(passage_tokens(windows))
            if count is not None:
                real.append(count(question, windows))
        row[name] = {
            "n": len(items),
            "answer_in_windows" if name == "seeds" else f"recall>={RECALL_BAR}": round(sum(hits) / len(hits), 4),
            "token_recall": round(statistics.mean(recall), 4) if recall else None,
            "passage_tokens_median": statistics.median(est),
            "draft_prompt_tokens_median": statistics.median(real) if real else None,
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/qa-context-sweep"))
    parser.add_argument("--clapnq", type=Path, default=CLAPNQ, help="the ClapNQ folder (clapnq_dev_*.jsonl)")
    parser.add_argument("--quick", action="store_true", help="one knob at a time, no combinations")
    parser.add_argument("--no-real-tokens", action="store_true", help="skip the Qwen tokenizer")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "context-sweep.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sets, corpora = question_sets(args.work, args.clapnq)
    assistants = {"seeds": assistant_for(args.work, "seeds", corpora["seeds"])}
    assistants["calibration"] = assistants["clapnq-report"] = assistant_for(args.work, "clapnq", corpora["calibration"])
    embedder = CachedEmbedder(assistants["seeds"].embedder)
    retrieved: dict[str, dict] = {}
    for name, items in sets.items():
        retriever = assistants[name].retriever
        top_k = assistants[name].settings.top_k
        retrieved[name] = {q: retriever.search(q, max(top_k, SEARCH_DEPTH)) for q, _ in items}
    count = None if args.no_real_tokens else PromptCounter(assistants["seeds"].settings)
    rows = [evaluate({"whole": True}, sets, retrieved, assistants, embedder, count)]
    rows[0]["variant"] = "whole top-4 chunks (context_tokens 0)"
    seen = set()
    for v in variants(args.quick):
        v = {k: x for k, x in v.items() if DEFAULT.get(k) != x}
        if label(v) in seen:
            continue
        seen.add(label(v))
        t = time.perf_counter()
        rows.append(evaluate(v, sets, retrieved, assistants, embedder, count))
        print(f"{time.perf_counter() - t:5.1f} s  {format_row(rows[-1])}", file=sys.stderr, flush=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sizes = {name: len(items) for name, items in sets.items()}
    args.out.write_text(json.dumps({"sets": sizes, "rows": rows}, indent=1) + "\n", encoding="utf-8")


def format_row(row: dict) -> str:
    cal, seeds, rep = row["calibration"], row["seeds"], row["clapnq-report"]
    bar = f"recall>={RECALL_BAR}"

    def tok(x: dict) -> str:
        real = x["draft_prompt_tokens_median"]
        return f"{x['passage_tokens_median']:>5.0f}/{real if real is not None else '-':>5}"

    return (
        f"cal {cal['token_recall']:.3f} {cal[bar]:.3f} {tok(cal)} | seeds {seeds['answer_in_windows']:.3f} "
        f"{tok(seeds)} | rep {rep['token_recall']:.3f} {rep[bar]:.3f} {tok(rep)} | {row['variant']}"
    )


def table(rows: list[dict]) -> str:
    head = (
        "calibration: token recall, share>=0.8, est/real tokens | seeds: answer in windows, est/real | "
        "ClapNQ report: recall, share>=0.8, est/real | variant"
    )
    # whole chunks, the default and the prior at 0.7 first; the rest by calibration recall
    ranked = sorted(rows[3:], key=lambda r: r["calibration"]["token_recall"], reverse=True)
    return "\n".join(
        [head, *(format_row(r) for r in rows[:3]), "-- by calibration recall --"] + [format_row(r) for r in ranked]
    )


if __name__ == "__main__":
    main()
