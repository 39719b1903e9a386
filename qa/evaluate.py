"""Evaluation: run the real pipeline on known-answer questions and measure answers, declines and citations.

Question files are JSON Lines, one object a line:
  {"id": str, "question": str, "answers": [str], "sources": [str], "answerable": bool}
Unknown fields are ignored, so anyone's file with these fields drops in.
"""

from __future__ import annotations

import json
import re
import statistics
import string
from collections import Counter
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from qa.documents import load_document
from qa.errors import DocumentError, QAError
from qa.text import CHECKED_MARKER


class QuestionFileError(QAError):
    """A question file that cannot be used (names the file and line)."""


class BenchmarkError(QAError):
    """A benchmark folder (BEIR, ClapNQ) that is missing files or holds something else (names the file)."""


class ResultFileError(QAError):
    """A saved `qa eval` / `qa eval-clapnq` result that cannot be rescored (names the file, item and field)."""


@contextmanager
def _reading(folder: Path, kind: str):
    try:
        yield
    except FileNotFoundError as exc:
        raise BenchmarkError(f"{folder}: not a {kind} folder: {exc.filename} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as exc:
        raise BenchmarkError(f"{folder}: not a {kind} folder: cannot read it ({type(exc).__name__}: {exc})") from None


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]
    sources: list[str]
    answerable: bool


_FIELDS = {"id": str, "question": str, "answers": list, "sources": list, "answerable": bool}


def load_questions(path: Path) -> list[Question]:
    """Read and validate a question file. Raises QuestionFileError naming the line and what is wrong."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFileError(f"{path}: cannot read ({exc})") from None
    questions, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise QuestionFileError(f"{path}:{number}: expected a JSON object")
        for name, kind in _FIELDS.items():
            if name not in obj:
                raise QuestionFileError(f"{path}:{number}: missing field '{name}'")
            if not isinstance(obj[name], kind):
                raise QuestionFileError(f"{path}:{number}: field '{name}' must be {kind.__name__}")
        for name in ("answers", "sources"):
            if not all(isinstance(x, str) for x in obj[name]):
                raise QuestionFileError(f"{path}:{number}: field '{name}' must be a list of strings")
        if obj["answerable"] and not obj["answers"]:
            raise QuestionFileError(f"{path}:{number}: an answerable question needs at least one answer")
        if obj["id"] in seen:
            raise QuestionFileError(f"{path}:{number}: duplicate id '{obj['id']}'")
        seen.add(obj["id"])
        questions.append(Question(**{name: obj[name] for name in _FIELDS}))
    if not questions:
        raise QuestionFileError(f"{path}: no questions in the file")
    return questions


# ---- metrics (SQuAD-style normalisation) ---------------------------------------------------------------


def normalize(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _strip_markers(text: str) -> str:
    return CHECKED_MARKER.sub(" ", text)


_HYPHEN = re.compile(r"[-‐‑–—/]")


def contains_answer(prediction: str, answers: list[str]) -> bool:
    """A gold answer's words, in order, in the prediction, as SQuAD compares them (`normalize`), or with hyphens
    and slashes read as spaces: the passage's "3,000-plus" holds the gold answer "3,000" (deleted, the hyphen made
    one word "3000plus"), and "e-mail" still holds "email"."""
    text = _strip_markers(prediction)
    for split in (lambda t: t, lambda t: _HYPHEN.sub(" ", t)):
        pred = f" {normalize(split(text))} "
        if any(gold and f" {gold} " in pred for gold in (normalize(split(a)) for a in answers)):
            return True
    return False


def token_f1(prediction: str, answers: list[str]) -> float:
    pred = normalize(_strip_markers(prediction)).split()
    best = 0.0
    for answer in answers:
        gold = normalize(answer).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_token_recall(texts: list[str], answers: list[str]) -> float:
    """The largest share of a gold answer's words that one passage holds (each word counted as often as it occurs).

    Containment fails on long, paraphrased gold answers (ClapNQ's are annotators' sentences: 2 of 20 occur
    verbatim in passages that hold them); word recall still drops when a passage is cut short of the answer."""
    best = 0.0
    for answer in answers:
        gold = Counter(normalize(answer).split())
        if not gold:
            continue
        for text in texts:
            found = sum((gold & Counter(normalize(text).split())).values())
            best = max(best, found / sum(gold.values()))
    return best


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class _QuoteChecker:
    """Is a quote verbatim in the cited file (as loaded and cleaned, i.e. what a reader of the file sees)?"""

    def __init__(self, corpus: Path):
        self.corpus = corpus
        self.texts: dict[str, str] = {}

    def __call__(self, source: str, quote: str) -> bool:
        if source not in self.texts:
            try:
                self.texts[source] = " ".join(load_document(self.corpus / source, source).text.split())
            except DocumentError:
                self.texts[source] = ""
        return " ".join(quote.split()) in self.texts[source]


def score_item(q: Question, answer: dict, top_k: int, quote_ok: Callable[[str, str], bool]) -> dict:
    """The per-question measurements, added to the answer object."""
    retrieved = [p["source"] for p in answer["retrieved"]]
    rank = next((i for i, s in enumerate(retrieved, 1) if s in q.sources), None)
    cited = [c["source"] for c in answer["citations"]]
    # What the model was given to read: whole chunks or sentence windows, whichever `retrieved` holds.
    texts = [p.get("text") or "" for p in answer["retrieved"]]
    return {
        "correct": q.answerable and not answer["abstained"] and contains_answer(answer["answer"], q.answers),
        "f1": token_f1(answer["answer"], q.answers) if q.answerable and not answer["abstained"] else 0.0,
        "hit": rank is not None and rank <= top_k,
        "rr": 1.0 / rank if rank else 0.0,
        "answer_in_passages": q.answerable and any(contains_answer(t, q.answers) for t in texts),
        "answer_token_recall": answer_token_recall(texts, q.answers) if q.answerable else 0.0,
        "cited_in_sources": sum(s in q.sources for s in cited),
        "citations": len(cited),
        "faithful_quotes": sum(quote_ok(c["source"], c["quote"]) for c in answer["citations"]),
    }


DECLINE_STAGES = ("relevance", "judge", "model", "checks")  # qa.stages names the one that declined


def declines_by_stage(items: list[dict]) -> dict[str, int]:
    """Declines counted by the stage that made them; files written before answers named it count as "unknown"."""
    counts = dict.fromkeys((*DECLINE_STAGES, "unknown"), 0)
    for item in items:
        if item["abstained"]:
            stage = item.get("declined_by") or "unknown"
            counts[stage] = counts.get(stage, 0) + 1
    return counts


def _tokens_median(items: list[dict], kind: str) -> float | None:
    """Median per question of the tokens of every model call it made (the judge and the draft). A question the
    relevance gate declined made none (0); one whose back end counts no tokens (an empty `usage` after a model
    call) or from a file written before answers carried `usage` is left out. None when no question is left."""
    per_question = [
        sum(call.get(kind, 0) for call in i["usage"].values())
        for i in items
        if isinstance(i.get("usage"), dict) and (i["usage"] or i.get("declined_by") == "relevance")
    ]
    return statistics.median(per_question) if per_question else None


def summarize(questions: list[Question], items: list[dict], top_k: int) -> dict:
    ans = [i for q, i in zip(questions, items, strict=True) if q.answerable]
    unans = [i for q, i in zip(questions, items, strict=True) if not q.answerable]
    answered = [i for i in ans if not i["abstained"]]
    replied = [i for i in items if not i["abstained"]]  # every answer given, to answerable questions or not
    n_cit = sum(i["score"]["citations"] for i in answered)
    n_all_cit = sum(i["score"]["citations"] for i in items)
    totals = [i["timings"].get("total", 0.0) for i in items]
    firsts = [i["timings"]["first_token"] for i in items if "first_token" in i["timings"]]

    def share(num: float, den: int) -> float | None:
        return round(num / den, 4) if den else None

    return {
        "questions": len(items),
        "answerable": len(ans),
        "unanswerable": len(unans),
        "answer_accuracy": share(sum(i["score"]["correct"] for i in ans), len(ans)),
        "token_f1": share(sum(i["score"]["f1"] for i in ans), len(ans)),
        "correct_declines": share(sum(i["abstained"] for i in unans), len(unans)),
        "false_declines": share(sum(i["abstained"] for i in ans), len(ans)),
        "selective_accuracy": share(sum(i["score"]["correct"] for i in replied), len(replied)),
        "answered_wrong": share(sum(not i["score"]["correct"] for i in answered), len(ans)),
        f"retrieval_hit@{top_k}": share(sum(i["score"]["hit"] for i in ans), len(ans)),
        "retrieval_mrr": share(sum(i["score"]["rr"] for i in ans), len(ans)),
        "answer_in_passages": share(sum(i["score"]["answer_in_passages"] for i in ans), len(ans)),
        "answer_token_recall": share(sum(i["score"]["answer_token_recall"] for i in ans), len(ans)),
        "citation_precision": share(sum(i["score"]["cited_in_sources"] for i in answered), n_cit),
        "citation_faithfulness": share(sum(i["score"]["faithful_quotes"] for i in items), n_all_cit),
        "declined_by": {"answerable": declines_by_stage(ans), "unanswerable": declines_by_stage(unans)},
        # second drafts from the best window alone (qa.stages.redraft), and those shown, per kind of question
        "redrafts": {
            kind: {
                "made": sum(bool(i.get("redraft")) for i in group),
                "shown": sum(bool(i.get("redraft")) and not i["abstained"] for i in group),
            }
            for kind, group in (("answerable", ans), ("unanswerable", unans))
        },
        "latency_median_s": round(statistics.median(totals), 3) if totals else None,
        "latency_p95_s": round(p95(totals), 3),
        "first_token_median_s": round(statistics.median(firsts), 3) if firsts else None,
        "prompt_tokens_median": _tokens_median(items, "prompt_tokens"),
        "completion_tokens_median": _tokens_median(items, "completion_tokens"),
    }


def run_eval(
    assistant, questions: list[Question], corpus: Path, progress: Callable[[int, int, dict], None] | None = None
) -> dict:
    """Ask every question through `assistant` (already ingested) and return {"summary", "items"}."""
    top_k = assistant.settings.top_k
    quote_ok = _QuoteChecker(Path(corpus))
    items = []
    for n, q in enumerate(questions, start=1):
        result = assistant.ask(q.question)
        answer = {**result.to_dict(), "draft": result.raw}  # the model's unchecked reply, for diagnosis
        item = {
            "id": q.id,
            **answer,
            "expected": {"answers": q.answers, "sources": q.sources, "answerable": q.answerable},
        }
        item["score"] = score_item(q, answer, top_k, quote_ok)
        items.append(item)
        if progress:
            progress(n, len(questions), item)
    return {"summary": summarize(questions, items, top_k), "items": items}


_CEILINGS = ("false_", "answered_wrong", "latency", "first_token", "prompt_tokens", "completion_tokens")


_ANSWER_FIELDS = {"answer": str, "abstained": bool, "citations": list, "retrieved": list, "timings": dict}


def _saved_item(path: Path, n: int, item) -> Question:
    """The question an item of a saved result was asked, after checking the fields rescoring reads."""
    where = f"{path}: item {n}"
    if not isinstance(item, dict):
        raise ResultFileError(f"{where}: expected a JSON object")
    where += f" ({item.get('id', 'no id')})"
    for name, kind in {"id": str, **_ANSWER_FIELDS, "expected": dict}.items():
        if not isinstance(item.get(name), kind):
            problem = "missing field" if name not in item else "wrong type for field"
            raise ResultFileError(f"{where}: {problem} '{name}' (a file written by qa eval --json has it)")
    expected = item["expected"]
    if not isinstance(expected.get("answerable"), bool) or not all(
        isinstance(expected.get(k), list) for k in ("answers", "sources")
    ):
        raise ResultFileError(f"{where}: field 'expected' needs answers, sources and answerable")
    return Question(
        item["id"], item.get("question", ""), expected["answers"], expected["sources"], expected["answerable"]
    )


def rescore(path: Path, corpus: Path | None = None, top_k: int | None = None) -> tuple[dict, int]:
    """Recompute every item's score and the summary of a saved `qa eval` / `qa eval-clapnq` result, so a file
    written before a metric existed gets it without asking the model again.

    Quotes are checked again against `corpus` for an item whose cited files are all there; otherwise (the corpus
    is not at hand, as for a ClapNQ run's generated one) the item's stored count of faithful quotes is kept.
    Returns ({"summary", "items"}, the number of items whose stored quote count was kept)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read a result file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not data["items"]:
        raise ResultFileError(f"{path}: not a qa eval result (expected an object with a non-empty 'items' list)")
    saved: dict = data["summary"] if isinstance(data.get("summary"), dict) else {}
    k = next((int(m[1]) for key in saved if (m := re.fullmatch(r"retrieval_hit@(\d+)", key))), None)
    top_k = k or top_k
    if not top_k:
        raise ResultFileError(f"{path}: the summary has no retrieval_hit@K, so give the top_k the run used")
    questions = [_saved_item(path, n, item) for n, item in enumerate(data["items"], start=1)]
    checker = _QuoteChecker(Path(corpus)) if corpus else None
    items, kept = [], 0
    for n, (q, item) in enumerate(zip(questions, data["items"], strict=True), start=1):
        cited = {c.get("source", "") for c in item["citations"]}
        at_hand = checker is not None and all(s and (checker.corpus / s).is_file() for s in cited)
        stored = item.get("score", {}).get("faithful_quotes") if isinstance(item.get("score"), dict) else None
        if not at_hand and stored is None:
            raise ResultFileError(
                f"{path}: item {n} ({q.id}): its cited files are not in the corpus"
                f"{f' {corpus}' if corpus else ''} and it has no stored score to keep (give --corpus)"
            )
        try:
            quotes = checker if checker is not None and at_hand else (lambda source, quote: False)
            score = score_item(q, item, top_k, quotes)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResultFileError(f"{path}: item {n} ({q.id}): a citation or passage lacks {exc}") from None
        if not at_hand:
            score["faithful_quotes"], kept = stored, kept + 1
        items.append({**item, "score": score})
    summary = summarize(questions, items, top_k)
    if "gold_passage_cited" in saved or all(q.id.startswith("clapnq-") for q in questions):
        clapnq_summary(summary, items)
    return {"summary": summary, "items": items}, kept


def check_floors(summary: dict, floors: dict[str, float]) -> list[str]:
    """The metrics that miss their floor (false declines, wrong answers, latencies and tokens are ceilings)."""
    misses = []
    for name, bound in floors.items():
        value = summary.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float):
            misses.append(f"{name} is not one number, so it cannot have a floor")
            continue
        ceiling = name.startswith(_CEILINGS)
        if (value > bound) if ceiling else (value < bound):
            misses.append(f"{name} = {value} ({'above ceiling' if ceiling else 'below floor'} {bound})")
    return misses


def format_table(summary: dict) -> str:
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):  # declined_by: one row per half, "stage count" pairs
            for part, counts in value.items():
                shown = "  ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else counts
                rows.append((f"{key}.{part}", shown))
        else:
            rows.append((key, "-" if value is None else value))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_chart(summary: dict, path: Path, title: str = "qa evaluation") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = {
        k: v
        for k, v in summary.items()
        if isinstance(v, float) and 0 <= v <= 1 and "latency" not in k and "first_token" not in k
    }
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rates) + 1.2))
    names = list(rates)[::-1]
    bars = ax.barh(names, [rates[n] for n in names], color="#3b6ea8")
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, 1.1)
    latency = summary.get("latency_median_s")
    ax.set_title(f"{title} — {summary['questions']} questions, median latency {latency}s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- BEIR-style retrieval benchmark (SciFact) ----------------------------------------------------------

PUBLISHED_NDCG10 = {"bm25": 0.665, "dense": 0.645, "hybrid": None}  # BEIR paper (BM25); MTEB (MiniLM-L6-v2)


def load_beir(folder: Path, max_docs: int | None = None, max_queries: int | None = None, seed: int = 13):
    """(corpus {id: (title, text)}, queries {id: text}, qrels {qid: {docid}}) for the BEIR test split.

    With max_docs, the corpus is cut to every document judged relevant to the kept queries plus a seeded
    random sample of the others: a smaller haystack that keeps every needle.
    """
    import gzip
    import random

    folder = Path(folder)
    with _reading(folder, "BEIR"):
        qrels: dict[str, set[str]] = {}
        for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
            qid, docid, score = line.split("\t")[:3]
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(docid)
        all_queries = {}
        for line in (folder / "queries.jsonl").read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                if obj["_id"] in qrels:
                    all_queries[obj["_id"]] = obj["text"]
        ids = sorted(all_queries, key=int)[:max_queries] if max_queries else sorted(all_queries, key=int)
        queries = {q: all_queries[q] for q in ids}
        qrels = {q: qrels[q] for q in ids}
        with gzip.open(folder / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
            corpus = {o["_id"]: (o.get("title", ""), o["text"]) for o in map(json.loads, f) if o}
    if max_docs and max_docs < len(corpus):
        needed = set().union(*qrels.values()) & corpus.keys()
        others = sorted(corpus.keys() - needed)
        keep = needed | set(random.Random(seed).sample(others, max(0, max_docs - len(needed))))
        corpus = {k: v for k, v in corpus.items() if k in keep}
    return corpus, queries, qrels


def write_beir_corpus(corpus: dict[str, tuple[str, str]], folder: Path) -> None:
    """One .txt file per document (title on the first line), written only when missing or different."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{doc_id}.txt" for doc_id in corpus}
    for stale in folder.glob("*.txt"):
        if stale.name not in wanted:
            stale.unlink()
    for doc_id, (title, text) in corpus.items():
        path = folder / f"{doc_id}.txt"
        body = f"{title}\n\n{text}\n" if title else f"{text}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")


def _ndcg10(ranked: list[str], relevant: set[str]) -> float:
    import math

    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def beir_scores(retriever, queries: dict[str, str], qrels: dict[str, set[str]], mode: str, depth: int = 100) -> dict:
    """nDCG@10, Recall@100 and MRR@10 at document level (a document ranks by its best chunk)."""
    ndcg = recall = mrr = 0.0
    latencies = []
    import time

    for qid, text in queries.items():
        started = time.perf_counter()
        passages = retriever.search(text, depth * 3, mode=mode)
        latencies.append(time.perf_counter() - started)
        ranked: list[str] = []
        for p in passages:
            doc = p.chunk.source.removesuffix(".txt")
            if doc not in ranked:
                ranked.append(doc)
        relevant = qrels[qid]
        ndcg += _ndcg10(ranked, relevant)
        recall += len(set(ranked[:depth]) & relevant) / len(relevant)
        mrr += next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in relevant), 0.0)
    n = len(queries)
    return {
        "mode": mode,
        "ndcg@10": round(ndcg / n, 4),
        "recall@100": round(recall / n, 4),
        "mrr@10": round(mrr / n, 4),
        "published_ndcg@10": PUBLISHED_NDCG10.get(mode),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * p95(latencies), 1),
        "queries": n,
    }


def beir_floor_misses(rows: list[dict], floors: dict[str, float]) -> list[str]:
    """The modes whose nDCG@10 is below their floor (a mode that was not run is not a miss)."""
    misses = []
    for mode, floor in floors.items():
        got = next((r["ndcg@10"] for r in rows if r["mode"] == mode), None)
        if got is not None and got < floor:
            misses.append(f"{mode} nDCG@10 = {got} (below floor {floor})")
    return misses


def run_beir(
    assistant,
    folder: Path,
    corpus: Path,
    max_docs: int | None = None,
    max_queries: int | None = None,
    modes: list[str] | None = None,
    ingest_progress: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Ingest a BEIR test split (as files in `corpus`) through `assistant` and score each retrieval mode.

    Returns {"documents", "ingest", "modes": [beir_scores row per mode]}. Without `modes`: bm25, dense and
    hybrid, and hybrid+rerank when the assistant has rerankers."""
    from qa.retrieve import MODES

    documents, queries, qrels = load_beir(folder, max_docs, max_queries)
    write_beir_corpus(documents, corpus)
    report = assistant.ingest(corpus, progress=ingest_progress)
    if log:
        log(f"{len(documents)} documents, {len(queries)} queries; ingest: {report.summary()}")
    modes = modes or [m for m in MODES if m != "hybrid+rerank" or assistant.retriever.rerankers]
    rows = [beir_scores(assistant.retriever, queries, qrels, mode) for mode in modes]
    return {"documents": len(documents), "ingest": report.to_dict(), "modes": rows}


# ---- ClapNQ (answering and declining, end to end) ------------------------------------------------------


CALIBRATION_IDS = "clapnq_calibration_ids.txt"
# 120 more questions for fitting the decline decision only (session 12): 60 were too few to weigh its three
# signals (eval/draft_signal.py). Chosen at random among the questions outside `qa eval-clapnq --per-half 50`'s
# sample, and, like the 60, never asked by `run_clapnq`.
FIT_IDS = "clapnq_fit_ids.txt"


def clapnq_calibration_ids(source: Traversable | Path | None = None) -> set[str]:
    """The ClapNQ question ids used to choose the prompt and the judge threshold, which `run_clapnq` never asks.
    They also fix which questions `--per-half` samples (it samples among the others).

    They ship with the package (qa/data/); a missing or empty list is an error, since without it the
    calibration questions would silently be scored."""
    source = source if source is not None else resources.files("qa") / "data" / CALIBRATION_IDS
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BenchmarkError(
            f"{source} is missing: the ClapNQ calibration question ids ship with the package (qa/data/), "
            "and without them the calibration questions would be scored"
        ) from None
    ids = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    if not ids:
        raise BenchmarkError(f"{source}: no ClapNQ calibration question ids in the file")
    return ids


def clapnq_held_apart_ids() -> set[str]:
    """Every ClapNQ question id that reports never ask: the calibration ids and the decline decision's extra
    fitting ids (eval/fit_decline.py fits on all of them)."""
    return clapnq_calibration_ids() | clapnq_calibration_ids(resources.files("qa") / "data" / FIT_IDS)


def gold_passage_cited(items: list[dict]) -> float | None:
    """Among answerable questions that were answered: the share whose citations include a gold passage."""
    answered = [i for i in items if i["expected"]["answerable"] and not i["abstained"]]
    cited = sum(any(c["source"] in i["expected"]["sources"] for c in i["citations"]) for i in answered)
    return round(cited / len(answered), 4) if answered else None


def run_clapnq(
    assistant,
    folder: Path,
    corpus: Path,
    per_half: int | None = None,
    ingest_progress: Callable[[int, int, str], None] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """ClapNQ dev end to end: every passage written to `corpus` and ingested through `assistant`, then
    `per_half` seeded answerable + unanswerable questions (all without it; never the calibration ones) asked.

    Returns {"summary", "items"} as run_eval does, with gold_passage_cited added and answer_accuracy dropped
    (ClapNQ's gold answers are long sentences: token F1 is the measure)."""
    passages, questions = load_clapnq(folder, per_half, exclude=clapnq_calibration_ids(), never=clapnq_held_apart_ids())
    write_beir_corpus({name.removesuffix(".txt"): tp for name, tp in passages.items()}, corpus)
    report = assistant.ingest(corpus, progress=ingest_progress)
    if log:
        log(f"{len(passages)} passages, {len(questions)} questions; ingest: {report.summary()}")
    result = run_eval(assistant, questions, corpus, progress)
    clapnq_summary(result["summary"], result["items"])
    return result


# Measures that rest on "a gold answer occurs verbatim": ClapNQ's gold answers are annotators' sentences, which
# answers and passages rarely hold word for word (on the 20+20 sample: 0 of the 18 answers to answerable
# questions, 2 of the 20 sets of passages), so there token F1 and answer_token_recall measure instead.
CONTAINMENT_METRICS = ("answer_accuracy", "selective_accuracy", "answered_wrong", "answer_in_passages")


def clapnq_summary(summary: dict, items: list[dict]) -> dict:
    """A `summarize` result made ClapNQ's: gold_passage_cited added, the containment measures dropped."""
    summary["gold_passage_cited"] = gold_passage_cited(items)
    for name in CONTAINMENT_METRICS:
        summary.pop(name, None)
    return summary


def load_clapnq(
    folder: Path,
    per_half: int | None = None,
    seed: int = 5,
    exclude: AbstractSet[str] = frozenset(),
    never: AbstractSet[str] = frozenset(),
):
    """(passages {file name: (title, text)}, questions) from ClapNQ dev: every passage, and `per_half`
    seeded questions from each of the answerable and unanswerable halves (all of them without it).
    Questions in `exclude` (those used for calibration) are never asked; their passages stay in the corpus.
    Questions in `never` are not asked either, but leave the sample as it was: one that would have been drawn
    is replaced by a further draw (so adding ids there keeps earlier reports' questions)."""
    import random

    passages: dict[str, tuple[str, str]] = {}
    questions: list[Question] = []
    with _reading(Path(folder), "ClapNQ"):
        for name, answerable in (("clapnq_dev_answerable.jsonl", True), ("clapnq_dev_unanswerable.jsonl", False)):
            rows = [json.loads(line) for line in (Path(folder) / name).read_text().splitlines() if line.strip()]
            for row in rows:
                p = row["passages"][0]
                passages[f"{row['id']}.txt"] = (p.get("title", ""), p["text"])
            rows_q = [r for r in rows if r["id"] not in exclude]
            if per_half and per_half < len(rows_q):
                rng = random.Random(seed)
                drawn = rng.sample(rows_q, per_half)
                chosen = [r for r in drawn if r["id"] not in never]
                taken = {r["id"] for r in drawn} | never
                spare = [r for r in rows_q if r["id"] not in taken]
                chosen += rng.sample(spare, min(len(spare), per_half - len(chosen)))
            else:
                chosen = [r for r in rows_q if r["id"] not in never]
            for row in chosen:
                answers = [o["answer"] for o in row.get("output", []) if o.get("answer")] if answerable else []
                gold = [f"{row['id']}.txt"] if answerable else []
                questions.append(Question(f"clapnq-{row['id']}", row["input"], answers, gold, answerable))
    return passages, questions
