"""Ingest with the real shipped model and a real embedded Chroma: incremental, idempotent, crash-safe."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from qa.api import Assistant
from qa.errors import IndexBusyError, IndexMismatchError
from tests.conftest import ROOT, real_embedder_only, run_qa
from tests.pdfgen import write_pdf


def index_state(assistant):
    """Everything a clean run determines: chunk ids and texts on both sides of the index."""
    store = assistant.store
    sqlite_ids = {r[0]: r[1] for r in store.db.execute("SELECT id, text FROM chunks")}
    chroma = store.collection.get(include=["documents"])
    chroma_ids = dict(zip(chroma["ids"], chroma["documents"], strict=True))
    assert len(chroma["ids"]) == len(set(chroma["ids"])), "duplicate vectors in Chroma"
    return sqlite_ids, chroma_ids, {s: r.hash for s, r in store.files().items()}


@real_embedder_only  # the dense hit below needs the model's sense of meaning
def test_seeds_are_indexed_and_searchable(assistant, seed_corpus):
    report = assistant.ingest()
    assert sorted(report.added) == sorted(p.name for p in seed_corpus.iterdir())
    assert report.failed == [] and report.chunks > 10
    status = assistant.status()
    assert status["files"] == 5 and status["vectors"] == status["chunks"] == report.chunks
    hits = assistant.retriever.search("Who turned down the asylum offer from Albania?", 3, mode="dense")
    assert hits[0].chunk.source in {"001_67768c06cffa3221.txt", "000_6f09b0eae4eaabc4.txt"}


def test_second_run_changes_nothing_and_embeds_nothing(assistant, seed_corpus):
    assistant.ingest()
    before = index_state(assistant)
    report = assistant.ingest()
    assert report.chunks == 0 and len(report.unchanged) == 5
    assert not (report.added or report.updated or report.removed or report.failed)
    assert index_state(assistant) == before


def test_touched_but_unchanged_file_is_not_re_embedded(assistant, seed_corpus):
    assistant.ingest()
    path = seed_corpus / "003_ea54bc5b20390dd3.txt"
    os.utime(path, (time.time() + 100, time.time() + 100))
    report = assistant.ingest()
    assert report.chunks == 0 and "003_ea54bc5b20390dd3.txt" in report.unchanged


def test_changed_file_replaces_its_old_chunks(assistant, corpus):
    (corpus / "a.txt").write_text("The lighthouse keeper fed the seagulls every morning.\n")
    (corpus / "b.txt").write_text("The baker sold rye bread at the market on Fridays.\n")
    assistant.ingest()
    (corpus / "a.txt").write_text("The lighthouse was automated in 1990 and nobody lives there now.\n")
    report = assistant.ingest()
    assert report.updated == ["a.txt"] and report.unchanged == ["b.txt"]
    texts = [c.text for c in assistant.store.chunks_of("a.txt")]
    assert texts == ["The lighthouse was automated in 1990 and nobody lives there now."]
    found = assistant.retriever.search("seagulls", 5, mode="bm25")
    assert all("seagulls" not in p.chunk.text for p in found)
    _, chroma, _ = index_state(assistant)
    assert sum("seagulls" in t for t in chroma.values()) == 0


def test_deleted_file_disappears_from_the_index(assistant, corpus):
    (corpus / "a.txt").write_text("Alpha document about volcanoes erupting.\n")
    (corpus / "b.txt").write_text("Beta document about glaciers melting.\n")
    assistant.ingest()
    (corpus / "b.txt").unlink()
    report = assistant.ingest()
    assert report.removed == ["b.txt"]
    sqlite_ids, chroma_ids, files = index_state(assistant)
    assert list(files) == ["a.txt"] and sqlite_ids.keys() == chroma_ids.keys()
    assert all(p.chunk.source == "a.txt" for p in assistant.retriever.search("glaciers", 5))


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_indexed(assistant, corpus, tmp_path):
    (corpus / "good.txt").write_text("Good text about the harbour and its fishing boats.\n")
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "junk.txt").write_bytes(os.urandom(4000))
    (corpus / "nul.md").write_bytes(b"abc\x00def\x00" * 100)
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.7\n garbage garbage")
    (corpus / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    locked = corpus / "locked.txt"
    locked.write_text("cannot read me")
    locked.chmod(0)
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(write_pdf(tmp_path / "p.pdf", [["secret"]])).pages:
        writer.add_page(page)
    writer.encrypt("pw")
    with open(corpus / "encrypted.pdf", "wb") as out:
        writer.write(out)
    try:
        report = assistant.ingest()
    finally:
        locked.chmod(0o644)
    reasons = dict(report.failed)
    readable_anyway = ["locked.txt"] if os.geteuid() == 0 else []  # root reads any file, whatever its mode
    assert report.added == ["good.txt", *readable_anyway]
    assert reasons["empty.txt"] == "empty file"
    assert "binary" in reasons["junk.txt"] and "binary" in reasons["nul.md"]
    assert "corrupt PDF" in reasons["corrupt.pdf"]
    assert "encrypted PDF" in reasons["encrypted.pdf"]
    assert reasons["dangling.txt"] == "broken symlink"
    if not readable_anyway:
        assert reasons["locked.txt"] == "permission denied"
    assert assistant.status()["files"] == 1 + len(readable_anyway)


def test_a_file_that_breaks_keeps_its_last_good_version(assistant, corpus):
    (corpus / "a.txt").write_text("The orchard grows forty kinds of apples.\n")
    assistant.ingest()
    (corpus / "a.txt").write_bytes(b"\x00\x01\x02" * 500)
    report = assistant.ingest()
    assert report.failed == [("a.txt", "binary file (contains NUL bytes) (kept the previously indexed version)")]
    assert [c.text for c in assistant.store.chunks_of("a.txt")] == ["The orchard grows forty kinds of apples."]


@pytest.mark.model
def test_opening_an_index_with_another_model_is_a_clear_error(settings, seed_corpus):
    first = Assistant(settings)
    first.ingest()
    first.store.close()
    other = Assistant(settings.replace(embed_model="some-other-model"))
    with pytest.raises(IndexMismatchError, match=r"built with embedding model 'all-MiniLM-L6-v2 \(onnx-int8\)'"):
        other.status()
    # Same model, other backend: int8 and fp32 vectors differ slightly, so they are not mixed in one index.
    torch_backend = Assistant(settings.replace(embed_backend="torch"))
    with pytest.raises(IndexMismatchError, match=r"not 'all-MiniLM-L6-v2'. Run `qa ingest --rebuild`"):
        torch_backend.status()


@pytest.mark.model
def test_every_embedding_backend_finds_the_same_passages(settings, seed_corpus):
    """The int8 default embeds like the shipped fp32 weights (the speed/quality figures are in eval/results)."""
    questions = [
        "Which country offered asylum to the opposition leader?",
        "How many people died?",
        "What did the State Department say?",
    ]
    tops, vectors = {}, {}
    for backend in ("onnx-int8", "torch"):
        a = Assistant(settings.replace(embed_backend=backend, vectorstore=settings.vectorstore / backend))
        a.ingest()
        tops[backend] = [a.retriever.search(q, 1, mode="dense")[0].chunk.id for q in questions]
        vectors[backend] = a.embedder.embed_documents([c.text for c in a.store.chunks_of("000_6f09b0eae4eaabc4.txt")])
        a.store.close()
    assert tops["onnx-int8"] == tops["torch"]
    assert (vectors["onnx-int8"] * vectors["torch"]).sum(axis=1).min() > 0.97


def test_rebuild_re_embeds_everything(assistant, seed_corpus):
    first = assistant.ingest()
    again = assistant.ingest(rebuild=True)
    assert sorted(again.added) == sorted(first.added) and again.chunks == first.chunks
    assert assistant.status()["vectors"] == first.chunks


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(assistant, seed_corpus):
    assistant.ingest()
    with assistant.store.write_lock():
        second = Assistant(assistant.settings)
        with pytest.raises(IndexBusyError, match="being written by pid"):
            second.ingest()


@pytest.mark.model
def test_cli_ingest_prints_the_summary_line(settings, seed_corpus):
    env = {"QA_VECTORSTORE": str(settings.vectorstore)}
    result = run_qa("ingest", str(seed_corpus), env=env)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("5 added, 0 updated, 0 removed, 0 unchanged, 0 failed;")
    again = run_qa("ingest", str(seed_corpus), env=env)
    assert again.stdout.strip().splitlines()[-1].startswith("0 added, 0 updated, 0 removed, 5 unchanged, 0 failed;")
    status = run_qa("status", "--json", env=env)
    assert '"files": 5' in status.stdout


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_cli_bad_corpus_is_one_clear_line(settings, tmp_path, make):
    target = tmp_path / "docs"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("not a folder")
    result = run_qa("ingest", str(target), "--vectorstore", str(settings.vectorstore))
    assert result.returncode == 2
    assert result.stderr.startswith("error: corpus") and str(target) in result.stderr
    assert "Traceback" not in result.stderr


def _write_many(folder, n):
    words = "river bank loan interest harbour ship cargo crane winter frost".split()
    for i in range(n):
        body = "\n".join(
            f"Document {i} line {j}: the {words[(i + j) % 10]} and the {words[(i * j) % 10]} "
            f"were counted {i * 31 + j} times in report {i}-{j}."
            for j in range(40)
        )
        (folder / f"doc{i:03d}.txt").write_text(body)


@pytest.mark.model
@pytest.mark.parametrize("kill_after_done", [0, 3, 12])
def test_kill_9_mid_ingest_is_repaired_to_what_a_clean_run_produces(settings, corpus, tmp_path, kill_after_done):
    _write_many(corpus, 24)
    env = {**os.environ, "QA_VECTORSTORE": str(settings.vectorstore), "QA_EMBED_BATCH": "4", "QA_CORPUS": str(corpus)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "ingest"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = settings.vectorstore / "qa.sqlite3"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db, timeout=1) as con:
                done = con.execute("SELECT COUNT(*) FROM files WHERE state='done'").fetchone()[0]
                pending = con.execute("SELECT COUNT(*) FROM files WHERE state='pending'").fetchone()[0]
        except sqlite3.Error:
            done = pending = 0
        # Kill while a group of files is being written (pending rows) when the poll catches it; a write takes
        # tens of milliseconds, so if two more files finish first, kill between writes instead.
        if done >= kill_after_done and (pending or kill_after_done == 0 or done >= kill_after_done + 2):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "ingest finished before it could be killed; make the corpus bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    resumed = Assistant(settings)
    report = resumed.ingest()
    assert not report.failed
    repaired_state = index_state(resumed)

    clean = Assistant(settings.replace(vectorstore=tmp_path / "clean"))
    clean.ingest()
    assert repaired_state == index_state(clean)
    assert resumed.status()["files"] == 24


def test_editing_one_paragraph_re_embeds_only_the_changed_chunks(assistant, seed_corpus):
    first = assistant.ingest()
    path = seed_corpus / "001_67768c06cffa3221.txt"
    text = path.read_text(encoding="utf-8")
    before = len(assistant.store.chunks_of(path.name))
    path.write_text(text + "\nA closing paragraph added by the editor about the harbour lights.\n", encoding="utf-8")
    report = assistant.ingest()
    assert report.updated == ["001_67768c06cffa3221.txt"]
    assert 1 <= report.chunks <= 2 and report.reused >= 3  # the untouched chunks kept their vectors
    assert "harbour lights" in " ".join(c.text for c in assistant.store.chunks_of("001_67768c06cffa3221.txt"))
    # A copy of a file under a new name costs no embedding at all, and is found like the original.
    (seed_corpus / "copy.txt").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    copied = assistant.ingest()
    assert copied.added == ["copy.txt"] and copied.chunks == 0 and copied.reused > 0
    status = assistant.status()
    assert (
        status["vectors"] == status["chunks"] == first.chunks - before + report.chunks + report.reused + copied.reused
    )
    hits = assistant.store.search_dense(assistant.embedder.embed_query(text[:300]), 2)
    assert {h.chunk.source for h in hits} == {"001_67768c06cffa3221.txt", "copy.txt"}
