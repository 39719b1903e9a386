"""Re-run the answer checks (qa.stages.verify) on saved eval items, without the language model.

    python eval/recheck.py RESULTS.json [RESULTS.json ...] [--old-from DIR]

Each saved item holds the model's unchecked reply (`draft`), the question, the retrieved passages and what was
expected, so a change to the checks can be measured in seconds: the draft is checked again and the outcome
compared with the old one. The old outcome is the saved answer, or, with --old-from DIR, what the qa package in
DIR (e.g. `git archive HEAD | tar -x -C DIR`) makes of the same drafts, so only the checks' change shows.

Items the model never drafted for (declined by relevance or the judge: empty draft) keep their saved outcome.
Printed per file, old -> new: correct (answerable, answered, an expected answer in the text), answered but wrong
(answerable without an expected answer, or unanswerable and answered), false declines, correct declines, token F1
over answerable questions, and the questions whose outcome changed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _passages(item: dict):
    from qa.types import Chunk, Passage

    out = []
    for i, p in enumerate(item["retrieved"]):
        text = p["text"]
        chunk = Chunk(
            f"{p['source']}#{i}",
            text,
            p["source"],
            0,
            len(text),
            p["start_line"],
            p["end_line"],
            p.get("page"),
            p.get("title", ""),
            "",
        )
        out.append(Passage(chunk, p.get("score", 0.0), dense=p.get("dense")))
    return out


def outcomes(path: Path) -> list[dict]:
    """Each item's checked answer now: {"id", "abstained", "answer"}."""
    from qa.stages import verify

    items = json.loads(path.read_text(encoding="utf-8"))["items"]
    result = []
    for item in items:
        draft = item.get("draft") or ""
        if not draft.strip():
            result.append({"id": item["id"], "abstained": item["abstained"], "answer": item["answer"]})
            continue
        answer = verify(item["question"], draft, _passages(item))
        result.append({"id": item["id"], "abstained": answer.abstained, "answer": answer.text})
    return result


def _kind(item: dict, outcome: dict) -> str:
    from qa.evaluate import contains_answer

    expected = item["expected"]
    if not expected["answerable"]:
        return "correct decline" if outcome["abstained"] else "answered but wrong"
    if outcome["abstained"]:
        return "false decline"
    return "correct" if contains_answer(outcome["answer"], expected["answers"]) else "answered but wrong"


def _f1(item: dict, outcome: dict) -> float:
    from qa.evaluate import token_f1

    if not item["expected"]["answerable"] or outcome["abstained"]:
        return 0.0
    return token_f1(outcome["answer"], item["expected"]["answers"])


KINDS = ("correct", "answered but wrong", "false decline", "correct decline")


def report(path: Path, old: list[dict], new: list[dict], out=sys.stdout) -> None:
    items = json.loads(path.read_text(encoding="utf-8"))["items"]
    answerable = sum(i["expected"]["answerable"] for i in items)
    print(f"{path} ({len(items)} questions, {answerable} answerable)", file=out)
    counts = {
        side: {k: sum(_kind(i, o) == k for i, o in zip(items, outs, strict=True)) for k in KINDS}
        for side, outs in (("old", old), ("new", new))
    }
    for k in KINDS:
        print(f"  {k:<20} {counts['old'][k]:>4} -> {counts['new'][k]:<4}", file=out)
    f1 = {
        side: sum(_f1(i, o) for i, o in zip(items, outs, strict=True)) / max(1, answerable)
        for side, outs in (("old", old), ("new", new))
    }
    print(f"  {'token F1':<20} {f1['old']:.4f} -> {f1['new']:.4f}", file=out)
    changed = [(i, a, b) for i, a, b in zip(items, old, new, strict=True) if _kind(i, a) != _kind(i, b)]
    texts = sum(a["answer"] != b["answer"] for a, b in zip(old, new, strict=True))
    print(f"  changed outcome: {len(changed)}; changed text: {texts}", file=out)
    for item, a, b in changed:
        print(f"  - {item['id']}: {_kind(item, a)} -> {_kind(item, b)}: {item['question']}", file=out)
        print(f"      old: {a['answer'][:160]}", file=out)
        print(f"      new: {b['answer'][:160]}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="saved eval JSON ({summary, items} with drafts)")
    parser.add_argument("--old-from", type=Path, help="a qa source tree whose checks give the old outcome")
    parser.add_argument("--dump", action="store_true", help=argparse.SUPPRESS)  # outcomes as JSON (for --old-from)
    args = parser.parse_args(argv)
    for path in args.results:
        if not path.is_file():
            print(f"recheck: {path}: no such file", file=sys.stderr)
            return 2
        try:
            items = json.loads(path.read_text(encoding="utf-8"))["items"]
        except (ValueError, KeyError) as exc:
            print(f"recheck: {path}: not a saved eval ({exc})", file=sys.stderr)
            return 2
        if args.dump:
            json.dump(outcomes(path), sys.stdout)
            continue
        if args.old_from:
            env = {**os.environ, "PYTHONPATH": str(args.old_from.resolve())}
            done = subprocess.run(
                [sys.executable, __file__, "--dump", str(path)], env=env, capture_output=True, text=True, check=True
            )
            old = json.loads(done.stdout)
        else:
            old = [{"id": i["id"], "abstained": i["abstained"], "answer": i["answer"]} for i in items]
        report(path, old, outcomes(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
