"""Faults a deployment meets, caused for real: the Chroma server killed (SIGKILL) in the middle of an ingest and
while questions are being asked, and an OpenAI-compatible model endpoint whose process dies in the middle of
streaming an answer. Each time the user must get one clear line (never a traceback, never a silently wrong
answer), and once the part is back, qa must carry on with a complete, duplicate-free index."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qa.api import Assistant
from qa.chunking import chunk_document
from qa.documents import load_document
from qa.errors import GeneratorError, StoreUnavailableError
from tests.conftest import ROOT, run_qa, start_llama_server
from tests.test_chroma_server import ChromaServer, chroma_server  # noqa: F401 (fixture)
from tests.test_ui import free_port

pytestmark = [pytest.mark.server, pytest.mark.model]  # every test here starts a server and embeds for real
OFF_TOPIC = "What is the capital of France?"  # declined by the relevance gate: no model needed


# ---- the Chroma server killed during an ingest -------------------------------------------------------------


def write_report_corpus(folder: Path, files: int = 60) -> None:
    """`files` reports of ~3,000 characters each (about six chunks apiece), different enough to embed apart."""
    rng = random.Random(7)
    places = "Ostrava Brno Zlin Opava Kladno Most Jihlava Tabor Pisek Cheb Louny Beroun".split()
    things = "granary mill ferry bridge orchard foundry quarry tannery brewery lighthouse school clinic".split()
    verbs = "repaired inspected rebuilt painted closed reopened extended surveyed insured sold".split()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        paragraphs = []
        for _ in range(6):
            sentences = [
                f"In {rng.randint(1890, 2020)} the {rng.choice(things)} of {rng.choice(places)} was "
                f"{rng.choice(verbs)} by crew {rng.randint(1, 999)} for {rng.randint(10, 9000)} crowns."
                for _ in range(6)
            ]
            paragraphs.append(" ".join(sentences))
        (folder / f"report_{i:03d}.txt").write_text(f"Report {i}\n\n" + "\n\n".join(paragraphs) + "\n")


def expected_chunk_ids(folder: Path, settings) -> set[str]:
    """The chunk ids a clean ingest of `folder` produces (ids are deterministic: file, place, text)."""
    ids = set()
    for path in sorted(folder.iterdir()):
        doc = load_document(path, path.name)
        ids |= {c.id for c in chunk_document(doc, settings.chunk_size, settings.chunk_overlap)}
    return ids


def done_files(index: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index / 'qa.sqlite3'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM files WHERE state='done'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


@pytest.mark.timeout(300)
def test_killing_the_chroma_server_mid_ingest_is_one_clear_error_and_a_rerun_completes_the_index(
    tmp_path,
    settings,
    chroma_server,  # noqa: F811
):
    corpus = tmp_path / "reports"
    write_report_corpus(corpus)
    index = tmp_path / "index"
    env = {
        "QA_VECTORSTORE": str(index),
        "QA_CHROMA_URL": chroma_server.url,
        "QA_STORE_TIMEOUT": "5",
        "QA_EMBED_BATCH": "8",  # files are written in groups of 64 chunks: several writes to interrupt
    }
    ingest = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "ingest", str(corpus)],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill the server once the ingest has written some files, and not all of them.
    deadline = time.time() + 180
    while done_files(index) == 0 and ingest.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ingest.poll() is None, "the ingest finished before the server could be killed: make the corpus bigger"
    chroma_server.proc.kill()
    chroma_server.proc.wait(timeout=30)
    out, err = ingest.communicate(timeout=120)

    print("\ningest, server killed:", err.strip().splitlines()[-1])
    assert ingest.returncode == 2, (out, err)
    assert f"error: Chroma server at {chroma_server.url} is not reachable" in err
    assert "Traceback" not in err
    written = done_files(index)  # files indexed completely before the kill
    assert 0 < written < 60

    chroma_server.start()  # same path, same port
    again = run_qa("ingest", str(corpus), env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    print("ingest, server back:", again.stderr.strip().splitlines()[:3], again.stdout.strip())
    # what was complete is kept; the rest (including a file left half-written) is indexed now
    assert f"{60 - written} added, 0 updated, 0 removed, {written} unchanged, 0 failed" in again.stdout

    # Complete and duplicate-free: Chroma, the SQLite side index and a clean ingest hold exactly the same chunks.
    status = json.loads(run_qa("status", "--json", env=env).stdout)
    expected = expected_chunk_ids(corpus, settings)
    assert status["files"] == 60 and status["chunks"] == status["vectors"] == len(expected)
    with sqlite3.connect(index / "qa.sqlite3") as db:
        sqlite_ids = [r[0] for r in db.execute("SELECT id FROM chunks")]
        assert db.execute("SELECT COUNT(*) FROM files WHERE state != 'done'").fetchone()[0] == 0
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
    collection = client.get_collection("qa_chunks")
    got = collection.get(include=["metadatas", "embeddings"])
    chroma_ids = got["ids"]
    places = [(m["source"], m["start_char"]) for m in got["metadatas"]]
    assert len(chroma_ids) == len(set(chroma_ids)) == len(expected)
    assert len(places) == len(set(places)), "the same passage is stored twice"
    assert len(sqlite_ids) == len(set(sqlite_ids))
    assert set(chroma_ids) == set(sqlite_ids) == expected
    # and every vector is searchable: each chunk's own vector finds that chunk first
    found = collection.query(query_embeddings=got["embeddings"], n_results=1, include=[])
    assert [ids[0] for ids in found["ids"]] == chroma_ids


# ---- the Chroma server killed while questions are being asked ---------------------------------------------


@pytest.mark.timeout(180)
def test_killing_the_chroma_server_while_questions_are_asked(
    settings,
    seed_corpus,
    chroma_server,  # noqa: F811
):
    assistant = Assistant(settings.replace(chroma_url=chroma_server.url, store_timeout=5))
    assistant.ingest()
    before = [p.chunk.id for p in assistant.retriever.search("Who turned down the asylum offer?", 4)]
    assert assistant.ask(OFF_TOPIC).abstained

    outcome: dict = {"answers": 0}

    def keep_asking():
        while True:
            try:
                assert assistant.ask(OFF_TOPIC).abstained
                outcome["answers"] += 1
            except Exception as exc:  # noqa: BLE001 (the test asserts what it was)
                outcome["error"] = exc
                outcome["at"] = time.monotonic()
                return

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    chroma_server.proc.kill()
    chroma_server.proc.wait(timeout=30)
    asker.join(timeout=30)

    assert not asker.is_alive(), "a question hung after the server died"
    assert outcome["answers"] > 0
    error = outcome["error"]
    assert isinstance(error, StoreUnavailableError), repr(error)
    assert str(error).startswith(f"Chroma server at {chroma_server.url} is not reachable")
    assert outcome["at"] - killed_at < 5 + 2  # within store_timeout

    env = {
        "QA_VECTORSTORE": str(settings.vectorstore),
        "QA_CORPUS": str(seed_corpus),
        "QA_CHROMA_URL": chroma_server.url,
        "QA_STORE_TIMEOUT": "3",
    }
    down = run_qa("ask", "Who turned down the asylum offer?", env=env)
    print("\nasking, server killed:", repr(error), "/ qa ask:", down.stderr.strip())
    assert down.returncode == 2 and down.stdout == ""
    assert down.stderr.startswith(f"error: Chroma server at {chroma_server.url} is not reachable")
    assert "Traceback" not in down.stderr

    chroma_server.start()
    # The same process carries on by itself, with the same results as before the kill.
    assert [p.chunk.id for p in assistant.retriever.search("Who turned down the asylum offer?", 4)] == before
    assert assistant.ask(OFF_TOPIC).abstained
    status = assistant.status()
    assert status["vectors"] == status["chunks"] > 0


# ---- the model endpoint dies while streaming an answer ------------------------------------------------------

# A stand-in for a remote OpenAI-compatible server that crashes mid-answer: it accepts one request, streams two
# SSE events of a chat completion, then SIGKILLs itself. `chunked` framing is what llama.cpp's server, vLLM and
# OpenAI send; `close` (a body that ends when the connection closes) is what some proxies send.
DYING_ENDPOINT = r"""
import json, os, signal, socket, sys, time
port, framing = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen()
print("ready", flush=True)
conn, _ = srv.accept()
data = b""
while b"\r\n\r\n" not in data:
    data += conn.recv(65536)
head, _, body = data.partition(b"\r\n\r\n")
length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:"))
while len(body) < length:
    body += conn.recv(65536)
events = [
    ("data: " + json.dumps({"object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]})
     + "\n\n").encode()
    for t in ("Albania has agreed", " to take in")
]
if framing == "chunked":
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for e in events:
        conn.sendall(b"%x\r\n%s\r\n" % (len(e), e))
        time.sleep(0.3)
else:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    for e in events:
        conn.sendall(e)
        time.sleep(0.3)
os.kill(os.getpid(), signal.SIGKILL)
"""


def start_dying_endpoint(port: int, framing: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", DYING_ENDPOINT, str(port), framing], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


QUESTION = "Which organization does Shahin Gobadi belong to?"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_model_endpoint_that_dies_mid_answer_is_a_clear_error_and_the_next_question_works(settings, seed_corpus):
    pytest.importorskip("llama_cpp")
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    # 2 whole passages: the 0.5B model answers this question reliably from them (it rambles with the default 4,
    # and with the context stage's windows from 8 chunks); what this tests is the endpoint, not the context
    assistant = Assistant(
        settings.replace(
            llm="openai", llm_base_url=base, llm_model="qwen-0.5b", llm_timeout=20, top_k=2, context_tokens=0
        )
    )
    assistant.ingest()
    env = {
        "QA_VECTORSTORE": str(settings.vectorstore),
        "QA_CORPUS": str(seed_corpus),
        "QA_LLM": "openai",
        "QA_LLM_BASE_URL": base,
        "QA_LLM_MODEL": "qwen-0.5b",
        "QA_LLM_TIMEOUT": "20",
        "QA_TOP_K": "2",
        "QA_CONTEXT_TOKENS": "0",
    }
    for framing in ("chunked", "close"):
        # The Python API: the draft streams in, then the failure is a GeneratorError naming the endpoint.
        endpoint = start_dying_endpoint(port, framing)
        pieces = []
        with pytest.raises(GeneratorError, match=f"model endpoint {base}/chat/completions") as caught:
            for event in assistant.stream(QUESTION):
                if isinstance(event, str):
                    pieces.append(event)
        assert pieces == ["Albania has agreed", " to take in"], framing
        assert "stopped in the middle of its answer" in str(caught.value), framing
        assert endpoint.wait(timeout=10) == -9

        # The command line: one line, exit code 2, no traceback, no half answer on stdout.
        endpoint = start_dying_endpoint(port, framing)
        result = run_qa("ask", QUESTION, env=env)
        print(f"\nendpoint died ({framing}): qa ask -> {result.returncode}: {result.stderr.strip()}")
        assert result.returncode == 2, (framing, result.stdout, result.stderr)
        assert result.stderr.startswith(f"error: model endpoint {base}/chat/completions stopped in the middle")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stdout == ""
        assert endpoint.wait(timeout=10) == -9

    # The endpoint is back (a real llama.cpp server on the same address): the same Assistant answers again.
    server = start_llama_server("qwen2.5-coder-0.5b", "qwen-0.5b", port, settings.cache_dir)
    try:
        answer = assistant.ask(QUESTION)
        assert not answer.abstained, answer.raw
        assert "National Council of Resistance of Iran" in answer.text
        assert answer.citations and {c.source for c in answer.citations} == {"001_67768c06cffa3221.txt"}
        result = run_qa("ask", QUESTION, env=env)
        assert result.returncode == 0, result.stderr
        assert "National Council of Resistance of Iran" in result.stdout and "001_67768c06cffa3221.txt" in result.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
