"""Two hosts, one Chroma server (issue 17): each host has its own QA_VECTORSTORE folder, and one real `chroma run`
on 127.0.0.1 holds the index. A host that never ingested must answer from the server exactly as the host that
did; two hosts' ingests must not collide; a killed ingester and a restarted server must leave an index that the
next ingest completes. The embedder is the HashEmbedder fake (same vectors in every process), so what is tested
is the store: the server as the source of truth, the host's cache of it, and the writer lease."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import chromadb
import pytest

from qa.api import Assistant
from qa.errors import IndexBusyError
from tests.conftest import ROOT, SEEDS, fake_settings, run_qa
from tests.fakes import HashEmbedder
from tests.test_chroma_server import chroma_server  # noqa: F401 (fixture)
from tests.test_faults import write_report_corpus

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

QUESTIONS = [json.loads(line)["question"] for line in (ROOT / "eval" / "questions.jsonl").read_text().splitlines()[:12]]


def host(tmp_path: Path, name: str, url: str, corpus: Path, **overrides) -> Assistant:
    """A host: its own index folder (its cache), the shared server, the fake embedder."""
    settings = fake_settings(
        tmp_path, vectorstore=tmp_path / name, corpus=corpus, chroma_url=url, store_timeout=5, **overrides
    )
    return Assistant(settings, embedder=HashEmbedder())


def ranked(assistant: Assistant, question: str) -> list[tuple]:
    """The hybrid ranking of a question, with each chunk's text and place: what the answer is written from."""
    return [
        (p.chunk.id, p.chunk.source, p.chunk.start_line, p.chunk.end_line, p.chunk.page, p.chunk.text)
        for p in assistant.retriever.search(question, 6, mode="hybrid")
    ]


def server_state(url: str, collection: str = "qa_chunks") -> tuple[list[str], dict[str, str]]:
    """What the server holds: every chunk id (a list, so duplicates would show) and {file: manifest state}."""
    port = int(url.rsplit(":", 1)[1])
    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    if collection not in [c.name for c in client.list_collections()]:
        return [], {}  # nothing written yet
    ids = client.get_collection(collection).get(include=[])["ids"]
    files = client.get_collection(f"{collection}-files").get(where={"kind": "file"}, include=["metadatas"])
    return ids, {m["source"]: m["state"] for m in files["metadatas"]}


def clean_ids(tmp_path: Path, corpus: Path) -> set[str]:
    """The chunk ids of one clean ingest of `corpus` (embedded, in a folder of its own)."""
    clean = Assistant(fake_settings(tmp_path / "clean", corpus=corpus), embedder=HashEmbedder())
    clean.ingest()
    ids = {r[0] for r in clean.store.db.execute("SELECT id FROM chunks")}
    clean.store.close()
    return ids


def cache_ids(assistant: Assistant) -> list[str]:
    return [r[0] for r in assistant.store.db.execute("SELECT id FROM chunks")]


# An ingest in a process of its own, as another host runs it: the fake embedder, slowed down so that the test can
# act in the middle. Prints the report as JSON, or the error's one line with exit code 2.
INGEST = """
import json, socket, sys, time
from pathlib import Path
from qa.api import Assistant
from qa.errors import QAError
from tests.conftest import fake_settings
from tests.fakes import HashEmbedder

class Slow(HashEmbedder):
    def embed_documents(self, texts):
        time.sleep(DELAY)
        return super().embed_documents(texts)

overrides = json.loads(sys.argv[1])
DELAY = overrides.pop("delay")
# Another machine: its lease is never taken as a dead local process's, only once it has expired.
HOST = overrides.pop("hostname")
socket.gethostname = lambda: HOST
root = Path(overrides.pop("root"))
settings = fake_settings(root, **{k: Path(v) if k in ("vectorstore", "corpus") else v for k, v in overrides.items()})
try:
    print(json.dumps(Assistant(settings, embedder=Slow()).ingest().to_dict()), flush=True)
except QAError as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)
"""


def start_ingest(tmp_path: Path, name: str, url: str, corpus: Path, delay: float, **overrides) -> subprocess.Popen:
    args = {
        "root": str(tmp_path),
        "vectorstore": str(tmp_path / name),
        "corpus": str(corpus),
        "chroma_url": url,
        "store_timeout": 5,
        "embed_batch": 8,
        "delay": delay,
        "hostname": name,
        **overrides,
    }
    return subprocess.Popen(
        [sys.executable, "-c", INGEST, json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


# ---- the server is the source of truth ----------------------------------------------------------------------------


def test_a_host_that_never_ingested_retrieves_exactly_what_the_ingesting_host_does(tmp_path, chroma_server):  # noqa: F811
    corpus = tmp_path / "corpus"
    import shutil

    shutil.copytree(SEEDS, corpus)
    a = host(tmp_path, "host-a", chroma_server.url, corpus)
    report = a.ingest()
    assert len(report.added) == 5 and not report.failed
    b = host(tmp_path, "host-b", chroma_server.url, corpus)  # an empty folder: it never ingested
    for question in QUESTIONS:
        got = ranked(b, question)
        assert got and got == ranked(a, question), question
    status = b.status()
    assert (status["files"], status["chunks"], status["vectors"]) == (5, report.chunks, report.chunks)
    assert "problem" not in status

    # `qa status` on host B, as its user runs it: the real counts, not "files 0, chunks 0".
    result = run_qa(
        "status", "--json", "--vectorstore", str(tmp_path / "host-b"), "--chroma-url", chroma_server.url,
        "--embed-model", a.settings.embed_model, "--embed-backend", "torch", "--corpus", str(corpus),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["files"], shown["chunks"], shown["vectors"]) == (5, report.chunks, report.chunks)

    # A changes the corpus; B, still open, is in step before its next question (one stamp read when nothing moved).
    assert b.store.sync() is False
    (corpus / "003_ea54bc5b20390dd3.txt").unlink()
    edited = corpus / "000_6f09b0eae4eaabc4.txt"
    edited.write_text(edited.read_text() + "\n\nThe quartermaster counted forty-two zeppelins over Ashraf.\n")
    again = a.ingest()
    assert again.removed == ["003_ea54bc5b20390dd3.txt"] and again.updated == ["000_6f09b0eae4eaabc4.txt"]
    assert b.store.sync() is True
    for question in [*QUESTIONS, "How many zeppelins did the quartermaster count?"]:
        assert ranked(b, question) == ranked(a, question), question
    assert ranked(b, "How many zeppelins did the quartermaster count?")[0][5].endswith("zeppelins over Ashraf.")
    assert sorted(cache_ids(b)) == sorted(cache_ids(a))
    assert b.status()["files"] == 4


def test_embedded_mode_keeps_no_server_collections_and_a_host_cache_rebuilds_from_nothing(tmp_path, chroma_server):  # noqa: F811
    """A host whose cache file is deleted (a new disk, a wiped folder) builds it again from the server on open."""
    corpus = tmp_path / "corpus"
    write_report_corpus(corpus, files=12)
    a = host(tmp_path, "host-a", chroma_server.url, corpus)
    a.ingest()
    before = sorted(cache_ids(a))
    a.store.close()
    import shutil

    shutil.rmtree(tmp_path / "host-a")
    again = host(tmp_path, "host-a", chroma_server.url, corpus)
    assert sorted(cache_ids(again)) == before
    report = again.ingest()
    assert report.chunks == 0 and len(report.unchanged) == 12  # nothing re-embedded: the manifest came back too


# ---- writers on two hosts -----------------------------------------------------------------------------------------


def test_two_hosts_ingesting_at_the_same_moment_end_with_one_clean_index(tmp_path, chroma_server):  # noqa: F811
    corpus = tmp_path / "corpus"
    write_report_corpus(corpus, files=40)
    runs = [
        start_ingest(tmp_path, name, chroma_server.url, corpus, delay=0.3, lock_wait=120)
        for name in ("host-a", "host-b")
    ]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=240)
        assert run.returncode == 0, err
        reports.append(json.loads(out))
    # One host indexed everything; the other waited for its lease, then found every file already indexed.
    assert sorted(len(r["added"]) for r in reports) == [0, 40]
    assert sorted(len(r["unchanged"]) for r in reports) == [0, 40]
    ids, files = server_state(chroma_server.url)
    assert len(ids) == len(set(ids)) and set(ids) == clean_ids(tmp_path, corpus)
    assert set(files.values()) == {"done"} and len(files) == 40
    for name in ("host-a", "host-b"):
        h = host(tmp_path, name, chroma_server.url, corpus)
        assert set(cache_ids(h)) == set(ids) and h.status()["chunks"] == len(ids)


def test_a_second_host_that_does_not_wait_is_refused_with_the_owner_named(tmp_path, chroma_server):  # noqa: F811
    corpus = tmp_path / "corpus"
    write_report_corpus(corpus, files=3)
    a = host(tmp_path, "host-a", chroma_server.url, corpus)
    b = host(tmp_path, "host-b", chroma_server.url, corpus)
    with a.store.write_lock():  # host A is writing
        with pytest.raises(IndexBusyError, match=f"being written by {socket.gethostname()} pid {os.getpid()}"):
            b.ingest()
        # the same from the CLI: one line, exit 2, no traceback
        result = run_qa(
            "ingest", str(corpus), "--vectorstore", str(tmp_path / "host-b"), "--chroma-url", chroma_server.url,
            "--embed-model", a.settings.embed_model, "--embed-backend", "torch",
        )  # fmt: skip
        assert result.returncode == 2 and f"pid {os.getpid()}" in result.stderr
        assert "Traceback" not in result.stderr
    assert len(b.ingest().added) == 3  # released: B writes now


def test_a_killed_ingester_s_lease_expires_and_another_host_completes_the_index(tmp_path, chroma_server):  # noqa: F811
    corpus = tmp_path / "corpus"
    write_report_corpus(corpus, files=40)
    run = start_ingest(tmp_path, "host-a", chroma_server.url, corpus, delay=1.0, lease_seconds=3)
    # kill -9 once the server holds some files done and A is still writing
    wait_for(lambda: "done" in server_state(chroma_server.url)[1].values(), 120, "host A's first files")
    assert run.poll() is None
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    ids, files = server_state(chroma_server.url)
    assert 0 < list(files.values()).count("done") < 40

    b = host(tmp_path, "host-b", chroma_server.url, corpus, lease_seconds=3)
    with pytest.raises(IndexBusyError, match=f"being written by host-a pid {run.pid}"):
        b.ingest()  # A's lease has not run out yet, and B does not wait
    b = host(tmp_path, "host-b", chroma_server.url, corpus, lease_seconds=3, lock_wait=60)
    report = b.ingest()  # waits for A's lease to expire
    assert not report.failed and len(report.added) + len(report.repaired) >= 40 - list(files.values()).count("done")
    ids, files = server_state(chroma_server.url)
    assert len(ids) == len(set(ids)) and set(ids) == clean_ids(tmp_path, corpus)
    assert set(files.values()) == {"done"} and len(files) == 40
    a = host(tmp_path, "host-a", chroma_server.url, corpus)  # A's cache, left mid-write, is in step again
    assert set(cache_ids(a)) == set(ids) and a.status()["files"] == 40


def test_a_server_restart_mid_ingest_is_completed_by_the_next_ingest(tmp_path, chroma_server):  # noqa: F811
    corpus = tmp_path / "corpus"
    write_report_corpus(corpus, files=40)
    run = start_ingest(tmp_path, "host-a", chroma_server.url, corpus, delay=1.0, lease_seconds=3)
    wait_for(lambda: "done" in server_state(chroma_server.url)[1].values(), 120, "host A's first files")
    chroma_server.stop()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2 and f"Chroma server at {chroma_server.url} is not reachable" in err
    assert "Traceback" not in err
    chroma_server.start()  # same port, same data folder
    b = host(tmp_path, "host-b", chroma_server.url, corpus, lease_seconds=3, lock_wait=60)
    report = b.ingest()
    assert not report.failed
    ids, files = server_state(chroma_server.url)
    assert len(ids) == len(set(ids)) and set(ids) == clean_ids(tmp_path, corpus)
    assert set(files.values()) == {"done"} and len(files) == 40
    for question in QUESTIONS[:4]:
        a = host(tmp_path, "host-a", chroma_server.url, corpus)
        assert ranked(a, question) == ranked(b, question)


def test_a_rebuild_on_one_host_is_picked_up_by_another_at_its_next_question(tmp_path, chroma_server):  # noqa: F811
    corpus = tmp_path / "corpus"
    write_report_corpus(corpus, files=12)
    a = host(tmp_path, "host-a", chroma_server.url, corpus)
    a.ingest()
    b = host(tmp_path, "host-b", chroma_server.url, corpus)
    question = "Which granary was repaired in Ostrava?"
    before = ranked(b, question)
    (corpus / "extra.txt").write_text("The Ostrava granary was repaired by the lighthouse keeper's cousin.\n")
    report = a.ingest(rebuild=True)  # new collections swapped in under the same names
    assert len(report.added) == 13
    assert b.store.sync() is True  # B's handles named the old collections, which are gone: it opens the new ones
    after = ranked(b, question)
    assert after == ranked(a, question) and after != before
    assert "extra.txt" in {row[1] for row in after}
    assert b.status()["files"] == 13
