"""Does the draft's own confidence help the decline decision? A measurement, not a product feature.

    python eval/draft_signal.py --record OUT.json      # live: ClapNQ calibration ids + the 50+50 test questions
    python eval/draft_signal.py --fit OUT.json         # offline: fit on calibration, report on the test questions

The decline decision (qa/decide.py) reads three signals that exist before the draft: the judge's log-odds, the
best dense cosine and the IDF-weighted question overlap. Its limit on ClapNQ is the judge's AUROC (issue 14). This
asks whether signals that exist only after a draft add to it: the mean and the lowest log-probability of the
draft's greedy tokens (a model copying an answer out of the passages is sure of each token; one stitching a
neighbouring fact together may not be).

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

from fit_decline import BENCH, choose_threshold, judge_recorded, outcomes  # noqa: E402

from qa import decide  # noqa: E402
from qa.decide import FEATURES  # noqa: E402

SETS = {
    "judge alone": ("judge_logit",),
    "judge + dense": ("judge_logit", "best_dense"),
    "before the draft (shipped)": FEATURES,
    "+ mean log-prob": (*FEATURES, "mean_logprob"),
    "+ lowest log-prob": (*FEATURES, "min_logprob"),
    "+ both log-probs": (*FEATURES, "mean_logprob", "min_logprob"),
}


def record(settings, bench: Path, out: Path, splits: list[str]) -> None:
    from qa.api import Assistant
    from qa.evaluate import clapnq_calibration_ids, clapnq_held_apart_ids, load_clapnq, write_beir_corpus

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
    assistant = Assistant(settings)
    assistant.generator.keep_logprobs = True
    corpus = Path(settings.corpus)
    write_beir_corpus({name.removesuffix(".txt"): tp for name, tp in passages.items()}, corpus)
    print(f"indexing: {assistant.ingest(corpus).summary()}", flush=True)
    rows = []
    with judge_recorded(assistant) as ask:
        for n, (q, split) in enumerate(questions, 1):
            assistant.generator.draft_logprobs = None
            t = time.perf_counter()
            answer, row = ask(q)
            lps = assistant.generator.draft_logprobs
            rows.append({**row, "split": split, "logprobs": lps, "answer": answer.text})
            print(f"[{n}/{len(questions)}] {time.perf_counter() - t:.1f}s {q.id} {answer.declined_by} {len(lps or [])}")
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
