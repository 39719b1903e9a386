"""Does the draft's own confidence help the decline decision? A measurement, not a product feature.

    python eval/draft_signal.py --record OUT.json      # live: ClapNQ calibration ids + the 50+50 test questions
    python eval/draft_signal.py --fit OUT.json         # offline: fit on calibration, report on the test questions
    python eval/draft_signal.py --record OUT.json --splits seeds   # the seed questions, to read (never fitted on)

The decline decision (qa/decide.py) reads three signals that exist before the draft: the judge's log-odds, the
best dense cosine and the IDF-weighted question overlap. Its limit on ClapNQ is the judge's AUROC (issue 14). This
asks whether signals that exist only after a draft add to it: the mean and the lowest log-probability of the
draft's greedy tokens (a model copying an answer out of the passages is sure of each token; one stitching a
neighbouring fact together may not be), and the model's own yes/no answer, asked right after its draft, to
"does the source you cited state what your answer says?" and "does your answer give what the question asks
for?" (SELF_CHECKS; session 17: they add nothing, eval/HISTORY.md).

--record asks every question with the judge recording and never declining (as eval/fit_decline.py does), so
every question gets a draft; it records the draft's token log-probabilities from the same greedy decoding the
product uses (LlamaCppGenerator.keep_logprobs). --fit fits each feature set on the 60 calibration questions only,
chooses the operating point there (most correct declines at <= 0.15 false declines of the whole pipeline) and
applies it, unchanged, to the 100 test questions that `qa eval-clapnq --per-half 50` asks. It also fits
subsets of the shipped signals, and, with `--splits more` recorded and `--fit-on calibration,more`, fits on the
120 more held-apart questions of qa/data/clapnq_fit_ids.txt, to see what a larger calibration set changes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_decline import BENCH, ROOT, choose_threshold, judge_recorded, outcomes  # noqa: E402

from qa import decide, stages  # noqa: E402
from qa.decide import FEATURES  # noqa: E402

# After the draft, the model is asked about its own answer, reading on from the draft's cached prompt (llama.cpp
# keeps prompt + draft in its KV cache, so each question costs only its own ~30 tokens).
SELF_CHECKS = {
    "self_cites": "Does the source you cited state what your answer says, about the same person, thing, number "
    "and date? Reply with one word: yes or no.",
    "self_answers": "Does your answer give what the question asks for, as the sources state it? "
    "Reply with one word: yes or no.",
}

SETS = {
    "judge alone": ("judge_logit",),
    "judge + dense": ("judge_logit", "best_dense"),
    "before the draft (shipped)": FEATURES,
    "+ mean log-prob": (*FEATURES, "mean_logprob"),
    "+ lowest log-prob": (*FEATURES, "min_logprob"),
    "+ both log-probs": (*FEATURES, "mean_logprob", "min_logprob"),
    "self-check alone: cites": ("self_cites",),
    "self-check alone: answers": ("self_answers",),
    "+ self-check: cites": (*FEATURES, "self_cites"),
    "+ self-check: answers": (*FEATURES, "self_answers"),
    "+ both self-checks": (*FEATURES, "self_cites", "self_answers"),
}


def self_checks(generator, question: str, passages, draft: str) -> dict[str, float]:
    """P(yes) of each SELF_CHECKS question about `draft`, asked after the draft's own prompt and reply."""
    from qa.prompts import build_messages

    asked = [*build_messages(question, passages), {"role": "assistant", "content": draft}]
    return {
        name: generator.yes_probability([*asked, {"role": "user", "content": text}])
        for name, text in SELF_CHECKS.items()
    }


def record(settings, bench: Path, out: Path, splits: list[str]) -> None:
    from qa.api import Assistant
    from qa.evaluate import (
        clapnq_calibration_ids,
        clapnq_held_apart_ids,
        load_clapnq,
        load_questions,
        write_beir_corpus,
    )

    assistant = Assistant(settings)
    assistant.generator.keep_logprobs = True
    if splits == ["seeds"]:  # the seed questions over seeds/, for diagnosis (never fitted on)
        questions = [(q, "seeds") for q in load_questions(ROOT / "eval" / "questions.jsonl")]
        print(f"indexing: {assistant.ingest(ROOT / 'seeds').summary()}", flush=True)
    else:
        calibration, held_apart = clapnq_calibration_ids(), clapnq_held_apart_ids()
        passages, test = load_clapnq(bench, 50, exclude=calibration, never=held_apart)  # what eval-clapnq asks
        _, every = load_clapnq(bench)
        chosen = {
            "calibration": [q for q in every if q.id.removeprefix("clapnq-") in calibration],
            "test": test,
            # the 120 of qa/data/clapnq_fit_ids.txt (first drawn here, at random among the questions in neither set)
            "more": [q for q in every if q.id.removeprefix("clapnq-") in held_apart - calibration],
        }
        questions = [(q, split) for split in splits for q in chosen[split]]
        corpus = Path(settings.corpus)
        write_beir_corpus({name.removesuffix(".txt"): tp for name, tp in passages.items()}, corpus)
        print(f"indexing: {assistant.ingest(corpus).summary()}", flush=True)
    rows = []
    read: list = []  # the passages the judge (and so the draft) read, for the self-checks
    with judge_recorded(assistant) as ask:
        recording = stages.judge

        def reading_judge(generator, question, passages, *rest, **kw):
            read[:] = [question, passages]
            return recording(generator, question, passages, *rest, **kw)

        stages.judge = reading_judge
        try:
            for n, (q, split) in enumerate(questions, 1):
                assistant.generator.draft_logprobs = None
                read.clear()
                t = time.perf_counter()
                answer, row = ask(q)
                lps = assistant.generator.draft_logprobs
                drafted = bool(read) and answer.declined_by not in ("relevance", "model") and answer.raw.strip()
                t2 = time.perf_counter()
                checks = self_checks(assistant.generator, read[0], read[1], answer.raw) if drafted else {}
                rows.append(
                    {
                        **row,
                        "split": split,
                        "logprobs": lps,
                        "answer": answer.text,
                        "draft": answer.raw,
                        "self_checks": checks,
                        "self_check_seconds": round(time.perf_counter() - t2, 3),
                    }
                )
                print(
                    f"[{n}/{len(questions)}] {time.perf_counter() - t:.1f}s {q.id} {answer.declined_by} "
                    f"{len(lps or [])} {json.dumps(checks)} {time.perf_counter() - t2:.2f}s",
                    flush=True,
                )
        finally:
            stages.judge = recording
    assistant.store.close()
    out.write_text(json.dumps(rows, indent=1) + "\n")


def with_draft_features(row: dict) -> dict:
    """The row's decision inputs, with the after-draft ones added (None when there was no greedy draft)."""
    if row["features"] is None:
        return row
    lps = row["logprobs"] or []
    extra = {
        "mean_logprob": sum(lps) / len(lps) if lps else -10.0,
        "min_logprob": max(min(lps), -10.0) if lps else -10.0,
    }
    # no draft to check (the model declined): as sure of "no" as the log-odds go
    extra.update({name: decide.judge_logit(p) for name, p in (row.get("self_checks") or {}).items()})
    for name in SELF_CHECKS:
        extra.setdefault(name, -10.0)
    return {**row, "features": {**row["features"], **extra}}


def report(paths: list[Path], max_false: float, fit_on: tuple[str, ...] = ("calibration",)) -> dict:
    rows = [with_draft_features(r) for path in paths for r in json.loads(path.read_text())]
    cal = [r for r in rows if r["split"] in fit_on]
    test = [r for r in rows if r["split"] == "test"]
    results = {}
    judged = [r for r in cal if r["features"] is not None]
    for label, names in SETS.items():
        prob = _fitted(judged, names)
        # leave-one-out on the fitting set: what it can tell about the set it will be used on
        held = [(_fitted(judged[:i] + judged[i + 1 :], names)(r), r["answerable"]) for i, r in enumerate(judged)]
        loo = decide.auroc([p for p, a in held if a], [p for p, a in held if not a])
        threshold, on_cal = choose_threshold(cal, prob, max_false)
        on_test = outcomes(test, lambda r, t=threshold, p=prob: p(r) >= t)
        t_judged = [r for r in test if r["features"] is not None]
        auc = decide.auroc(
            [prob(r) for r in t_judged if r["answerable"]], [prob(r) for r in t_judged if not r["answerable"]]
        )
        results[label] = {
            "weights": prob.weights,
            "threshold": round(threshold, 4),
            "calibration": on_cal,
            "test": on_test,
            "test_auroc": round(auc, 4) if auc is not None else None,
            "fit_loo_auroc": round(loo, 4) if loo is not None else None,
        }
        print(
            f"{label:32s} cal {on_cal['correct_declines']:.3f} / {on_cal['false_declines']:.3f}   "
            f"test {on_test['correct_declines']:.3f} / {on_test['false_declines']:.3f}   test AUROC {auc:.3f}   "
            f"leave-one-out AUROC on the fitting set {loo:.3f}"
        )
    return results


def _fitted(rows: list[dict], names: tuple[str, ...]):
    """P(answerable) of a logistic model of `names` fitted on `rows` (qa.decide.fit_logistic)."""
    weights, bias = decide.fit_logistic(
        [[r["features"][n] for n in names] for r in rows], [r["answerable"] for r in rows]
    )

    def prob(r: dict) -> float:
        return 1 / (1 + math.exp(-(bias + sum(w * r["features"][n] for w, n in zip(weights, names, strict=True)))))

    prob.weights = dict(zip(names, (round(w, 4) for w in weights), strict=True))
    return prob


def main(argv: list[str] | None = None) -> None:
    from qa.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, help="record features live into this file")
    parser.add_argument("--fit", type=Path, nargs="+", help="fit and report from recorded features")
    parser.add_argument("--splits", default="calibration,test", help="with --record: calibration, test, more")
    parser.add_argument("--fit-on", default="calibration", help="with --fit: the splits to fit on")
    parser.add_argument("--bench", type=Path, default=BENCH)
    parser.add_argument("--work", type=Path, default=Path("/tmp/draft-signal"))
    parser.add_argument("--max-false-declines", type=float, default=0.15)
    parser.add_argument("--json", type=Path, help="with --fit: write the results here")
    args = parser.parse_args(argv)
    if args.record:
        settings = load_settings({"vectorstore": str(args.work / "index"), "corpus": str(args.work / "corpus")})
        record(settings, args.bench, args.record, args.splits.split(","))
    if args.fit:
        results = report(args.fit, args.max_false_declines, tuple(args.fit_on.split(",")))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
