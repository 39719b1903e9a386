"""Choose between prompt variants on held-apart data (ClapNQ dev), never on the seeds questions we report.

Each question gets its own gold passage (answerable) or related-but-unanswering passage (unanswerable), so
this measures the answer step alone: does the model answer what it can and decline what it cannot, after
the citation checks. Usage: python eval/calibrate_prompt.py [N per half] > eval/out/calibrate_prompt.txt
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from qa.answer import build_messages, check_answer
from qa.api import Assistant
from qa.chunking import chunk_document
from qa.documents import Document
from qa.evaluate import token_f1
from qa.retrieve import Passage

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "clapnq"


def sample(name: str, n: int, seed: int = 7) -> list[dict]:
    rows = [json.loads(line) for line in (BENCH / name).read_text().splitlines() if line.strip()]
    return random.Random(seed).sample(rows, n)


def passages_for(row: dict) -> list[Passage]:
    p = row["passages"][0]
    doc = Document("passage.txt", p["text"], p["title"], [1], [(0, len(p["text"]), None)])
    return [Passage(c, 1.0, dense=1.0) for c in chunk_document(doc, 600, 100)][:4]


def main(n: int) -> None:
    gen = Assistant().generator
    rows = [(r, True) for r in sample("clapnq_dev_answerable.jsonl", n)]
    rows += [(r, False) for r in sample("clapnq_dev_unanswerable.jsonl", n)]
    for variant in (True, False):
        declined_ans = declined_unans = 0
        f1 = 0.0
        for row, answerable in rows:
            passages = passages_for(row)
            raw = gen.generate(build_messages(row["input"], passages, decline_rule=variant), 200)
            answer = check_answer(row["input"], raw, passages)
            if answerable:
                declined_ans += answer.abstained
                gold = [o["answer"] for o in row["output"] if o.get("answer")]
                f1 += token_f1(answer.text, gold) if not answer.abstained else 0.0
            else:
                declined_unans += answer.abstained
        print(
            f"decline rule in prompt={variant}: correct declines {declined_unans}/{n}, "
            f"false declines {declined_ans}/{n}, token F1 (answerable) {f1 / n:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
