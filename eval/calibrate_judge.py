"""Calibrate the yes/no judge threshold on held-apart data (ClapNQ dev), never on the seeds questions.

For each sampled question: its own passage (gold for answerable, related-but-unanswering for unanswerable),
the judge's P(yes) (asked before answering, as the product does), then the answer step (draft, checks).
Prints, for candidate thresholds, the correct-decline and false-decline rates of the whole answer step.
Usage: python eval/calibrate_judge.py [N per half] > eval/results/calibrate_judge_clapnq.txt
"""

from __future__ import annotations

import json
import sys

from calibrate_prompt import passages_for, sample  # beside this file: Python puts a script's folder on the path

from qa import stages
from qa.api import Assistant


def main(n: int) -> None:
    gen = Assistant().generator
    rows = [(r, True) for r in sample("clapnq_dev_answerable.jsonl", n, seed=11)]
    rows += [(r, False) for r in sample("clapnq_dev_unanswerable.jsonl", n, seed=11)]
    results = []
    for row, answerable in rows:
        passages = passages_for(row)
        # the product's own stages; a threshold of 1 keeps the judge's P(yes) whatever it is
        p = stages.judge(gen, row["input"], passages, threshold=1.0).score
        raw = "".join(stages.draft(gen, row["input"], passages, 200))
        answer = stages.verify(row["input"], raw, passages)
        results.append({"answerable": answerable, "checked_declined": answer.abstained, "p_yes": p})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    n_ans = sum(r["answerable"] for r in results)
    n_un = len(results) - n_ans
    for t in (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
        declined = [r["checked_declined"] or r["p_yes"] < t for r in results]
        false = sum(d for d, r in zip(declined, results, strict=True) if r["answerable"]) / n_ans
        correct = sum(d for d, r in zip(declined, results, strict=True) if not r["answerable"]) / n_un
        print(f"threshold {t:.2f}: correct declines {correct:.2f}, false declines {false:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
