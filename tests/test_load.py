"""Load: the real web UI (`qa ui` in its own process on 127.0.0.1) serving eight simultaneous users through Gradio's
API with `gradio_client`, each user asking questions no other user asks. Every request must succeed, and every
user must get the answer to their own question (its `question` field, its answer and its cited file), not one
meant for somebody else.

The UI answers with the shipped 0.5B model, with 2 passages and at most 64 answer tokens per question, and the
judge off (the 0.5B judge declines answerable seed questions: its P(yes) is 0.37-0.49 on them). The questions
are seed questions that model answers correctly in these settings. Measured here (2 cores): 25 s to start,
then 16 answers in about 85 s (one llama.cpp context answers one question at a time; the others queue).
QA_TEST_WRITE_RESULTS=1 writes the figures to eval/results/load.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.conftest import ROOT, SEEDS, run_qa
from tests.test_ui import free_port

pytestmark = pytest.mark.slow

USERS = 8
QUESTIONS_PER_USER = 2
# Seed questions the 0.5B model answers correctly with the settings below (each with its own expected answer),
# chosen again in session 13 from a `qa eval` with these settings (19 of 56 right), after a draft's first token
# stopped being a source marker. User k asks the k-th and the (k+8)-th, so no two users share a question.
QUESTION_IDS = [
    "seed-02",
    "seed-04",
    "seed-05",
    "seed-07",
    "seed-08",
    "seed-10",
    "seed-12",
    "seed-16",
    "seed-18",
    "seed-21",
    "seed-24",
    "seed-33",
    "seed-38",
    "seed-41",
    "seed-44",
    "seed-46",
]
UI_SETTINGS = {
    "QA_LLM_MODEL": "qwen2.5-coder-0.5b",
    "QA_TOP_K": "2",
    "QA_LLM_MAX_TOKENS": "64",
    "QA_JUDGE_THRESHOLD": "0",
    # two whole chunks, as before the context stage: this measures concurrency, and the 0.5B model strays into
    # neighbouring facts of the windows from 8 chunks (an answer to seed-08 quoted seed-44's "humanitarian")
    "QA_CONTEXT_TOKENS": "0",
}


def seed_questions() -> list[dict]:
    by_id = {}
    for line in (ROOT / "eval" / "questions.jsonl").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            by_id[q["id"]] = q
    chosen = [by_id[i] for i in QUESTION_IDS]
    # a wrong user's answer can only be caught if no two questions share an expected answer
    for a in chosen:
        for b in chosen:
            if a is not b:
                assert not any(x.lower() in " ".join(b["answers"]).lower() for x in a["answers"]), (a["id"], b["id"])
    return chosen


@pytest.fixture(scope="module")
def ui_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    corpus = root / "corpus"
    shutil.copytree(SEEDS, corpus)
    env = {"QA_VECTORSTORE": str(root / "index"), "QA_CORPUS": str(corpus), **UI_SETTINGS}
    built = run_qa("ingest", env=env)
    assert built.returncode == 0, built.stderr
    port = free_port()
    log = open(root / "ui.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "ui", "--port", str(port)],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("UI did not start: " + (root / "ui.log").read_text()) from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.timeout(420)
def test_eight_simultaneous_users_each_get_their_own_answers(ui_url):
    from gradio_client import Client

    questions = seed_questions()
    plans = [[questions[u + USERS * n] for n in range(QUESTIONS_PER_USER)] for u in range(USERS)]
    results: list[tuple[int, dict, dict | None, float]] = []  # (user, question, result, seconds)
    errors: list[str] = []
    lock = threading.Lock()
    clients = [Client(ui_url, verbose=False) for _ in range(USERS)]  # one browser session each
    start = threading.Barrier(USERS)

    def user(u: int):
        start.wait()
        for q in plans[u]:
            t = time.perf_counter()
            try:
                result = clients[u].predict(q["question"], api_name="/ask")
            except Exception as exc:  # noqa: BLE001 (counted and shown)
                with lock:
                    errors.append(f"user {u}, {q['id']}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                results.append((u, q, result, time.perf_counter() - t))

    began = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,), daemon=True) for u in range(USERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=360)
    wall = time.perf_counter() - began

    latencies = sorted(r[3] for r in results)
    figures = {
        "users": USERS,
        "requests": USERS * QUESTIONS_PER_USER,
        "completed": len(results),
        "errors": len(errors),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p95_s": round(latencies[max(0, -(-95 * len(latencies) // 100) - 1)], 2) if latencies else None,
        "latency_max_s": round(latencies[-1], 2) if latencies else None,
        "wall_seconds": round(wall, 1),
        # one llama.cpp context answers one question at a time: the rest wait, which is most of the latency
        "model_seconds_per_answer": round(wall / len(results), 2) if results else None,
        "answers_per_minute": round(60 * len(results) / wall, 1),
        "ui_settings": UI_SETTINGS,
    }
    print("\nload:", json.dumps(figures))
    if os.environ.get("QA_TEST_WRITE_RESULTS") == "1":
        out = ROOT / "eval" / "results" / "load.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")

    assert errors == [] and not any(t.is_alive() for t in threads)
    assert len(results) == USERS * QUESTIONS_PER_USER
    assert wall < sum(latencies) / 4, "the users' requests did not overlap: this was not a concurrent load"

    # No cross-talk: each user got the answer to the question they asked, citing that question's own file(s).
    # Which questions the 0.5B model declines or answers without the name asked for differs between CPU kinds
    # (their kernels round differently), so a decline is allowed and so is an answer without the gold fact. What
    # may never happen is cross-talk: an answer citing another question's files, or carrying another user's
    # gold fact instead of its own (no two of these questions share a gold answer).
    def has(answer: str, q: dict) -> bool:
        return any(a.lower() in answer.lower() for a in q["answers"])

    answered = [(u, q, r) for u, q, r, _ in results if not r["abstained"]]
    for u, q, result, _ in results:
        assert q in plans[u]
        assert result["question"] == q["question"], (u, q["id"], result["question"])
        if result["abstained"]:
            assert result["citations"] == [] and result["retrieved"], (q["id"], result)
            continue
        # Cited files must be among the passages retrieved for this very question (the seeds state some facts in
        # several files, so a file outside the question's gold list is not cross-talk by itself); another
        # question's gold fact counts as cross-talk only when this request's own passages do not hold it (the
        # 0.5B model often answers with a neighbouring fact of the right passage).
        cited = {c["source"] for c in result["citations"]}
        assert cited and cited <= {p["source"] for p in result["retrieved"]}, (q["id"], cited, result["retrieved"])
        read = " ".join(p["text"] for p in result["retrieved"])
        strangers = [o["id"] for o in questions if o is not q and has(result["answer"], o) and not has(read, o)]
        assert has(result["answer"], q) or not strangers, (q["id"], result["answer"], strangers)
    right = [q["id"] for _, q, r in answered if has(r["answer"], q)]
    assert len(answered) >= len(results) * 3 // 4, [(q["id"], r["answer"]) for _, q, r in answered]
    assert len(right) >= len(answered) // 2, [(q["id"], r["answer"]) for _, q, r in answered]
