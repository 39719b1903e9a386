"""How qa decides what to answer, as a user sees it, in seconds: the real Assistant (real embedded Chroma, SQLite,
loaders and citation checks) with the two models replaced by the fakes of tests/fakes.py.

What the scripted model replies is fixed here, so each test pins one decision: the relevance gate, the judge,
the checks on the draft, the source filter, the follow-up rewrite, streaming and the JSON contract. The same
decisions with the real models are tested in test_answer_local.py (`make test`).
"""

from __future__ import annotations

import json

import pytest

from qa.answer import DECLINE_TEXT, Answer, Evidence
from qa.errors import QuestionError
from tests.fakes import HashEmbedder, ScriptedChat, ScriptedGenerator, UnscriptedCall, split_pieces

DOCS = {
    "orchard.txt": (
        "Hillside Orchard\n"
        "\n"
        "The Hillside orchard grows forty kinds of apples on the slopes above Ledbury.\n"
        "Picking starts in the second week of September and lasts six weeks.\n"
        "Visitors may pick their own fruit on Saturdays.\n"
    ),
    "glaciers.md": (
        "# Glaciers of the Alps\n"
        "\n"
        "The Aletsch glacier is the largest glacier in the Alps, about 23 kilometres long.\n"
        "It has retreated by more than three kilometres since 1870.\n"
        "Meltwater from the glacier feeds the Massa river.\n"
    ),
    "lighthouse.txt": (
        "Lighthouse log\n"
        "\n"
        "The lighthouse keeper fed the seagulls every morning at dawn.\n"
        "The lamp was automated in 1990 and nobody lives there now.\n"
    ),
}
KINDS = "How many kinds of apples does the Hillside orchard grow?"
KINDS_REPLY = "The Hillside orchard grows forty kinds of apples [1]."
OFF_TOPIC = "What is the capital of France?"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """The three documents above, ingested once (with the hash embedder) for every test in this module."""
    from tests.conftest import fake_settings

    root = tmp_path_factory.mktemp("decisions")
    (root / "corpus").mkdir()
    for name, text in DOCS.items():
        (root / "corpus" / name).write_text(text, encoding="utf-8")
    settings = fake_settings(root)
    made = make_assistant(settings, ScriptedGenerator(yes=None))
    report = made.ingest()
    assert sorted(report.added) == sorted(DOCS) and not report.failed
    made.store.close()
    return settings


def make_assistant(settings, generator):
    from qa.api import Assistant

    return Assistant(settings, generator=generator, embedder=HashEmbedder())


@pytest.fixture
def ask(index):
    """ask(generator, question, **kwargs) -> Answer, through a fresh Assistant on the shared index."""
    opened = []

    def run(generator, question, **kwargs):
        assistant = make_assistant(index, generator)
        opened.append(assistant)
        return assistant.ask(question, **kwargs)

    yield run
    for assistant in opened:
        assistant.store.close()


def lines_of(source: str, start: int, end: int) -> str:
    return "\n".join(DOCS[source].splitlines()[start - 1 : end])


def assert_declined(answer: Answer) -> None:
    assert answer.abstained and answer.text == DECLINE_TEXT and answer.citations == []
    assert answer.retrieved, "a decline still shows the closest passages"


# ---- the relevance gate and the judge -------------------------------------------------------------------


def test_an_off_topic_question_is_declined_without_asking_the_model(ask):
    model = ScriptedGenerator(yes=None)  # nothing scripted: any call to the model fails the test
    answer = ask(model, OFF_TOPIC)
    assert_declined(answer)
    assert model.calls == []


@pytest.mark.parametrize("p_yes", [0.0, 0.59])
def test_a_judge_below_the_threshold_declines_and_no_draft_is_requested(ask, p_yes):
    model = ScriptedGenerator(yes=p_yes).enqueue(KINDS_REPLY)
    answer = ask(model, KINDS)  # judge_threshold is 0.6 by default
    assert_declined(answer)
    assert len(model.judged) == 1 and model.prompts == []
    assert list(model.replies) == [KINDS_REPLY], "the draft was never requested"
    judged = "\n".join(m["content"] for m in model.judged[0])
    assert KINDS in judged and "forty kinds of apples" in judged  # the judge saw the question and the sources


@pytest.mark.parametrize("p_yes", [0.6, 0.95])
def test_a_judge_at_or_above_the_threshold_answers_with_a_verbatim_cited_quote(ask, p_yes):
    model = ScriptedGenerator(yes=p_yes).enqueue(KINDS_REPLY)
    answer = ask(model, KINDS)
    assert not answer.abstained and model.kinds == ["judge", "stream"]
    assert answer.text == "The Hillside orchard grows forty kinds of apples [1]."
    [c] = answer.citations
    assert (c.n, c.source, c.start_line, c.end_line, c.page) == (1, "orchard.txt", 3, 3, None)
    assert c.quote == "The Hillside orchard grows forty kinds of apples on the slopes above Ledbury."
    assert c.quote in lines_of(c.source, c.start_line, c.end_line)
    assert 0 < c.score <= 1 and answer.unsupported == []
    assert "forty kinds of apples" in model.prompt_text(0) and KINDS in model.prompt_text(0)


def test_the_judge_off_or_a_model_without_one_goes_straight_to_the_draft(index, ask):
    from qa.api import Assistant

    off = ScriptedGenerator(yes=0.0).enqueue(KINDS_REPLY)
    assistant = Assistant(index.replace(judge_threshold=0), generator=off, embedder=HashEmbedder())
    try:
        answer = assistant.ask(KINDS)
    finally:
        assistant.store.close()
    assert not answer.abstained and off.judged == []
    endpoint = ScriptedChat().enqueue(KINDS_REPLY)  # like an OpenAI-compatible endpoint: no judge
    answer = ask(endpoint, KINDS)
    assert not answer.abstained and answer.citations[0].source == "orchard.txt" and endpoint.kinds == ["stream"]


# ---- the fitted decline decision (qa/decide.py) ------------------------------------------------------------

FITTED = "scripted-calibrated"  # a fake's name with its own entry in the calibration file below


def write_calibration(folder, entry) -> None:
    (folder / "decline_calibration.json").write_text(json.dumps({"models": [entry]}), encoding="utf-8")


def judge_fit(threshold_p_yes: float) -> dict:
    """An entry whose P(answer) is the judge's P(yes) alone (weight 1 on its log-odds): the operating point is
    `threshold_p_yes`, so what is declined shows which numbers were used."""
    return {
        "model": FITTED,
        "weights": {"judge_logit": 1.0, "best_dense": 0.0, "overlap": 0.0},
        "bias": 0.0,
        "threshold": threshold_p_yes,
    }


@pytest.fixture
def calibrated(index, tmp_path):
    """ask(generator, question, **settings) with a calibration file in the user's cache folder."""
    opened = []

    def run(generator, question, **changes):
        assistant = make_assistant(index.replace(cache_dir=tmp_path, **changes), generator)
        opened.append(assistant)
        return assistant, assistant.ask(question)

    yield run
    for assistant in opened:
        assistant.store.close()


def test_the_decision_on_made_up_signals_declines_below_its_fitted_point_and_answers_above():
    from qa.decide import Decision, Features, judge_logit

    # decline unless the judge leans yes AND the question's words are in a passage
    decision = Decision("fitted", 0.5, weights=(1.0, 0.0, 8.0), bias=-4.0)
    sure_and_covered = Features(judge_logit(0.7), best_dense=0.5, overlap=0.6)
    assert decision.probability(sure_and_covered) > 0.5 and decision.answers(sure_and_covered)
    sure_but_uncovered = Features(judge_logit(0.9), best_dense=0.5, overlap=0.1)
    assert decision.probability(sure_but_uncovered) < 0.5 and not decision.answers(sure_but_uncovered)
    doubtful_but_covered = Features(judge_logit(0.05), best_dense=0.5, overlap=0.6)
    assert not decision.answers(doubtful_but_covered)


def _fit_decline_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "eval" / "fit_decline.py"
    spec = importlib.util.spec_from_file_location("fit_decline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(answerable: bool, p_yes: float, overlap: float, checks_declined: bool = False) -> dict:
    from qa.decide import judge_logit

    features = {"judge_logit": judge_logit(p_yes), "best_dense": 0.6, "overlap": overlap}
    return {
        "answerable": answerable,
        "gate_passed": True,
        "p_yes": p_yes,
        "features": features,
        "downstream_declined": checks_declined,
        "declined_by": "checks" if checks_declined else None,
    }


def test_fitting_the_decline_decision_keeps_the_false_decline_bound_and_never_declines_everything_when_it_cannot():
    """eval/fit_decline.py chooses the most correct declines within --max-false-declines; when the checks alone
    decline more answerable questions than that, it must not fall back to declining almost everything."""
    fit_decline = _fit_decline_script()
    answerable = [_row(True, 0.55 + 0.04 * i, 0.5 + 0.04 * i) for i in range(10)]
    unanswerable = [_row(False, 0.2 + 0.04 * i, 0.1 + 0.04 * i) for i in range(10)]
    entry = fit_decline.fit(answerable + unanswerable, max_false=0.15)
    assert entry["calibration"]["max_false_reachable"]
    assert entry["calibration"]["fitted"] == {"correct_declines": 1.0, "false_declines": 0.0}

    # the checks decline 3 of 10 answerable questions whatever the judge says: 0.15 is out of reach
    checked = [_row(True, 0.55 + 0.04 * i, 0.5 + 0.04 * i, checks_declined=i < 3) for i in range(10)]
    overlapping = [_row(False, 0.5 + 0.04 * i, 0.45 + 0.04 * i) for i in range(10)]
    entry = fit_decline.fit(checked + overlapping, max_false=0.15)
    got = entry["calibration"]["fitted"]
    assert not entry["calibration"]["max_false_reachable"]
    assert got["false_declines"] == 0.3, "the fewest false declines the checks allow"
    assert got["correct_declines"] > 0


def test_the_overlap_weighs_a_question_word_by_how_rare_it_is_in_the_index(index):
    from qa.decide import overlap

    assistant = make_assistant(index, ScriptedGenerator(yes=None))
    try:
        total, found = assistant.store.term_counts(["glaciers", "the", "zebra"])
    finally:
        assistant.store.close()
    assert total >= 3 and found["glaciers"] >= 1 and found["zebra"] == 0 and found["the"] >= found["glaciers"]

    def counts(terms):  # "orchard" in 1 chunk of 100, "apples" in 50
        return 100, {t: {"orchard": 1, "apples": 50}.get(t, 0) for t in terms}

    question = "Which apples does the orchard sell?"
    has_rare = overlap(question, ["The orchard opens in May."], counts)
    has_common = overlap(question, ["Apples are red."], counts)
    assert has_rare > 4 * has_common > 0  # one question word each, but the rare one counts for more
    assert overlap(question, ["The orchard sells apples."], counts) == 1.0


@pytest.mark.parametrize("p_yes, declined", [(0.2, True), (0.3, False)])
def test_a_model_with_a_fit_is_declined_by_its_own_numbers_not_the_default(calibrated, tmp_path, p_yes, declined):
    write_calibration(tmp_path, judge_fit(0.25))  # this model's point: P(yes) 0.25, not the default 0.6
    model = ScriptedGenerator(name=FITTED, yes=p_yes).enqueue(KINDS_REPLY)
    assistant, answer = calibrated(model, KINDS)
    assert assistant.decision.calibrated and assistant.decision.kind == "fitted"
    assert answer.abstained == declined and answer.judge == p_yes
    assert answer.declined_by == ("judge" if declined else None)


def test_an_explicit_judge_threshold_overrides_the_fit(calibrated, tmp_path):
    write_calibration(tmp_path, judge_fit(0.25))
    model = ScriptedGenerator(name=FITTED, yes=0.3).enqueue(KINDS_REPLY)  # the fit would answer
    assistant, answer = calibrated(model, KINDS, judge_threshold=0.5)
    assert answer.declined_by == "judge"
    assert assistant.decision.kind == "judge" and "judge_threshold setting" in assistant.decision.describe()


def test_an_unknown_model_uses_the_default_threshold_and_qa_doctor_says_it_is_uncalibrated(calibrated, tmp_path):
    from qa.doctor import check_decline

    write_calibration(tmp_path, judge_fit(0.25))  # another model's fit is never borrowed
    assistant, answer = calibrated(ScriptedGenerator(name="some-other-model", yes=0.5).enqueue(KINDS_REPLY), KINDS)
    assert answer.declined_by == "judge"  # 0.5 is below the default 0.6
    assert not assistant.decision.calibrated and assistant.decision.threshold == 0.6
    check = check_decline(assistant.settings.replace(llm_model="owner/unknown-model-GGUF"))
    assert check.status == "warn" and "uncalibrated" in check.detail and "owner/unknown-model-GGUF" in check.detail
    assert "eval/fit_decline.py --llm-model owner/unknown-model-GGUF" in check.fix
    fitted = check_decline(assistant.settings.replace(llm_model="owner/unknown-model-GGUF", judge_threshold=0.4))
    assert fitted.status == "ok" and "judge_threshold setting" in fitted.detail


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ('{"models": {}}', "expected an object with a 'models' list"),
        ('{"models": [{"model": "m", "weights": {"judge_logit": 1}, "bias": 0, "threshold": 0.5}]}',
         "entry 1: 'weights' must give a number for each of judge_logit, best_dense, overlap"),
        ('{"models": [{"model": "m", "weights": {"judge_logit": 1, "best_dense": 0, "overlap": 0}, "bias": 0, '
         '"threshold": 7}]}', "entry 1: 'threshold' must be a number between 0 and 1"),
    ],
)  # fmt: skip
def test_a_bad_calibration_file_is_a_clear_error_naming_the_file(calibrated, tmp_path, content, problem):
    from qa.doctor import check_decline
    from qa.errors import ConfigError

    (tmp_path / "decline_calibration.json").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        calibrated(ScriptedGenerator(yes=0.9).enqueue(KINDS_REPLY), KINDS)
    assert str(tmp_path / "decline_calibration.json") in str(caught.value) and problem in str(caught.value)
    check = check_decline(_settings_in(tmp_path))
    assert check.status == "fail" and "decline_calibration.json" in check.detail


def test_each_builtin_model_ships_its_own_fitted_decline_decision(tmp_path):
    from qa.decide import decision_for
    from qa.generators.llama_cpp import SHIPPED

    decisions = {name: decision_for("local", name, None, tmp_path) for name in SHIPPED}  # tmp_path: no user fits
    for name, decision in decisions.items():
        assert decision.calibrated and decision.kind == "fitted" and decision.model == name, decision.describe()
        assert decision.fitted["sha256"] == SHIPPED[name].sha256
    assert len({(d.weights, d.threshold) for d in decisions.values()}) == len(SHIPPED)  # each its own numbers


def _settings_in(cache_dir):
    from qa.config import load_settings

    return load_settings({"cache_dir": str(cache_dir)}, env={})


# ---- the checks on the draft ------------------------------------------------------------------------------


def test_a_fabricated_sentence_is_removed_and_listed_as_unsupported(ask):
    model = ScriptedGenerator().enqueue(KINDS_REPLY + " It was planted by Napoleon Bonaparte in 1802 [1].")
    answer = ask(model, KINDS)
    assert not answer.abstained
    assert answer.text == "The Hillside orchard grows forty kinds of apples [1]."
    assert answer.unsupported == ["It was planted by Napoleon Bonaparte in 1802."]
    assert "Napoleon" not in " ".join(c.quote for c in answer.citations)


def test_a_marker_on_the_wrong_passage_is_moved_to_the_one_that_supports_it(ask):
    model = ScriptedGenerator().enqueue("The Hillside orchard grows forty kinds of apples [3].")
    answer = ask(model, KINDS)
    assert [p.chunk.source for p in answer.retrieved][0] == "orchard.txt"
    assert answer.retrieved[2].chunk.source != "orchard.txt", "[3] must point at another file"
    assert answer.text == "The Hillside orchard grows forty kinds of apples [1]."
    assert [(c.n, c.source, c.start_line) for c in answer.citations] == [(1, "orchard.txt", 3)]


def test_a_marker_pointing_at_no_passage_is_replaced(ask):
    answer = ask(ScriptedGenerator().enqueue("The Hillside orchard grows forty kinds of apples [9]."), KINDS)
    assert answer.text.endswith("[1].") and answer.citations[0].source == "orchard.txt"


@pytest.mark.parametrize(
    "reply",
    [
        "The orchard is run by Captain Nemo and his crew [1].",  # nothing in it is in any source
        "The documents don't say.",  # the model declines itself
        "",  # an empty reply
    ],
)
def test_a_reply_with_no_supported_sentence_is_a_decline(ask, reply):
    answer = ask(ScriptedGenerator().enqueue(reply), KINDS)
    assert_declined(answer)
    if "Nemo" in reply:
        assert answer.unsupported == ["The orchard is run by Captain Nemo and his crew."]


# ---- what the model is shown -------------------------------------------------------------------------------


def test_the_source_filter_limits_what_is_retrieved_and_cited(ask):
    model = ScriptedGenerator().enqueue("The lamp was automated in 1990 [1].")
    answer = ask(model, "When was the lamp automated?", sources=["lighthouse.txt"])
    assert {p.chunk.source for p in answer.retrieved} == {"lighthouse.txt"}
    assert [(c.source, c.start_line) for c in answer.citations] == [("lighthouse.txt", 4)]
    shown = model.prompt_text(0)
    assert "The lamp was automated" in shown and "Hillside" not in shown and "Aletsch" not in shown

    # filtered to an unrelated file, the orchard question has nothing relevant: declined by the gate
    unrelated = ScriptedGenerator(yes=None)
    answer = ask(unrelated, KINDS, sources=["glaciers.md"])
    assert_declined(answer)
    assert {p.chunk.source for p in answer.retrieved} == {"glaciers.md"} and unrelated.calls == []


def test_a_mistyped_source_is_an_error_not_a_decline(ask):
    model = ScriptedGenerator(yes=None)
    with pytest.raises(QuestionError, match="not an indexed document: orchard.md"):
        ask(model, KINDS, sources=["orchard.md"])
    assert model.calls == []


def test_a_follow_up_is_rewritten_with_the_earlier_turn_and_the_rewrite_is_what_is_searched(ask):
    earlier = (KINDS, "The Hillside orchard grows forty kinds of apples [1].")
    rewritten = "When does picking start at the Hillside orchard?"
    model = ScriptedGenerator().enqueue(rewritten, "Picking starts in the second week of September [1].")
    answer = ask(model, "And when does picking start there?", history=[earlier])
    rewrite = model.prompt_text(0)
    assert KINDS in rewrite and "forty kinds of apples" in rewrite  # the earlier question and answer
    assert "And when does picking start there?" in rewrite
    assert answer.standalone_question == rewritten
    assert rewritten in model.prompt_text(-1)  # the draft answers the rewritten question
    assert answer.question == "And when does picking start there?"
    assert not answer.abstained
    assert [(c.source, c.start_line) for c in answer.citations] == [("orchard.txt", 4)]


def test_without_history_there_is_no_rewrite_call(ask):
    model = ScriptedGenerator().enqueue(KINDS_REPLY)
    answer = ask(model, KINDS)
    assert model.kinds == ["judge", "stream"] and answer.standalone_question == ""


def test_stream_yields_the_draft_pieces_then_the_checked_answer(index):
    reply = KINDS_REPLY + " It was planted by Napoleon Bonaparte in 1802 [1]."
    model = ScriptedGenerator().enqueue(reply)
    assistant = make_assistant(index, model)
    try:
        events = list(assistant.stream(KINDS))
    finally:
        assistant.store.close()
    first, *pieces, last = events
    assert isinstance(first, Evidence) and first.passages == last.retrieved  # the passages come first
    assert all(isinstance(p, str) for p in pieces) and len(pieces) >= 2
    assert "".join(pieces) == reply  # the raw draft, streamed as written
    assert isinstance(last, Answer) and not last.abstained
    assert last.unsupported == ["It was planted by Napoleon Bonaparte in 1802."]  # checked after streaming


def test_a_declined_stream_yields_only_the_answer(index):
    assistant = make_assistant(index, ScriptedGenerator(yes=None))
    try:
        events = list(assistant.stream(OFF_TOPIC))
    finally:
        assistant.store.close()
    assert [type(e) for e in events] == [Evidence, Answer] and events[1].abstained
    assert events[1].declined_by == "relevance"


# ---- the JSON contract (README, "Contracts") ------------------------------------------------------------------

CITATION_KEYS = {"n", "source", "start_line", "end_line", "page", "quote", "score"}
RETRIEVED_KEYS = {"source", "start_line", "end_line", "page", "score", "text"}


def test_the_answer_object_matches_the_documented_json_contract(ask):
    answer = ask(ScriptedGenerator().enqueue(KINDS_REPLY), KINDS)
    data = json.loads(json.dumps(answer.to_dict()))  # plain JSON, nothing lost on the way
    assert {"question", "answer", "abstained", "citations", "retrieved", "timings"} <= data.keys()
    assert data["question"] == KINDS and data["answer"] == answer.text and data["abstained"] is False
    [c] = data["citations"]
    assert set(c) == CITATION_KEYS
    assert isinstance(c["n"], int) and f"[{c['n']}]" in data["answer"]
    assert c["source"] == "orchard.txt" and c["page"] is None
    assert 1 <= c["start_line"] <= c["end_line"] and c["quote"] in lines_of("orchard.txt", 3, 3)
    assert isinstance(c["score"], float) and 0 <= c["score"] <= 1
    assert data["retrieved"], "the passages the answer came from"
    for p in data["retrieved"]:
        assert RETRIEVED_KEYS <= set(p)
        assert p["text"] and p["text"] in DOCS[p["source"]]
        assert 1 <= p["start_line"] <= p["end_line"] and isinstance(p["score"], float)
    scores = [p["score"] for p in data["retrieved"]]
    assert scores == sorted(scores, reverse=True), "retrieved is in rank order"
    assert {"retrieve", "first_token", "generate", "total"} <= data["timings"].keys()
    assert all(isinstance(v, float) and v >= 0 for v in data["timings"].values())
    assert data["model"] == "scripted" and data["unsupported"] == [] and data["standalone_question"] == ""


def test_a_decline_in_json_has_no_citations_and_the_closest_passages(ask):
    data = ask(ScriptedGenerator(yes=None), OFF_TOPIC).to_dict()
    assert data["abstained"] is True and data["answer"] == DECLINE_TEXT
    assert data["citations"] == [] and data["retrieved"]
    assert all(RETRIEVED_KEYS <= set(p) for p in data["retrieved"])
    assert {"retrieve", "total"} <= data["timings"].keys()


# ---- the fakes themselves -------------------------------------------------------------------------------------


def test_the_scripted_generator_hands_out_replies_in_order_and_refuses_unscripted_calls():
    model = ScriptedGenerator(yes=None).enqueue("one two three four five six", "second")
    messages = [{"role": "user", "content": "hello"}]
    assert list(model.stream(messages, 10)) == split_pieces("one two three four five six", 3)
    assert len(split_pieces("one two three four five six", 3)) == 3
    assert model.generate(messages, 10) == "second"
    assert model.prompts == [messages, messages] and model.kinds == ["stream", "generate"]
    with pytest.raises(UnscriptedCall):
        model.generate(messages, 10)
    with pytest.raises(UnscriptedCall):
        model.yes_probability(messages)
    model.enqueue_yes(0.3)
    model.yes = 0.8
    assert [model.yes_probability(messages), model.yes_probability(messages)] == [0.3, 0.8]
    assert model.enqueue(lambda m: m[-1]["content"].upper()).generate(messages, 10) == "HELLO"


def test_the_hash_embedder_is_deterministic_normalised_and_puts_shared_words_close():
    embedder = HashEmbedder()
    vectors = embedder.embed_documents(["The orchard grows apples.", "Apples grow in orchards!", "Glaciers melt.", ""])
    assert vectors.shape == (4, 64) and vectors.dtype.name == "float32"
    assert all(abs(float((v * v).sum()) - 1) < 1e-5 for v in vectors)
    assert (vectors[0] @ vectors[1]) > 0.9 and abs(vectors[0] @ vectors[2]) < 0.5
    assert (HashEmbedder().embed_query("The orchard grows apples.") == vectors[0]).all()
    assert embedder.embed_documents([]).shape == (0, 64)
