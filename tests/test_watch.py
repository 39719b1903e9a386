"""`qa ingest --watch` / Assistant.watch: the index follows the corpus folder as files are added, edited and
removed, through the ordinary incremental ingest (real watchdog, Chroma and SQLite; the hash embedder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qa.watch import ignored
from tests.conftest import ROOT, fake_settings
from tests.fakes import HashEmbedder, ScriptedGenerator

BASE = "Lighthouse log\n\nThe lamp was automated in 1990 and nobody lives there now.\n"


def wait_for(condition, what: str, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds:.0f}s: {what}")


@pytest.fixture
def watching(tmp_path):
    """An Assistant on a one-file corpus, watched in a thread; yields (assistant, corpus, reports, errors)."""
    from qa.api import Assistant

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "lighthouse.txt").write_text(BASE, encoding="utf-8")
    assistant = Assistant(fake_settings(tmp_path), generator=ScriptedGenerator(yes=None), embedder=HashEmbedder())
    reports, errors = [], []
    stop = threading.Event()
    thread = threading.Thread(target=assistant.watch, args=(stop, reports.append, errors.append, 0.3), daemon=True)
    thread.start()
    wait_for(lambda: reports, "the first sync")
    yield assistant, corpus, reports, errors
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "the watcher did not stop"
    assistant.store.close()


def sources(assistant) -> list[str]:
    return [d["source"] for d in assistant.documents()]


def top_source(assistant, query: str) -> str:
    return assistant.retriever.search(query, 1)[0].chunk.source


def test_added_edited_and_removed_files_reach_the_index(watching):
    assistant, corpus, reports, errors = watching
    assert reports[0].added == ["lighthouse.txt"]

    orchard = corpus / "orchard.txt"
    orchard.write_text("Hillside Orchard\n\nThe Hillside orchard grows forty kinds of apples.\n", encoding="utf-8")
    # The report is appended when the ingest returns, a moment after the index shows the file: wait for both.
    wait_for(lambda: any(r.added == ["orchard.txt"] for r in reports), "the new file reported")
    assert "orchard.txt" in sources(assistant)

    orchard.write_text("Hillside Orchard\n\nPicking starts in September; visitors bring baskets.\n", encoding="utf-8")
    wait_for(lambda: any(r.updated == ["orchard.txt"] for r in reports), "the edit indexed")
    chunks = assistant.store.chunks_of("orchard.txt")
    assert any("baskets" in c.text for c in chunks) and not any("forty" in c.text for c in chunks)
    assert top_source(assistant, "visitors bring baskets in September") == "orchard.txt"

    orchard.unlink()
    wait_for(lambda: any(r.removed == ["orchard.txt"] for r in reports), "the removal reported")
    assert sources(assistant) == ["lighthouse.txt"]
    assert not errors


def test_a_burst_is_one_ingest_and_hidden_files_are_ignored(watching):
    assistant, corpus, reports, errors = watching
    before = len(reports)
    for n in range(5):  # five saves in quick succession
        (corpus / "notes.txt").write_text(f"Keeper's notes, draft {n}: the lamp is cleaned weekly.\n", encoding="utf-8")
        time.sleep(0.02)
    wait_for(lambda: len(reports) > before, "the burst reported")
    assert "notes.txt" in sources(assistant)
    time.sleep(0.8)  # longer than the quiet spell: a second ingest would have run by now
    assert len(reports) == before + 1
    assert reports[-1].added == ["notes.txt"]

    (corpus / ".notes.txt.upload").write_text("a half-saved upload\n", encoding="utf-8")
    (corpus / ".cache").mkdir()
    (corpus / ".cache" / "x.txt").write_text("an editor's file\n", encoding="utf-8")
    time.sleep(1.0)
    assert len(reports) == before + 1, "a hidden file started an ingest"
    assert not errors


def test_an_ingest_error_is_reported_and_the_watch_goes_on(watching):
    assistant, corpus, reports, errors = watching
    (corpus / "lighthouse.txt").unlink()  # no file left: the ingest raises CorpusError
    wait_for(lambda: errors, "the error reported")
    assert "no" in str(errors[0]).lower()
    (corpus / "again.txt").write_text("The lamp was lit again in 2024 for the festival.\n", encoding="utf-8")
    wait_for(lambda: sources(assistant) == ["again.txt"], "the watch went on after the error")


def test_ignored_paths(tmp_path):
    root, index = tmp_path / "corpus", tmp_path / "corpus" / "vectorstore"
    assert not ignored(str(root / "a.txt"), root, index)
    assert not ignored(str(root / "sub" / "a.txt"), root, index)
    assert ignored(str(root / ".a.txt.upload"), root, index)
    assert ignored(str(root / ".git" / "HEAD"), root, index)
    assert ignored(str(index / "chroma.sqlite3"), root, index)


@pytest.mark.model
def test_qa_ingest_watch_on_the_command_line(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "lighthouse.txt").write_text(BASE, encoding="utf-8")
    env = {**os.environ, "QA_VECTORSTORE": str(tmp_path / "index"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "qa.cli", "ingest", str(corpus), "--watch"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("1 added") for line in lines), "the first summary", 120)
        (corpus / "orchard.txt").write_text("The Hillside orchard grows forty kinds of apples.\n", encoding="utf-8")
        wait_for(lambda: sum(line.startswith("1 added") for line in lines) == 2, "the new file's summary", 60)
        (corpus / "orchard.txt").unlink()
        wait_for(lambda: any(line.startswith("0 added, 0 updated, 1 removed") for line in lines), "the removal", 60)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert Path(tmp_path / "index").exists()
