"""Would a second draft help where the checks declined the first? Measured before qa.stages.redraft existed.

Each question is asked through the normal Assistant (the redraft setting off, so its answer is the one-draft
pipeline's); when the checks declined it, the model drafts again from the best window alone (v1) and from the
best two (v2), and each second draft is checked as the first was. One JSON line per question on stdout:
id, answerable, the stage that declined (`by`), and for a check decline v1 / v2 with the second draft, the shown
answer, whether it abstained, and for the seeds whether it holds a gold answer (`ok`; ClapNQ: token F1 `f1`).

Sets: `cal` (the 60 ClapNQ calibration ids, where the choice is made), `seeds`, or `rep ID,ID,...` (ClapNQ ids,
e.g. the report sample's check declines). Session 21's run: eval/results/redraft-trial-s21.jsonl.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python eval/redraft_trial.py cal|seeds|rep [IDS] > OUT.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import context_sweep as sweep  # noqa: E402

from qa import stages  # noqa: E402
from qa.evaluate import clapnq_calibration_ids, contains_answer, load_clapnq, load_questions, token_f1  # noqa: E402

WORK = Path("/tmp/qa-context-sweep")  # the sweep's indexes, reused


def main() -> None:
    which = sys.argv[1]
    if which == "seeds":
        assistant = sweep.assistant_for(WORK, "seeds", sweep.ROOT / "seeds")
        questions = load_questions(sweep.ROOT / "eval" / "questions.jsonl")
    else:
        assistant = sweep.assistant_for(WORK, "clapnq", WORK / "clapnq-corpus")
        _, every = load_clapnq(sweep.CLAPNQ)
        if which == "cal":
            chosen = clapnq_calibration_ids()
            questions = [q for q in every if q.id.removeprefix("clapnq-") in chosen]
        else:
            ids = set(sys.argv[2].split(","))
            questions = [q for q in every if q.id in ids]
    assistant.settings = assistant.settings.replace(redraft=False)
    generator = assistant.generator
    for q in questions:
        answer = assistant.ask(q.question)
        row = {
            "id": q.id,
            "answerable": q.answerable,
            "by": answer.declined_by,
            "answer": answer.text,
            "ok": q.answerable and not answer.abstained and contains_answer(answer.text, q.answers),
        }
        if answer.declined_by == "checks":
            for n in (1, 2):
                best = answer.retrieved[:n]
                t = time.perf_counter()
                raw = "".join(stages.draft(generator, q.question, best, assistant.settings.llm_max_tokens))
                second = stages.verify(q.question, raw, best)
                row[f"v{n}"] = {
                    "raw": raw,
                    "answer": second.text,
                    "abstained": second.abstained,
                    "s": round(time.perf_counter() - t, 2),
                    "ok": q.answerable and not second.abstained and contains_answer(second.text, q.answers),
                    "f1": token_f1(second.text, q.answers) if q.answerable and not second.abstained else 0.0,
                }
        print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
