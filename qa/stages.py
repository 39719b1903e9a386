"""The answer stages, in the order they run: gate -> judge -> draft -> verify (-> redraft).

Each is a small function of its inputs with one output, so the product (`Assistant.stream`), the evaluation
breakdown and the calibration scripts run the same code. A decline names the stage that made it
(`Answer.declined_by`):

- `relevance`: no passage is close enough to the question (best dense cosine below `min_relevance`); the model
  never ran;
- `judge`: the passages do not state the answer, as decided from the model's P(yes), the best dense cosine and
  the question's word overlap by the model's fitted decision (qa.decide), or by P(yes) below an explicit
  `judge_threshold`;
- `model`: the model's own draft says the documents don't say;
- `checks`: the draft said something, but no sentence of it is supported by the passage it cites (nor of a
  second draft from the best window alone, when the `redraft` setting is on and the model read several windows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from qa.answer import Answer, check_answer, declined
from qa.decide import Decision, Features, TermCounts, best_dense, features
from qa.generators.base import Generator, can_judge
from qa.prompts import JUDGE_INSTRUCTION, build_messages
from qa.types import Passage

DECLINED_BY = ("relevance", "judge", "model", "checks")


@dataclass(frozen=True)
class Verdict:
    """What a deciding stage concluded, and the number it looked at (for the judge: the model's P(yes)).
    `features` are the judge stage's inputs to its decision (qa.decide), for calibration and diagnosis."""

    passed: bool
    score: float | None = None
    features: Features | None = None
    probability: float | None = None  # the decision's P(answer) (for a judge-only decision: P(yes) itself)


def gate(passages: list[Passage], min_relevance: float) -> Verdict:
    """Is any passage about the question at all? Cheap, and keeps off-topic questions away from the model."""
    best = best_dense(passages)
    return Verdict(best >= min_relevance, best)


def judge(
    generator: Generator,
    question: str,
    passages: list[Passage],
    decision: Decision | float,
    counts: TermCounts | None = None,
) -> Verdict:
    """Do the passages state the answer? The model's P(yes) combined with the best dense cosine and the
    question's IDF-weighted word overlap by `decision` (qa.decide: fitted per model; a number is the judge alone
    at that threshold). `counts` gives the index's document frequencies for the overlap. Skipped (passes) for
    a generator that cannot judge or a judge that is off.

    The judge's prompt is the answer's prompt with a yes/no instruction last, so llama.cpp evaluates the passages
    once for both (its KV cache keeps the shared prefix), and the draft's own ending in the same batch.
    """
    if not isinstance(decision, Decision):
        decision = Decision.judge_only(decision)
    if decision.off or not can_judge(generator):
        return Verdict(True, None)
    # the draft's prompt goes along: a back end may read both in one pass (llama.cpp does)
    p_yes = generator.yes_probability(
        build_messages(question, passages, instruction=JUDGE_INSTRUCTION), then=build_messages(question, passages)
    )
    # the overlap's IDF costs a keyword-table count per question word: only a fitted decision reads it
    found = features(question, passages, p_yes, counts if decision.kind == "fitted" else None)
    return Verdict(decision.answers(found), p_yes, found, decision.probability(found))


def draft(generator: Generator, question: str, passages: list[Passage], max_tokens: int) -> Iterator[str]:
    """The model's answer as it writes it: unchecked text with [n] markers."""
    return generator.stream(build_messages(question, passages), max_tokens)


def verify(question: str, raw: str, passages: list[Passage]) -> Answer:
    """Keep only what the passages support, with verbatim quotes; see qa.answer.check_answer."""
    return check_answer(question, raw, passages)


def redraft(generator: Generator, question: str, passages: list[Passage], first: Answer, max_tokens: int) -> Answer:
    """A second draft from the best window alone, when the checks removed every sentence of the first.

    The 1.5B model, reading several windows, often joins a name from one with a place or a date from another
    ("Barbara Leaf met Kobler at the State Department on Monday morning", where the passage that matched best
    names William Burns); the checks decline that. Alone with the window that matched the question best, it
    often writes what that window says. The second draft is checked as the first was, and shown only if
    something of it stands; its citations number the windows as the first draft's did ([1] is the best window),
    and `retrieved` stays every window read. Once only: a decline stays a decline after that.

    Off by default (Settings.redraft). On the ClapNQ calibration ids and the seeds (eval/HISTORY.md, session 21)
    it answered 3 of the 8 answerable questions the checks declined and none of the 12 unanswerable ones; but on
    the ClapNQ report sample, the held-out and dev sets it answered 3 more right and 8 more wrong: alone with one
    window, the 1.5B model writes what that window says whether or not it answers the question."""
    if first.declined_by != "checks" or len(passages) < 2:
        return first  # nothing declined, or the same window again
    best = passages[:1]
    raw = "".join(generator.stream(build_messages(question, best), max_tokens))
    second = check_answer(first.question, raw, best)
    if second.abstained:
        first.redraft = raw
        return first
    second.retrieved = passages
    second.raw = first.raw
    second.redraft = raw
    return second


def decline(question: str, passages: list[Passage], by: str) -> Answer:
    """An explicit "The documents don't say.", showing the closest passages."""
    return declined(Answer(question=question, text="", abstained=True, retrieved=passages), by)
