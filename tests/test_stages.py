"""Each decline names the stage that made it (gate -> judge -> draft -> verify), and the judge is a declared
capability: a generator without one answers without it. Fakes only (tests/fakes.py): seconds."""

from __future__ import annotations

from qa.breakdown import stage
from tests.fakes import ScriptedChat, ScriptedGenerator
from tests.test_decisions import KINDS, KINDS_REPLY, OFF_TOPIC, ask, index  # noqa: F401 (fixtures)


def test_every_decline_names_its_stage_and_an_answer_names_none(ask):  # noqa: F811
    assert ask(ScriptedGenerator(yes=1.0), OFF_TOPIC).declined_by == "relevance"
    assert ask(ScriptedGenerator(yes=0.1), KINDS).declined_by == "judge"
    assert ask(ScriptedGenerator(yes=0.9).enqueue("The documents don't say."), KINDS).declined_by == "model"
    fabricated = "The orchard was founded by Napoleon Bonaparte in 1802 [1]."
    assert ask(ScriptedGenerator(yes=0.9).enqueue(fabricated), KINDS).declined_by == "checks"
    answered = ask(ScriptedGenerator(yes=0.9).enqueue(KINDS_REPLY), KINDS)
    assert not answered.abstained and answered.declined_by is None
    assert answered.to_dict()["declined_by"] is None and answered.judge == 0.9


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
