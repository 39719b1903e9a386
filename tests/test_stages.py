"""Each decline names the stage that made it (gate -> judge -> draft -> verify), and the judge is a declared
capability: a generator without one answers without it. Fakes only (tests/fakes.py): seconds."""

from __future__ import annotations

from qa.breakdown import stage
from tests.fakes import ScriptedChat, ScriptedGenerator
from tests.test_decisions import KINDS, KINDS_REPLY, OFF_TOPIC, ask, index, make_assistant  # noqa: F401 (fixtures)


def test_every_decline_names_its_stage_and_an_answer_names_none(ask):  # noqa: F811
    assert ask(ScriptedGenerator(yes=1.0), OFF_TOPIC).declined_by == "relevance"
    assert ask(ScriptedGenerator(yes=0.1), KINDS).declined_by == "judge"
    assert ask(ScriptedGenerator(yes=0.9).enqueue("The documents don't say."), KINDS).declined_by == "model"
    fabricated = "The orchard was founded by Napoleon Bonaparte in 1802 [1]."
    assert ask(ScriptedGenerator(yes=0.9).enqueue(fabricated), KINDS).declined_by == "checks"
    answered = ask(ScriptedGenerator(yes=0.9).enqueue(KINDS_REPLY), KINDS)
    assert not answered.abstained and answered.declined_by is None
    assert answered.to_dict()["declined_by"] is None and answered.judge == 0.9


def test_with_redraft_on_a_draft_the_checks_decline_is_written_again_from_the_best_window(ask, index):  # noqa: F811
    # The first draft states what no window says; the checks remove it. With `redraft` on, the model is asked once
    # more with only the window that matched the question best, and that draft, checked the same way, is the
    # answer. Off by default (it answered more questions wrong than right outside the seeds, session 21).
    fabricated = "The orchard was founded by Napoleon Bonaparte in 1802 [1]."

    def ask_redraft(model):
        assistant = make_assistant(index.replace(redraft=True), model)
        try:
            return assistant.ask(KINDS)
        finally:
            assistant.store.close()

    model = ScriptedGenerator(yes=0.9).enqueue(fabricated, KINDS_REPLY)
    answer = ask_redraft(model)
    assert not answer.abstained and answer.declined_by is None and "forty kinds of apples" in answer.text
    first, second = model.prompt_text(0), model.prompt_text(1)
    assert "Aletsch" in first or "lamp" in first, "the first draft read several windows"
    assert "forty kinds" in second and "Aletsch" not in second and "lamp" not in second and "\n[2] " not in second
    # [1] is the best window in both prompts, so the citation points at the first window the answer lists
    assert answer.citations[0].source == answer.retrieved[0].chunk.source == "orchard.txt"
    assert len(answer.retrieved) > 1, "retrieved stays every window the model read"
    shown = answer.to_dict()
    assert shown["redraft"] == KINDS_REPLY and answer.raw == fabricated and shown["timings"]["redraft"] > 0

    # a second draft the checks decline as well is a decline by the checks, and there is no third
    model = ScriptedGenerator(yes=0.9).enqueue(fabricated, fabricated)
    answer = ask_redraft(model)
    assert answer.abstained and answer.declined_by == "checks" and answer.redraft == fabricated
    assert len(model.prompts) == 2

    # off, the default: one draft, declined
    model = ScriptedGenerator(yes=0.9).enqueue(fabricated)
    answer = ask(model, KINDS)
    assert answer.declined_by == "checks" and answer.redraft == "" and len(model.prompts) == 1


def test_a_generator_that_cannot_judge_answers_without_the_judge(ask):  # noqa: F811
    answer = ask(ScriptedChat().enqueue(KINDS_REPLY), KINDS)
    assert not answer.abstained and answer.judge is None and "judge" not in answer.timings


def test_the_answer_object_reports_dense_cosines_and_the_models_token_counts(ask):  # noqa: F811
    class Counting(ScriptedGenerator):
        def stream(self, messages, max_tokens, temperature=0.0):
            self.last_usage = {"prompt_tokens": 321, "completion_tokens": 12}
            yield from super().stream(messages, max_tokens, temperature)

    data = ask(Counting(yes=0.9).enqueue(KINDS_REPLY), KINDS).to_dict()
    assert data["usage"]["draft"] == {"prompt_tokens": 321, "completion_tokens": 12}
    assert all(-1 <= r["dense"] <= 1 for r in data["retrieved"] if r["dense"] is not None)
    assert data["retrieved"][0]["dense"] is not None
    assert data["timings"]["evidence"] <= data["timings"]["total"]


def test_the_breakdown_reads_the_stage_from_the_answer_object():
    item = {"abstained": True, "timings": {"generate": 1.0}, "judge": 0.2, "declined_by": "judge"}
    assert stage(item, 0.6) == "declined by the judge"
    assert stage({**item, "declined_by": "model"}, 0.6) == "declined by the checks"
    assert stage({"abstained": False, "timings": {}}, 0.6) == "answered"
