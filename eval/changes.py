"""The README's table of measured changes, one row per change, read from the saved eval results.

    python eval/changes.py            # prints the Markdown table

Each row names the result files it was read from (`eval/results/`), so every figure in the table can be traced
to the answers behind it, and a row is never typed by hand. The narrative of each change (why, what else was
tried) is in eval/HISTORY.md.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# (session and machine, change, shipped?, seeds before, seeds after, ClapNQ before, ClapNQ after; None: not run).
# Before is the code the change was made on, run in the same session on the same machine.
# one change per three lines reads as a table
# fmt: off
CHANGES = [
    ("6, AMD", "sentence windows in a token budget (`qa/context.py`), the checks of issue 14, the decline decision "
     "fitted on held-apart ClapNQ ids", True,
     "seeds-s6-before", "seeds-s6-final", "clapnq-40-s6-before", "clapnq-40-s6-final"),
    ("7, AMD", "a retrieval-rank prior for the windows, decision refitted", False,
     "seeds-s7-before", "seeds-s7-rankprior-refit", "clapnq-40-s7-before", "clapnq-40-s7-rankprior-refit"),
    ("8, AMD", "llama.cpp flash attention", False,
     "seeds-s8-before", "seeds-s8-flash", "clapnq-100-s8-before", "clapnq-100-s8-flash"),
    ("8, AMD", "a system prompt without \"in one to three short sentences\"", False,
     "seeds-s8-before", "seeds-s8-shorter-system", "clapnq-100-s8-before", "clapnq-100-s8-shorter-system"),
    ("10, AMD", "the draft's prompt read in the judge's batch, sentence vectors alone, titles in whole words", True,
     "seeds-s9", "seeds-s10-title", "clapnq-100-s9", "clapnq-100-s10-title"),
    ("11, AMD", "the context stage compares word roots and skips titles; the decision refitted", True,
     "seeds-s10-title", "seeds-s11-refit", "clapnq-100-s10-title", "clapnq-100-s11-refit"),
    ("11, AMD", "a retrieval-rank prior of 0.7", False,
     "seeds-s10-title", "seeds-s11-rankprior", "clapnq-100-s10-title", "clapnq-100-s11-rankprior"),
    ("12, AMD", "the decline decision fitted on 180 held-apart ClapNQ questions", True,
     "seeds-s11-refit", "seeds-s12-fit180", "clapnq-100-s11-refit", "clapnq-100-s12-fit180"),
    ("13, AMD", "drafts may not open with a source marker; RRF k = 30", True,
     "seeds-s12-fit180", "seeds-s13-k30", "clapnq-100-s12-fit180", "clapnq-100-s13-k30"),
    ("14, Intel", "an echoed source number is no claim; a name under another office is no support", True,
     "seeds-s14-before", "seeds-s14-after", "clapnq-100-s14-before", "clapnq-100-s14-after"),
    ("14, Intel", "a decoder that reads a leading digit ahead (the 0.5B model lost: eval/HISTORY.md)", False,
     "seeds-s14-before", "seeds-s14-lookahead", "clapnq-100-s14-before", "clapnq-100-s14-lookahead"),
    ("15, Intel", "the shorter system prompt of session 8, again (ClapNQ not run: the seeds ruled it out)", False,
     "seeds-s15-before", "seeds-s15-shorter-system", None, None),
    ("15, Intel", "no \"Sources:\" line before the passages", False,
     "seeds-s15-before", "seeds-s15-no-sources-line", "clapnq-100-s15-before", "clapnq-100-s15-no-sources-line"),
    ("16, Intel", "the title read once: not in the header of a window that opens with it, nor as a neighbour", True,
     "seeds-s16-before", "seeds-s16-title-once", "clapnq-100-s16-before", "clapnq-100-s16-title-once"),
    ("17, Intel", "a count's outcome is part of the fact: a number the passage counts as dead is not given as "
     "injured (ClapNQ before: session 16's run of the same drafts)", True,
     "seeds-s17-before", "seeds-s17-outcome", "clapnq-100-s16-title-once", "clapnq-100-s17-outcome"),
    ("18, Intel", "a name is not given an office its passage never names; \"more than whom?\" asks for no name; a "
     "count taken from a sentence about something else than was asked is declined", True,
     "seeds-s18-before", "seeds-s18-checks", "clapnq-100-s18-before", "clapnq-100-s18-checks"),
    ("18, Intel", "sentence windows up to 300 tokens (ClapNQ not run: the answer took 1.25x as long)", False,
     "seeds-s18-before", "seeds-s18-ctx300", None, None),
    ("18, Intel", "sentence windows up to 240 tokens (seeds run with the office rule alone)", False,
     "seeds-s18-before", "seeds-s18-ctx240", "clapnq-100-s18-before", "clapnq-100-s18-ctx240"),
    ("18, Intel", "sentence windows up to 240 tokens, the decision refitted at 240", False,
     "seeds-s18-before", "seeds-s18-ctx240-refit", "clapnq-100-s18-before", "clapnq-100-s18-ctx240-refit"),
    ("19, Intel", "a sentence does not end at \"Reps.\", \"et al.\", \"Fig.\" or \"No. 16\"; an attribution with "
     "nothing attributed (\"According to AP [1].\") is not shown (scored as since session 19: hyphens as spaces)", True,
     "seeds-s19-before", "seeds-s19-sentences", "clapnq-100-s19-before", "clapnq-100-s19-sentences"),
    ("19, Intel", "two neighbouring sentences a side (`context_window` 2; ClapNQ not run: the seeds lost 8 answers)",
     False, "seeds-s19-sentences", "seeds-s19-window2", None, None),
    ("20, Intel", "\"On what date / in what year?\" is answered by a number or a month only; a negation the answer "
     "adds must stand in the sentence it quotes", True,
     "seeds-s20-before", "seeds-s20-checks", "clapnq-100-s20-before", "clapnq-100-s20-checks"),
    ("20, Intel", "a sentence pointing back (\"This was announced ...\") at one the checks removed goes with it",
     True, "seeds-s20-checks", "seeds-s20-final", "clapnq-100-s20-checks", "clapnq-100-s20-final"),
    ("21, Intel", "a title too long for the header is no candidate sentence either (before: session 20's run of "
     "the same code)", True, "seeds-s20-final", "seeds-s21-title", "clapnq-100-s20-final", "clapnq-100-s21-title"),
    ("21, Intel", "a second draft from the best window alone when the checks decline the first (`redraft`; off: "
     "3 more right and 8 more wrong answers on ClapNQ and the held-out and dev sets)", False,
     "seeds-s21-title", "seeds-s21-redraft", "clapnq-100-s21-title", "clapnq-100-s21-redraft"),
    ("21, Intel", "the decline decision refitted with the second draft on", False,
     "seeds-s21-redraft", "seeds-s21-refit", "clapnq-100-s21-redraft", "clapnq-100-s21-refit"),
]
# fmt: on


def _load(name: str) -> tuple[dict, float | None]:
    data = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    drafts = [
        i["usage"]["draft"]["prompt_tokens"]
        for i in data["items"]
        if isinstance(i.get("usage"), dict) and i["usage"].get("draft")
    ]
    return data["summary"], (statistics.median(drafts) if drafts else None)


def _pair(before: float | None, after: float | None, digits: int = 3) -> str:
    """Before → after, or one figure when the change left it as it was; `digits` 0 for token counts."""

    def show(v: float | None) -> str:
        return "–" if v is None else f"{v:g}" if digits == 0 else f"{v:.{digits}f}"

    return show(before) if before == after else f"{show(before)} → {show(after)}"


def table() -> str:
    head = (
        "| session, CPU | change | shipped | seeds accuracy / selective | seeds answered wrong | seeds correct / "
        "false declines | seeds answer in what is read | ClapNQ correct / false declines | draft prompt tokens "
        "(seeds, median) | first token (seeds, median s) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for session, change, shipped, sb, sa, cb, ca in CHANGES:
        (b, tb), (a, ta) = _load(sb), _load(sa)
        clapnq = "–"
        if cb and ca:
            (qb, _), (qa, _) = _load(cb), _load(ca)
            clapnq = (
                f"{_pair(qb['correct_declines'], qa['correct_declines'], 2)} / "
                f"{_pair(qb['false_declines'], qa['false_declines'], 2)} "
                f"({'20+20' if cb.startswith('clapnq-40') else '50+50'})"
            )
        cells = [
            session,
            f"{change} (`{sa}.json`)",
            "yes" if shipped else "no",
            f"{_pair(b['answer_accuracy'], a['answer_accuracy'])} / "
            f"{_pair(b.get('selective_accuracy'), a.get('selective_accuracy'))}",
            _pair(b.get("answered_wrong"), a.get("answered_wrong")),
            f"{_pair(b['correct_declines'], a['correct_declines'])} / "
            f"{_pair(b['false_declines'], a['false_declines'])}",
            _pair(b.get("answer_in_passages"), a.get("answer_in_passages")),
            clapnq,
            _pair(tb, ta, 0),
            _pair(b["first_token_median_s"], a["first_token_median_s"], 2),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
