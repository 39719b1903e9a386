"""Where answers and declines come from, in a `qa eval` / `qa eval-clapnq` result file.

    python -m qa.breakdown eval/results/clapnq-full.json [--threshold 0.6]

For each half (answerable, unanswerable) it counts the questions answered and the declines by the stage that
made them: the relevance gate (no passage close enough; the model never ran), the judge (the model's P(yes)
that the passages state the answer was below the threshold) and the citation checks (a draft was written but
no sentence of it was supported by the passage it cited). It also shows how well the judge's P(yes) separates
the two halves (AUROC), which says whether a different threshold could help at all. It reads the result file
only: it does not choose a threshold (that is done on held-apart questions, eval/calibrate_judge.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def stage(item: dict, threshold: float) -> str:
    if not item["abstained"]:
        return "answered"
    named = item.get("declined_by")  # every answer object names its stage (qa.stages); older files did not
    if named:
        return {"relevance": "declined by the gate", "judge": "declined by the judge"}.get(
            named,
            "declined by the checks",  # "model" (the draft itself declined) and "checks"
        )
    if "generate" in item["timings"]:
        return "declined by the checks"
    if item.get("judge") is not None and item["judge"] < threshold:
        return "declined by the judge"
    return "declined by the gate"


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a random answerable question's P(yes) > a random unanswerable one's), ties count half."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def breakdown(items: list[dict], threshold: float) -> dict:
    out: dict[str, Any] = {}
    for half, answerable in (("answerable", True), ("unanswerable", False)):
        group = [i for i in items if i["expected"]["answerable"] == answerable]
        counts = {s: 0 for s in ("answered", "declined by the gate", "declined by the judge", "declined by the checks")}
        for i in group:
            counts[stage(i, threshold)] += 1
        judged = [i["judge"] for i in group if i.get("judge") is not None]
        out[half] = {
            "questions": len(group),
            **counts,
            "judge_p_yes_median": round(statistics.median(judged), 3) if judged else None,
        }
    yes = [i["judge"] for i in items if i["expected"]["answerable"] and i.get("judge") is not None]
    no = [i["judge"] for i in items if not i["expected"]["answerable"] and i.get("judge") is not None]
    score = auroc(yes, no)
    out["judge_auroc"] = None if score is None else round(score, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qa.breakdown", description=__doc__.split("\n\n")[0])
    ap.add_argument("result", type=Path, help="a JSON file written by qa eval --json or qa eval-clapnq --json")
    ap.add_argument("--threshold", type=float, default=0.6, help="the judge threshold the run used (default 0.6)")
    args = ap.parse_args(argv)
    try:
        items = json.loads(args.result.read_text())["items"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.result}: not a qa eval result file ({exc})", file=sys.stderr)
        return 2
    result = breakdown(items, args.threshold)
    for half in ("answerable", "unanswerable"):
        print(f"{half}: " + ", ".join(f"{k} {v}" for k, v in result[half].items()))
    print(f"judge AUROC (answerable vs unanswerable): {result['judge_auroc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
