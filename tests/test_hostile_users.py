"""Hostile users and hostile documents at the edges (issue 19): uploads that would replace, overflow or slip into
the corpus unindexed; a UI login that fails open; document text that makes the reader's browser fetch a URL."""

from __future__ import annotations

import re

import pytest

from qa.documents import safe_filename
from qa.errors import DocumentError, IndexBusyError

EXISTING = "000_6f09b0eae4eaabc4.txt"


# ---- uploads ---------------------------------------------------------------------------------------------------
def _indexed_text(assistant, source: str) -> str:
    return " ".join(c.text for c in assistant.store.chunks_of(source))


def test_an_upload_named_like_a_corpus_file_is_saved_beside_it_not_over_it(assistant, corpus, tmp_path):
    (corpus / EXISTING).write_text("The granary stored 900 sacks of barley.\n")
    assistant.ingest()
    upload = tmp_path / "upload.bin"
    upload.write_text("The ferry to the island leaves at noon.\n")
    report = assistant.add_document(upload, EXISTING)
    kept = "000_6f09b0eae4eaabc4 (2).txt"
    assert (corpus / EXISTING).read_text() == "The granary stored 900 sacks of barley.\n"
    assert (corpus / kept).read_text() == "The ferry to the island leaves at noon.\n"
    assert report.outcome == "renamed" and report.source == kept and report.added == [kept]
    assert [d["source"] for d in assistant.documents()] == [kept, EXISTING]
    assert "granary" in _indexed_text(assistant, EXISTING)

    # the same bytes again: already there, nothing added
    again = assistant.add_document(upload, EXISTING)
    assert again.outcome == "unchanged" and again.source == kept
    assert sorted(p.name for p in corpus.iterdir()) == [kept, EXISTING]


def test_replace_keeps_the_old_file_until_the_new_one_is_indexed(assistant, corpus, tmp_path):
    (corpus / "a.txt").write_text("The granary stored 900 sacks of barley.\n")
    assistant.ingest()
    new = tmp_path / "new.txt"
    new.write_text("The granary stored 450 sacks of rye.\n")
    # indexing fails (another ingest holds the index): the old file is back, byte for byte, and still indexed
    with assistant._open_store(verify=False).write_lock():
        with pytest.raises(IndexBusyError, match="a.txt was not added.*try again"):
            assistant.add_document(new, "a.txt", replace=True)
    assert (corpus / "a.txt").read_text() == "The granary stored 900 sacks of barley.\n"
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt"]
    assert assistant.ingest().unchanged == ["a.txt"]  # the index still matches the file: nothing to redo
    assert "900 sacks" in _indexed_text(assistant, "a.txt")

    report = assistant.add_document(new, "a.txt", replace=True)
    assert report.outcome == "replaced" and report.updated == ["a.txt"]
    assert (corpus / "a.txt").read_text() == "The granary stored 450 sacks of rye.\n"
    assert "450 sacks" in _indexed_text(assistant, "a.txt") and sorted(p.name for p in corpus.iterdir()) == ["a.txt"]


def test_an_upload_refused_during_another_ingest_leaves_corpus_and_index_as_they_were(assistant, corpus, tmp_path):
    (corpus / "a.txt").write_text("Apples grow in the orchard.\n")
    assistant.ingest()
    upload = tmp_path / "pears.txt"
    upload.write_text("Pears ripen in September.\n")
    with assistant._open_store(verify=False).write_lock():  # e.g. the UI's own ingest of another upload
        with pytest.raises(IndexBusyError) as refused:
            assistant.add_document(upload, "pears.txt")
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt"]
    assert [d["source"] for d in assistant.documents()] == ["a.txt"]
    assert re.match(r"pears.txt was not added: .* try again when it finishes$", str(refused.value))
    assert assistant.add_document(upload, "pears.txt").added == ["pears.txt"]  # the retry works


def test_a_too_large_upload_is_refused_before_it_is_copied(settings, corpus, tmp_path):
    from qa.api import Assistant

    assistant = Assistant(settings.replace(max_file_mb=0.01))  # 10 kB
    upload = tmp_path / "big.txt"
    upload.write_text("The harbour master keeps a log of every ship.\n" * 1000)  # 46 kB
    with pytest.raises(DocumentError, match=r"big.txt: 46,000 bytes is larger than the 0.01 MB limit \(max_file_mb\)"):
        assistant.add_document(upload, "big.txt")
    assert list(corpus.iterdir()) == []


@pytest.mark.parametrize("name", ["😀" * 100 + ".txt", "a" * 300 + ".md", "é" * 150 + ".html"])
def test_a_long_upload_name_is_cut_to_fit_the_file_system_and_keeps_its_type(name):
    safe = safe_filename(name)
    assert len(safe.encode("utf-8")) <= 200 and safe.endswith(name[name.rindex(".") :])
    assert name.startswith(safe[: safe.rindex(".")])


def test_an_upload_with_a_long_emoji_name_is_saved_and_indexed(assistant, corpus, tmp_path):
    upload = tmp_path / "x.txt"
    upload.write_text("The lighthouse was painted green in 1987.\n")
    report = assistant.add_document(upload, "😀" * 100 + ".txt")
    assert report.added == [report.source] and (corpus / report.source).is_file()
    # a second one of that name gets " (2)" and still fits
    upload.write_text("The lighthouse keeper retired in 1990.\n")
    second = assistant.add_document(upload, "😀" * 100 + ".txt")
    assert second.outcome == "renamed" and second.source.endswith(" (2).txt") and (corpus / second.source).is_file()
