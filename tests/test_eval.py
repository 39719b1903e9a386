"""The evaluation suite: question files, metrics, and a CI-sized run of the real pipeline with floors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from qa import breakdown, evaluate
from qa.evaluate import QuestionFileError, contains_answer, load_questions, normalize, token_f1
from tests.conftest import ROOT, run_qa

QUESTIONS = ROOT / "eval" / "questions.jsonl"
# A fixed CI subset: eight answerable questions and four unanswerable ones (two on-topic, two off-topic).
CI_IDS = [
    "seed-01",
    "seed-06",
    "seed-16",
    "seed-21",
    "seed-31",
    "seed-41",
    "seed-46",
    "seed-56",
    "seed-59",
    "seed-62",
    "seed-66",
    "seed-68",
]


@pytest.mark.parametrize(
    "name, least, unanswerable",
    [("questions.jsonl", 40, 8), ("questions-holdout.jsonl", 30, 6), ("questions-dev2.jsonl", 30, 6)],
)
def test_the_seed_question_sets_are_well_formed(name, least, unanswerable):
    questions = load_questions(ROOT / "eval" / name)
    assert len(questions) >= least and len({q.id for q in questions}) == len(questions)
    assert sum(not q.answerable for q in questions) >= unanswerable
    sources = {p.name for p in (ROOT / "seeds").iterdir()}
    for q in questions:
        assert set(q.sources) <= sources
        assert q.answerable == bool(q.answers) == bool(q.sources)


@pytest.mark.parametrize("name", ["questions-holdout.jsonl", "questions-dev2.jsonl"])
def test_every_answer_of_a_written_set_is_in_each_file_it_cites(name):
    """The held-out and second development sets were written from the articles alone: each answer, as the
    scorer compares it, is in every file it names."""
    for q in load_questions(ROOT / "eval" / name):
        for source in q.sources:
            text = (ROOT / "seeds" / source).read_text(encoding="utf-8")
            assert any(contains_answer(text, [a]) for a in q.answers), (q.id, source)


def test_squad_normalisation_and_token_f1():
    assert normalize("The U.S.  Embassy!") == "us embassy"
    assert contains_answer("It was Victoria Nuland [1].", ["Nuland"])
    assert not contains_answer("It was 18 people.", ["8"])
    # a hyphen joins words without making them one: "3,000-plus" holds "3,000", and "e-mail" is still "email"
    assert contains_answer("The group has 3,000-plus Iranians at the camp [1].", ["3,000"])
    assert contains_answer("They spoke by e-mail.", ["email"]) and contains_answer("By email.", ["e-mail"])
    assert not contains_answer("The group has 3,000-plus Iranians.", ["3,100"])
    assert token_f1("Victoria Nuland said so", ["Victoria Nuland"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("nothing", ["Victoria Nuland"]) == 0.0


@pytest.mark.parametrize(
    "content,message",
    [
        (
            '{"id": "a", "question": "q", "answers": ["x"], "sources": ["f"], "answerable": true}\n{oops\n',
            ":2: not valid JSON",
        ),
        (
            '{"id": "a", "question": "q", "answers": ["x"], "sources": [], "answerable": "yes"}\n',
            ":1: field 'answerable' must be bool",
        ),
        ('{"id": "a", "answers": [], "sources": [], "answerable": false}\n', ":1: missing field 'question'"),
        ("\n\n", "no questions in the file"),
    ],
)
def test_malformed_question_files_name_the_line_and_the_problem(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(QuestionFileError, match=message):
        load_questions(path)
    result = run_qa("eval", "--questions", str(path), "--vectorstore", str(tmp_path / "i"))
    assert result.returncode == 2 and message.strip(":") in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command, folder, message",
    [
        ("eval-clapnq", "nowhere", "nowhere: not a ClapNQ folder: nowhere/clapnq_dev_answerable.jsonl is missing"),
        ("eval-beir", "nowhere", "nowhere: not a BEIR folder: nowhere/qrels/test.tsv is missing"),
        ("eval-clapnq", "broken", "broken: not a ClapNQ folder: cannot read it (JSONDecodeError"),
    ],
)
def test_a_benchmark_folder_that_is_not_one_is_a_clear_error(tmp_path, command, folder, message):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "clapnq_dev_answerable.jsonl").write_text("{not json\n")
    result = run_qa(command, folder, "--vectorstore", str(tmp_path / "index"), cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_an_unknown_question_id_is_an_error_not_an_empty_run(tmp_path):
    result = run_qa("eval", "--questions", str(QUESTIONS), "--ids", "seed-01", "seed-999", cwd=tmp_path)
    assert result.returncode != 0 and "no question with id seed-999" in result.stderr, result.stderr


def test_unknown_fields_are_ignored(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"id": "a", "question": "q", "answers": ["x"], "sources": ["f"], "answerable": true, "difficulty": "hard"}\n'
    )
    assert load_questions(path)[0].id == "a"


@pytest.mark.slow
def test_ci_sized_evaluation_meets_its_floors(tmp_path):
    out = tmp_path / "eval.json"
    # Floors leave room for the spread between machines: llama.cpp's AVX2 and AVX-512 kernels round differently,
    # so greedy decoding picks other words. Measured 2026-11-26 on these 12 questions, the same machine with an
    # AVX2 build and an AVX-512 build: accuracy 1.0 / 1.0, correct declines 0.75 / 0.75, false declines 0 / 0,
    # hit@4 1.0 / 1.0, faithfulness 1.0 / 1.0, citation precision 0.889 / 0.60 (an Intel AVX-512 machine also
    # measured 0.60). Precision pools citations, and one answer (seed-01) cites seven sentences on AVX-512, five
    # of them from a file that states the same fact but is not in its gold list; 11 of 12 answers were identical.
    # Since session 12's decline fit (180 held-apart questions) seed-62 is answered too: correct declines 0.5, the
    # gate's two, which need no model.
    floors = [
        "answer_accuracy=0.6",
        "correct_declines=0.5",
        "false_declines=0.35",
        "retrieval_hit@4=0.9",
        "citation_faithfulness=1.0",
        "citation_precision=0.5",
    ]
    result = run_qa(
        "eval",
        "--questions",
        str(QUESTIONS),
        "--ids",
        *CI_IDS,
        "--json",
        str(out),
        "--vectorstore",
        str(tmp_path / "index"),
        "--corpus",
        str(ROOT / "seeds"),
        *[arg for f in floors for arg in ("--floor", f)],
        timeout=900,
    )
    data = json.loads(out.read_text())
    assert len(data["items"]) == len(CI_IDS)
    assert (tmp_path / "eval.png").stat().st_size > 1000
    for item in data["items"]:
        assert {"id", "question", "answer", "abstained", "citations", "retrieved", "timings"} <= item.keys()
    assert result.returncode == 0, result.stdout + result.stderr


BENCH = ROOT.parent / "shared" / "bench"


@pytest.mark.slow
@pytest.mark.skipif(not (BENCH / "scifact").is_dir(), reason="needs ../shared/bench/scifact beside the checkout")
def test_scifact_subset_retrieval_meets_its_floors(tmp_path):
    """40 SciFact test claims over their relevant abstracts plus a seeded sample (500 documents in all)."""
    out = tmp_path / "scifact.json"
    result = run_qa(
        "eval-beir",
        str(BENCH / "scifact"),
        "--max-queries",
        "40",
        "--max-docs",
        "500",
        "--vectorstore",
        str(tmp_path / "index"),
        "--json",
        str(out),
        "--floor",
        "bm25=0.75",
        "--floor",
        "dense=0.8",
        "--floor",
        "hybrid=0.8",
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["mode"]: r for r in json.loads(out.read_text())["modes"]}
    assert set(rows) == {"bm25", "dense", "hybrid"} and all(r["queries"] == 40 for r in rows.values())
    assert rows["hybrid"]["recall@100"] >= 0.95


@pytest.mark.slow
@pytest.mark.skipif(not (BENCH / "clapnq").is_dir(), reason="needs ../shared/bench/clapnq beside the checkout")
def test_clapnq_subset_answers_and_declines_within_its_floors(tmp_path):
    """All 600 ClapNQ dev passages indexed; a fixed seeded 3 answerable + 3 unanswerable questions asked.

    The floors are loose on purpose (6 questions): they catch a broken decline path or lost citations, not a
    point of accuracy. The full run is `qa eval-clapnq` without --per-half (README). It indexes ClapNQ beside
    the user's index, which stays as it was."""
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(ROOT / "seeds" / "001_67768c06cffa3221.txt", mine)
    assert run_qa("ingest", str(mine), "--vectorstore", str(tmp_path / "index")).returncode == 0
    out = tmp_path / "clapnq.json"
    result = run_qa(
        "eval-clapnq",
        str(BENCH / "clapnq"),
        "--per-half",
        "3",
        "--vectorstore",
        str(tmp_path / "index"),
        "--json",
        str(out),
        "--floor",
        "correct_declines=0.5",
        "--floor",
        "false_declines=0.5",
        "--floor",
        "gold_passage_cited=0.66",
        "--floor",
        "citation_faithfulness=1.0",
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert len(data["items"]) == 6 and sum(i["expected"]["answerable"] for i in data["items"]) == 3
    held_apart = evaluate.clapnq_held_apart_ids()
    assert not {i["id"].removeprefix("clapnq-") for i in data["items"]} & held_apart
    assert "passages" in result.stderr and "600 passages" in result.stderr
    status = json.loads(run_qa("status", "--json", "--vectorstore", str(tmp_path / "index")).stdout)
    assert status["files"] == 1 and [d["source"] for d in status["documents"]] == ["001_67768c06cffa3221.txt"]

    # qa.breakdown explains the run: every question is answered or declined by exactly one stage
    shown = subprocess.run(
        [sys.executable, "-m", "qa.breakdown", str(out)], capture_output=True, text=True, check=True
    ).stdout
    for half, line in zip(("answerable", "unanswerable"), shown.splitlines(), strict=False):
        counts = dict(re.findall(r"(answered|gate|judge|checks) (\d+)", line))
        assert line.startswith(half) and sum(map(int, counts.values())) == 3, shown
        declined = sum(i["abstained"] for i in data["items"] if i["expected"]["answerable"] == (half == "answerable"))
        assert int(counts["answered"]) == 3 - declined, shown
    assert "judge AUROC" in shown


# ---- ClapNQ calibration ids, floors and the breakdown, without a model -------------------------------------


def test_the_clapnq_calibration_ids_load_from_the_installed_package():
    ids = evaluate.clapnq_calibration_ids()
    assert len(ids) == 60 and all(re.fullmatch(r"-?\d+", i) for i in ids)
    held_apart = evaluate.clapnq_held_apart_ids()
    assert len(held_apart) == 180 and held_apart > ids


@pytest.mark.skipif(not (BENCH / "clapnq").is_dir(), reason="needs ../shared/bench/clapnq beside the checkout")
def test_ids_held_apart_for_fitting_are_never_asked_and_leave_earlier_reports_questions_alone():
    """The decline decision's 120 extra fitting questions are never scored; `--per-half 50` still asks the same
    100 questions as before they were set apart (reports stay comparable), and a sample that would have drawn
    some gets others in their place, so `--per-half` always asks that many."""
    calibration, held_apart = evaluate.clapnq_calibration_ids(), evaluate.clapnq_held_apart_ids()
    for per_half in (3, 20, 50):
        _, before = evaluate.load_clapnq(BENCH / "clapnq", per_half, exclude=calibration)
        _, now = evaluate.load_clapnq(BENCH / "clapnq", per_half, exclude=calibration, never=held_apart)
        asked = {q.id.removeprefix("clapnq-") for q in now}
        assert len(now) == 2 * per_half and not asked & held_apart
        kept = [q.id for q in before if q.id.removeprefix("clapnq-") not in held_apart]
        assert set(kept) <= {q.id for q in now}
        if per_half == 50:
            assert [q.id for q in now] == [q.id for q in before]
    _, everything = evaluate.load_clapnq(BENCH / "clapnq", exclude=calibration, never=held_apart)
    assert len(everything) == 600 - 180


def test_the_calibration_ids_are_package_data_in_the_wheel(tmp_path):
    """Built from pyproject.toml as pip would: the ids file must be inside the wheel, not only in the checkout."""
    pytest.importorskip("setuptools")
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    for path in (ROOT / "qa").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    build = "import setuptools.build_meta as b, sys; print(b.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = tmp_path / "dist" / done.stdout.split()[-1]
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("qa/data/clapnq_calibration_ids.txt").decode() + z.read("qa/data/clapnq_fit_ids.txt").decode()
    assert set(shipped.split()) >= evaluate.clapnq_held_apart_ids()


def test_missing_calibration_ids_are_an_error_naming_the_file(tmp_path, monkeypatch):
    with pytest.raises(evaluate.BenchmarkError, match="gone.txt is missing"):
        evaluate.clapnq_calibration_ids(tmp_path / "gone.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n")
    with pytest.raises(evaluate.BenchmarkError, match="empty.txt: no ClapNQ calibration question ids"):
        evaluate.clapnq_calibration_ids(tmp_path / "empty.txt")
    # run_clapnq reads them before anything else: no list, no run (rather than scoring the calibration questions)
    monkeypatch.setattr(evaluate, "CALIBRATION_IDS", "not_shipped.txt")
    with pytest.raises(evaluate.BenchmarkError, match=r"data[/\\]not_shipped.txt is missing"):
        evaluate.run_clapnq(None, tmp_path / "clapnq", tmp_path / "corpus")


def _item(answerable: bool, abstained: bool, cited: list[str], judge=None, generated=True) -> dict:
    return {
        "abstained": abstained,
        "citations": [{"source": s} for s in cited],
        "expected": {"answerable": answerable, "sources": ["gold.txt"] if answerable else []},
        "timings": {"generate": 1.0} if generated else {},
        "judge": judge,
    }


def test_gold_passage_cited_counts_answered_answerable_questions_only():
    items = [
        _item(True, False, ["gold.txt", "other.txt"]),
        _item(True, False, ["other.txt"]),
        _item(True, True, []),
        _item(False, False, ["other.txt"]),
    ]
    assert evaluate.gold_passage_cited(items) == 0.5
    assert evaluate.gold_passage_cited([_item(True, True, [])]) is None


def test_beir_floor_misses_name_the_mode_and_skip_modes_not_run():
    rows = [{"mode": "bm25", "ndcg@10": 0.7}, {"mode": "dense", "ndcg@10": 0.81}]
    misses = evaluate.beir_floor_misses(rows, {"bm25": 0.75, "dense": 0.8, "hybrid": 0.9})
    assert misses == ["bm25 nDCG@10 = 0.7 (below floor 0.75)"]


def test_breakdown_counts_each_decline_by_the_stage_that_made_it(tmp_path, capsys):
    items = [
        _item(True, False, ["gold.txt"], judge=0.9),
        _item(True, True, [], judge=0.4, generated=False),  # the judge
        _item(False, True, [], judge=0.8),  # a draft, then the checks
        _item(False, True, [], judge=None, generated=False),  # the relevance gate
    ]
    result = breakdown.breakdown(items, 0.6)
    assert result["answerable"]["answered"] == 1 and result["answerable"]["declined by the judge"] == 1
    assert result["unanswerable"]["declined by the checks"] == 1
    assert result["unanswerable"]["declined by the gate"] == 1
    assert result["judge_auroc"] == 0.5
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"items": items}))
    assert breakdown.main([str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("answerable: questions 2, answered 1")
    (tmp_path / "bad.json").write_text("{}")
    assert breakdown.main([str(tmp_path / "bad.json")]) == 2


# ---- the answer-quality and cost metrics, on made-up items where the right value is known -------------------


def _q(qid: str, answerable: bool) -> evaluate.Question:
    return evaluate.Question(qid, f"question {qid}?", ["Victoria Nuland"] if answerable else [], [], answerable)


def _answer(text: str, passages: list[str], declined_by: str | None = None, usage=None) -> dict:
    return {
        "answer": text,
        "abstained": declined_by is not None,
        "declined_by": declined_by,
        "citations": [],
        "retrieved": [{"source": f"p{n}.txt", "text": t} for n, t in enumerate(passages)],
        "timings": {"total": 1.0},
        **({"usage": usage} if usage is not None else {}),
    }


def _calls(judge: int, draft: int, completion: int) -> dict:
    return {
        "judge": {"prompt_tokens": judge, "completion_tokens": 1},
        "draft": {"prompt_tokens": draft, "completion_tokens": completion},
    }


NULAND = "State Department spokeswoman Victoria Nuland urged the MeK to accept."
CASES = [
    # (question, answer object)
    (_q("right", True), _answer("Victoria Nuland [1].", [NULAND, "Other text."], usage=_calls(600, 610, 20))),
    # right, but the passages never name her: the model knew it (or guessed); the passages did not give it
    (
        _q("right-unsupported", True),
        _answer("It was Victoria Nuland.", ["A spokeswoman spoke."], usage=_calls(700, 710, 30)),
    ),
    (_q("wrong", True), _answer("It was Hillary Clinton [1].", [NULAND], usage=_calls(800, 810, 40))),
    (_q("declined-judge", True), _answer("The documents don't say.", ["Victoria spoke."], "judge", _calls(500, 0, 0))),
    (_q("answered-unanswerable", False), _answer("Albania said yes [1].", ["Albania."], usage=_calls(900, 910, 50))),
    (_q("declined-gate", False), _answer("The documents don't say.", [], "relevance", usage={})),
    (_q("declined-old-file", False), _answer("The documents don't say.", ["x"], None) | {"abstained": True}),
]


def _scored(cases=CASES) -> tuple[list, list[dict]]:
    questions, items = [], []
    for q, answer in cases:
        item = {
            "id": q.id,
            **answer,
            "expected": {"answers": q.answers, "sources": q.sources, "answerable": q.answerable},
        }
        item["score"] = evaluate.score_item(q, answer, 4, lambda source, quote: True)
        questions.append(q)
        items.append(item)
    return questions, items


def test_each_new_metric_on_items_where_the_right_value_is_known():
    summary = evaluate.summarize(*_scored(), top_k=4)
    # 4 answerable: the gold string is in the passages of "right" and "wrong" only
    assert summary["answer_in_passages"] == 0.5
    # "declined-judge" holds "Victoria" of "Victoria Nuland": half the words; the rest hold all or none
    assert summary["answer_token_recall"] == pytest.approx((1 + 0 + 1 + 0.5) / 4, abs=1e-4)
    # answered: right, right-unsupported, wrong, answered-unanswerable; correct: the first two
    assert summary["selective_accuracy"] == 0.5
    assert summary["answered_wrong"] == 0.25  # "wrong", of 4 answerable
    assert summary["answer_accuracy"] == 0.5 and summary["false_declines"] == 0.25
    assert summary["declined_by"] == {
        "answerable": {"relevance": 0, "judge": 1, "model": 0, "checks": 0, "unknown": 0},
        "unanswerable": {"relevance": 1, "judge": 0, "model": 0, "checks": 0, "unknown": 1},
    }
    # per question (judge + draft): 1210, 1410, 1610, 500, 1810, and 0 for the gate; the old item has no usage
    assert summary["prompt_tokens_median"] == 1310
    assert summary["completion_tokens_median"] == 26  # 21, 31, 41, 1, 51, 0


def test_a_back_end_that_counts_no_tokens_gives_no_token_median_rather_than_zero():
    cases = [(_q("a", True), _answer("Victoria Nuland.", [NULAND], usage={}))]
    assert evaluate.summarize(*_scored(cases), top_k=4)["prompt_tokens_median"] is None


def test_clapnq_drops_the_measures_that_need_the_gold_answer_verbatim():
    summary = evaluate.clapnq_summary(evaluate.summarize(*_scored(), top_k=4), _scored()[1])
    assert not set(evaluate.CONTAINMENT_METRICS) & summary.keys()
    assert {"answer_token_recall", "declined_by", "gold_passage_cited", "prompt_tokens_median"} <= summary.keys()


def test_new_ceilings_and_a_floor_on_a_table_are_reported():
    summary = evaluate.summarize(*_scored(), top_k=4)
    misses = evaluate.check_floors(
        summary, {"answered_wrong": 0.2, "prompt_tokens_median": 2000, "selective_accuracy": 0.6, "declined_by": 1}
    )
    assert misses == [
        "answered_wrong = 0.25 (above ceiling 0.2)",
        "selective_accuracy = 0.5 (below floor 0.6)",
        "declined_by is not one number, so it cannot have a floor",
    ]
    table = evaluate.format_table(summary)
    assert re.search(r"declined_by\.unanswerable\s+relevance 1  judge 0  model 0  checks 0  unknown 1", table)


def _result_file(path):
    questions, items = _scored()
    items[0]["citations"] = [{"source": "nuland.txt", "quote": "Victoria Nuland urged"}]
    items[0]["score"]["faithful_quotes"] = 1
    items[0]["score"]["citations"] = 1
    old = {k: v for k, v in evaluate.summarize(questions, items, 4).items() if k in ("questions", "retrieval_hit@4")}
    path.write_text(json.dumps({"summary": old, "items": items}))
    return path


def test_rescore_recomputes_the_summary_of_a_saved_result(tmp_path):
    saved = _result_file(tmp_path / "old.json")
    out = tmp_path / "new.json"
    # no corpus holds nuland.txt: the stored quote check is kept (faithfulness 1 of 1)
    result = run_qa("eval", "--rescore", str(saved), "--json", str(out), "--corpus", str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    assert "1 item(s) cite files not in" in result.stderr and "stored quote checks are kept" in result.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["answer_in_passages"] == 0.5 and summary["selective_accuracy"] == 0.5
    assert summary["citation_faithfulness"] == 1.0
    assert re.search(r"answered_wrong\s+0.25", result.stdout)
    # with the corpus at hand the quote is checked again, and it is not in the file
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "nuland.txt").write_text("Ms. Nuland said nothing of the kind.\n")
    result = run_qa("eval", "--rescore", str(saved), "--json", str(out), "--corpus", str(tmp_path / "corpus"))
    assert result.returncode == 0 and "kept" not in result.stderr, result.stderr
    assert json.loads(out.read_text())["summary"]["citation_faithfulness"] == 0.0


def test_rescore_of_a_file_it_cannot_use_names_the_file_and_item(tmp_path):
    data = json.loads(_result_file(tmp_path / "r.json").read_text())
    del data["items"][2]["expected"]
    (tmp_path / "r.json").write_text(json.dumps(data))
    result = run_qa("eval", "--rescore", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "r.json: item 3 (wrong): missing field 'expected'" in result.stderr, result.stderr
    (tmp_path / "x.json").write_text("[]")
    result = run_qa("eval", "--rescore", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "x.json: not a qa eval result" in result.stderr, result.stderr


def test_rescoring_what_run_eval_saved_gives_the_same_summary(tmp_path):
    """A run through the real Assistant (fake models), saved as `qa eval --json` does, then rescored."""
    from qa.api import Assistant
    from tests.conftest import fake_settings
    from tests.fakes import HashEmbedder, ScriptedGenerator

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "orchard.txt").write_text(
        "Hillside Orchard\n\nThe Hillside orchard grows forty kinds of apples on the slopes above Ledbury.\n"
    )
    questions = [
        evaluate.Question(
            "kinds", "How many kinds of apples does the Hillside orchard grow?", ["forty"], ["orchard.txt"], True
        ),
        evaluate.Question("capital", "What is the capital of France?", [], [], False),
    ]
    generator = ScriptedGenerator(yes=0.9).enqueue("The Hillside orchard grows forty kinds of apples [1].")
    assistant = Assistant(fake_settings(tmp_path), generator=generator, embedder=HashEmbedder())
    assistant.ingest()
    result = evaluate.run_eval(assistant, questions, tmp_path / "corpus")
    assistant.store.close()
    (tmp_path / "run.json").write_text(json.dumps(result))
    again, kept = evaluate.rescore(tmp_path / "run.json", tmp_path / "corpus")
    assert again["summary"] == result["summary"] and kept == 0
    assert result["summary"]["answer_accuracy"] == 1.0 and result["summary"]["answer_in_passages"] == 1.0
    assert result["summary"]["declined_by"]["unanswerable"]["relevance"] == 1


# ---- where an answer's time goes ----------------------------------------------------------------------------


def test_time_stages_add_up_to_the_total():
    timings = {"retrieve": 0.01, "context": 0.05, "evidence": 0.07, "judge": 4.0, "first_token": 4.5}
    stages = breakdown.time_stages({**timings, "generate": 1.5, "verify": 0.1, "total": 5.7})
    assert stages == pytest.approx(
        {"retrieve": 0.02, "context": 0.05, "prefill": 4.0, "first token": 0.43, "generate": 1.07, "check": 0.1}
        | {"other": 0.03}
    )
    gated = breakdown.time_stages({"retrieve": 0.01, "evidence": 0.01, "total": 0.012})
    assert gated["prefill"] == gated["generate"] == 0 and sum(gated.values()) == pytest.approx(0.012)


def test_the_time_chart_is_drawn_before_and_after_and_a_file_without_timings_is_named(tmp_path, capsys):
    def run(total_scale):
        items = []
        for n in range(5):
            t = {"evidence": 0.01, "judge": 3.0 * total_scale, "first_token": 3.3 * total_scale + 0.01}
            t |= {"generate": 1.0 + n, "verify": 0.01}
            t["total"] = t["evidence"] + t["judge"] + t["generate"] + t["verify"]
            items.append({"id": f"q{n}", "abstained": False, "expected": {"answerable": True}, "timings": t})
        return {"items": items}

    (tmp_path / "before.json").write_text(json.dumps(run(1.0)))
    (tmp_path / "after.json").write_text(json.dumps(run(0.5)))
    png = tmp_path / "charts" / "time.png"
    args = [str(tmp_path / "before.json"), str(tmp_path / "after.json"), "--time-chart", str(png)]
    assert breakdown.main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "before: median seconds retrieve 0.01, context 0.0, prefill 3.0," in out and "after: median seconds" in out
    broken = run(1.0)
    del broken["items"][3]["timings"]
    (tmp_path / "old.json").write_text(json.dumps(broken))
    assert breakdown.main([str(tmp_path / "old.json"), "--time-chart", str(tmp_path / "x.png")]) == 2
    assert "old.json: item 4 (q3) has no 'timings'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
