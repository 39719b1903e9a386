"""Fit the decline decision (qa/decide.py) for one model on the held-apart ClapNQ calibration questions.

    python eval/fit_decline.py [--llm-model NAME_OR_GGUF] [--out FILE]

One command, live, with the pipeline as it is now: indexes the 600 ClapNQ dev passages (../shared/bench/clapnq,
or --bench) with your settings, asks each of the 180 held-apart questions (the 60 of
qa/data/clapnq_calibration_ids.txt and the 120 of qa/data/clapnq_fit_ids.txt, which `qa eval-clapnq` never asks)
through `Assistant.ask` with the judge stage recording its inputs (P(yes), best dense cosine, word overlap) and
never declining, so every question also gets a draft and its citation checks.
Then it fits a logistic model of "answerable" on the three signals and chooses one operating point: the most
correct declines of the whole pipeline (gate, decision, the draft's own decline, the checks) with at most
--max-false-declines (0.15) false declines on these questions. The entry goes to --out (default: your own
<cache_dir>/decline_calibration.json, which qa reads before the shipped qa/data/decline_calibration.json), keyed
by the model's SHA-256. About 5 s a question for the 1.5B model on 2 cores (15 minutes).

    python eval/fit_decline.py --refit eval/results/decline_features_qwen2.5-coder-1.5b.json --out FILE
        fits again from recorded features (no model run)
    python eval/fit_decline.py --report ITEMS.json [...] --index FOLDER [--llm-model NAME]
        offline: applies the fitted decision to saved `qa eval` / `qa eval-clapnq` answers (before vs after)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from qa import decide, stages
from qa.config import load_settings
from qa.decide import FEATURES, Decision, Features

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "bench" / "clapnq"


# ---- recording features, live --------------------------------------------------------------------------


def record(settings, bench: Path, log=print) -> list[dict]:
    from qa.api import Assistant
    from qa.evaluate import clapnq_held_apart_ids, load_clapnq, write_beir_corpus

    ids = {f"clapnq-{i}" for i in clapnq_held_apart_ids()}
    passages, questions = load_clapnq(bench)
    questions = [q for q in questions if q.id in ids]
    assistant = Assistant(settings)
    corpus = Path(settings.corpus)
    write_beir_corpus({name.removesuffix(".txt"): tp for name, tp in passages.items()}, corpus)
    log(f"indexing {len(passages)} ClapNQ passages into {settings.vectorstore}: {assistant.ingest(corpus).summary()}")
    rows = []
    try:
        with judge_recorded(assistant) as ask:
            for n, q in enumerate(questions, 1):
                t = time.perf_counter()
                _, row = ask(q)
                rows.append(row)
                log(f"[{n}/{len(questions)}] {time.perf_counter() - t:.1f}s {json.dumps(row)}")
    finally:
        assistant.store.close()
    if not any(r["features"] for r in rows):
        raise SystemExit(f"model {settings.llm_model} did not judge (an API model has no judge): nothing to fit")
    return rows


@contextmanager
def judge_recorded(assistant):
    """Inside, the judge stage records its inputs and never declines (a fitted decision with threshold 0), so
    every question also gets its draft and checks: the operating point is chosen for the whole pipeline. Yields
    ask(question) -> (Answer, the row of signals and outcomes that fit() reads)."""
    assistant.decision = Decision("fitted", 0.0, (0.0, 0.0, 0.0), 0.0)
    seen: list[stages.Verdict] = []
    real_judge = stages.judge

    def recording_judge(*args, **kwargs):
        verdict = real_judge(*args, **kwargs)
        seen.append(verdict)
        return verdict

    def ask(q):
        seen.clear()
        answer = assistant.ask(q.question)
        verdict = seen[0] if seen else None
        return answer, {
            "id": q.id,
            "answerable": q.answerable,
            "gate_passed": answer.declined_by != "relevance",
            "p_yes": verdict.score if verdict else None,
            "features": None if not verdict or not verdict.features else vars(verdict.features),
            # what the draft and its checks did with the judge out of the way
            "downstream_declined": answer.abstained and answer.declined_by != "relevance",
            "declined_by": answer.declined_by,
        }

    stages.judge = recording_judge
    try:
        yield ask
    finally:
        stages.judge = real_judge


# ---- fitting and the operating point ---------------------------------------------------------------------


def outcomes(rows: list[dict], answers) -> dict:
    """Correct and false declines of the whole pipeline when the judge stage answers where `answers(row)`."""
    declined = [
        not r["gate_passed"] or (r["features"] is not None and not answers(r)) or r["downstream_declined"] for r in rows
    ]
    pos = [d for d, r in zip(declined, rows, strict=True) if r["answerable"]]
    neg = [d for d, r in zip(declined, rows, strict=True) if not r["answerable"]]
    return {
        "correct_declines": round(sum(neg) / max(1, len(neg)), 4),
        "false_declines": round(sum(pos) / max(1, len(pos)), 4),
    }


def choose_threshold(rows: list[dict], score, max_false: float) -> tuple[float, dict]:
    """The threshold on `score(row)` with the most correct declines at most `max_false` false declines (ties:
    fewer false declines), placed midway between the two neighbouring scores. When no threshold gets that low
    (the gate and the checks alone decline more answerable questions), the one with the fewest false declines:
    the most correct declines regardless would decline nearly everything."""
    scores = sorted({score(r) for r in rows if r["features"] is not None})
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [scores[-1] + 1e-9]
    best = None
    for cut in cuts:
        got = outcomes(rows, lambda r, c=cut: score(r) >= c)
        if got["false_declines"] <= max_false:
            key = (True, got["correct_declines"], -got["false_declines"])
        else:
            key = (False, -got["false_declines"], got["correct_declines"])
        if best is None or key > best[0]:
            best = (key, cut, got)
    return best[1], best[2]


def fit(rows: list[dict], max_false: float) -> dict:
    judged = [r for r in rows if r["features"] is not None]
    x = [[r["features"][name] for name in FEATURES] for r in judged]
    weights, bias = decide.fit_logistic(x, [r["answerable"] for r in judged])
    model = Decision("fitted", 0.0, tuple(weights), bias)
    prob = lambda r: model.probability(Features(**r["features"]))  # noqa: E731
    threshold, got = choose_threshold(rows, prob, max_false)
    before = outcomes(rows, lambda r: r["p_yes"] >= decide.DEFAULT_JUDGE_THRESHOLD)
    judge_t, judge_got = choose_threshold(rows, lambda r: r["p_yes"], max_false)
    pos = lambda f: [f(r) for r in judged if r["answerable"]]  # noqa: E731
    neg = lambda f: [f(r) for r in judged if not r["answerable"]]  # noqa: E731
    return {
        "weights": dict(zip(FEATURES, (round(w, 6) for w in weights), strict=True)),
        "bias": round(bias, 6),
        "threshold": round(threshold, 6),
        "calibration": {
            "questions": len(rows),
            "judged": len(judged),
            "fitted": got,
            "max_false_declines": max_false,
            "max_false_reachable": got["false_declines"] <= max_false,
            "judge_alone_at_default": before,
            "judge_alone_refitted": {"threshold": round(judge_t, 4), **judge_got},
            "auroc_judge": round(decide.auroc(pos(lambda r: r["p_yes"]), neg(lambda r: r["p_yes"])), 4),
            "auroc_fitted": round(decide.auroc(pos(prob), neg(prob)), 4),
        },
    }


def write_entry(out: Path, entry: dict) -> None:
    entries = decide.read_calibrations(out)
    entries = [e for e in entries if decide.find_entry([e], entry["model"], entry["sha256"]) is None] + [entry]
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "about": "Decline decisions fitted per model by eval/fit_decline.py on the ClapNQ calibration questions "
        "(qa/decide.py reads this file)",
        "models": entries,
    }
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


# ---- offline report on saved answers ----------------------------------------------------------------------


def report(paths: list[Path], settings, index: Path | None, entry_decision: Decision, judge_t: float) -> None:
    """Before (the saved decisions) vs after (the fitted decision in the judge stage) on saved answers.

    A question the old judge declined but the new decision lets through had no draft: it is counted as answered
    (the draft and its checks might still decline it), so "after" correct declines are a lower bound and false
    declines a lower bound too; the number of such questions is printed."""
    from qa.api import Assistant
    from qa.embeddings import get_embedder

    embedder = None
    counts = None
    if index is not None:
        s = settings.replace(vectorstore=index)
        store = Assistant(s)._open_store(verify=False)
        counts = store.term_counts
    for path in paths:
        items = json.loads(path.read_text())["items"]
        # files written before answers carried `dense` get it recomputed (the same model's cosine); a None in a
        # newer file means the dense search did not see that passage, as the product saw it
        if any("dense" not in r for i in items for r in i["retrieved"]) and embedder is None:
            s = settings
            embedder = get_embedder(s.embed_model, s.embed_batch, s.threads, s.embed_backend, s.cache_dir)
        rows = [_item_row(item, embedder, counts) for item in items]
        _print_report(path, rows, entry_decision, judge_t)


def _item_row(item: dict, embedder, counts) -> dict:
    import numpy as np

    from qa.types import Chunk, Passage

    texts = [r["text"] for r in item["retrieved"]]
    dense = [r.get("dense") for r in item["retrieved"]]
    if embedder is not None and any("dense" not in r for r in item["retrieved"]):
        q = np.asarray(embedder.embed_query(item["question"]), dtype=float)
        docs = np.asarray(embedder.embed_documents(texts), dtype=float)
        dense = [float(d @ q / (np.linalg.norm(d) * np.linalg.norm(q))) for d in docs]
    passages = [
        Passage(Chunk("", t, "", 0, 0, 1, 1, None, "", ""), 0.0, dense=d) for t, d in zip(texts, dense, strict=True)
    ]
    judged = item.get("judge") is not None
    gate_declined = item["abstained"] and (item.get("declined_by") == "relevance" or not judged)
    old_judge_declined = item["abstained"] and (
        item.get("declined_by") == "judge" or (judged and "generate" not in item["timings"] and not gate_declined)
    )
    feats = decide.features(item["question"], passages, item["judge"], counts) if judged else None
    return {
        "answerable": item["expected"]["answerable"],
        "before": item["abstained"],
        "gate_declined": gate_declined,
        "old_judge_declined": old_judge_declined,
        "downstream_declined": item["abstained"] and not gate_declined and not old_judge_declined,
        "p_yes": item.get("judge"),
        "features": feats,
    }


def _rates(rows: list[dict], declined: list[bool]) -> str:
    pos = [d for d, r in zip(declined, rows, strict=True) if r["answerable"]]
    neg = [d for d, r in zip(declined, rows, strict=True) if not r["answerable"]]
    return (
        f"correct declines {sum(neg) / max(1, len(neg)):.3f} ({sum(neg)}/{len(neg)}), "
        f"false declines {sum(pos) / max(1, len(pos)):.3f} ({sum(pos)}/{len(pos)})"
    )


def _print_report(path: Path, rows: list[dict], decision: Decision, judge_t: float) -> None:
    # how often the draft or its checks declined a question the old judge let through, per half: the expected
    # fate of a question that is let through now but had no draft
    drafted = [r for r in rows if not r["gate_declined"] and not r["old_judge_declined"]]
    rate = {
        half: sum(r["downstream_declined"] for r in group) / max(1, len(group))
        for half in (True, False)
        for group in [[r for r in drafted if r["answerable"] == half]]
    }

    def after(answers) -> tuple[list[bool], int, str]:
        out, unknown, expected = [], 0, {True: 0.0, False: 0.0}
        for r in rows:
            if r["gate_declined"]:
                out.append(True)
            elif r["features"] is not None and not answers(r):
                out.append(True)
            elif r["old_judge_declined"]:
                out.append(False)  # no draft was made: counted as answered
                unknown += 1
                expected[r["answerable"]] += rate[r["answerable"]]
            else:
                out.append(r["downstream_declined"])
        n = {half: sum(r["answerable"] == half for r in rows) or 1 for half in (True, False)}
        neg = sum(d for d, r in zip(out, rows, strict=True) if not r["answerable"])
        pos = sum(d for d, r in zip(out, rows, strict=True) if r["answerable"])
        estimate = (
            f"; with those drafts declining as often as the drafted ones did: correct declines "
            f"{(neg + expected[False]) / n[False]:.3f}, false declines {(pos + expected[True]) / n[True]:.3f}"
        )
        return out, unknown, estimate

    judged = [r for r in rows if r["features"] is not None]
    prob = lambda r: decision.probability(r["features"])  # noqa: E731
    p_yes = lambda r: r["p_yes"]  # noqa: E731
    fitted, unknown, estimate = after(lambda r: decision.answers(r["features"]))
    judge_refit, unknown_j, estimate_j = after(lambda r: r["p_yes"] >= judge_t)
    print(f"{path} ({len(rows)} questions, {sum(r['answerable'] for r in rows)} answerable)")
    print(f"  before (saved)                     : {_rates(rows, [r['before'] for r in rows])}")
    print(
        f"  after, judge alone at {judge_t:.3f}       : {_rates(rows, judge_refit)}"
        f"  [{unknown_j} let through without a draft{estimate_j}]"
    )
    print(
        f"  after, fitted decision             : {_rates(rows, fitted)}  [{unknown} let through without a draft"
        f"{estimate}]"
    )
    for name, f in (("judge P(yes)", p_yes), ("fitted P(answer)", prob)):
        value = decide.auroc([f(r) for r in judged if r["answerable"]], [f(r) for r in judged if not r["answerable"]])
        print(f"  AUROC {name:17}: {value:.3f}" if value is not None else f"  AUROC {name}: n/a")


# ---- command line ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llm-model", help="builtin name or .gguf file (default: your settings)")
    p.add_argument("--bench", type=Path, default=BENCH, help="the ClapNQ folder (clapnq_dev_*.jsonl)")
    p.add_argument("--work", type=Path, help="where the ClapNQ index goes (default <cache_dir>/calibration)")
    p.add_argument("--out", type=Path, help="calibration file to add the entry to (default <cache_dir>/...)")
    p.add_argument("--features", type=Path, help="also save the recorded features here")
    p.add_argument("--refit", type=Path, help="fit from recorded features instead of running the model")
    p.add_argument("--max-false-declines", type=float, default=0.15)
    p.add_argument("--report", type=Path, nargs="+", help="offline before/after on saved answer files")
    p.add_argument("--index", type=Path, help="with --report: the index whose keyword table gives the IDF")
    p.add_argument("--calibration", type=Path, help="with --report: the calibration file to apply (default: qa's)")
    args = p.parse_args(argv)
    settings = load_settings({"llm_model": args.llm_model})
    name, sha = decide.model_identity(settings.llm, settings.llm_model)
    if args.report:
        files = [args.calibration] if args.calibration else None
        decision = decide.decision_for(settings.llm, settings.llm_model, None, settings.cache_dir, files)
        if not decision.calibrated:
            raise SystemExit(f"{name} has no fitted decline decision yet: run this script without --report first")
        judge_t = decision.fitted["calibration"]["judge_alone_refitted"]["threshold"]
        print(f"decision: {decision.describe()}")
        report(args.report, settings, args.index, decision, judge_t)
        return
    if args.refit:
        recorded = json.loads(args.refit.read_text())
        rows, meta = recorded["rows"], recorded["settings"]
    else:
        work = args.work or settings.cache_dir / "calibration"
        settings = settings.replace(vectorstore=work / "clapnq-index", corpus=work / "clapnq-corpus")
        rows = record(settings, args.bench, log=lambda m: print(m, file=sys.stderr, flush=True))
        meta = {
            k: str(getattr(settings, k))
            for k in ("embed_model", "embed_backend", "chunk_size", "chunk_overlap", "top_k", "min_relevance")
        }
        if args.features:
            args.features.write_text(json.dumps({"model": name, "settings": meta, "rows": rows}, indent=1) + "\n")
    fitted = fit(rows, args.max_false_declines)
    if not fitted["calibration"]["max_false_reachable"]:
        got = fitted["calibration"]["fitted"]
        print(
            f"no threshold keeps false declines at or under {args.max_false_declines:g} on these questions (the gate "
            f"and the checks alone decline more answerable ones): chose the fewest, {got['false_declines']:g}, "
            f"with {got['correct_declines']:g} correct declines",
            file=sys.stderr,
        )
    entry = {
        "model": name,
        "sha256": sha,
        **fitted,
        "fitted_on": f"{len(rows)} ClapNQ calibration questions, {time.strftime('%Y-%m-%d')}",
        "settings": meta,
    }
    out = args.out or decide.user_file(settings.cache_dir)
    write_entry(out, entry)
    print(json.dumps(entry, indent=1))
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
