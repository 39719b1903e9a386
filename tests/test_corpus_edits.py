"""Adding and removing documents through the API (what the UI's upload and remove buttons call)."""

from __future__ import annotations

import pytest

from qa.documents import safe_filename
from qa.errors import DocumentError


@pytest.mark.parametrize(
    "name,expected",
    [
        ("../../x.txt", "x.txt"),
        ("/etc/passwd.txt", "passwd.txt"),
        ("..\\..\\win.md", "win.md"),
        ("re\u0301sume\u0301.txt", "résumé.txt"),
        ("bad\x00name\u202e.txt", "badname.txt"),
        ("  notes .md", "notes .md"),
    ],
)
def test_upload_names_cannot_leave_the_corpus(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["..", "evil.exe", "noext", ".txt"])
def test_unusable_upload_names_are_refused(name):
    with pytest.raises(DocumentError):
        safe_filename(name)


def test_an_added_file_lands_in_the_corpus_and_is_indexed(assistant, corpus, tmp_path):
    (corpus / "a.txt").write_text("Apples grow in the orchard.\n")
    assistant.ingest()
    upload = tmp_path / "upload.bin"
    upload.write_text("Pears ripen in September in the north orchard.\n")
    report = assistant.add_document(upload, "../../pears.txt")
    assert report.added == ["pears.txt"] and (corpus / "pears.txt").is_file()
    assert not (tmp_path / "pears.txt").exists()


def test_a_broken_upload_changes_nothing(assistant, corpus, tmp_path):
    (corpus / "a.txt").write_text("Apples grow in the orchard.\n")
    assistant.ingest()
    bad = tmp_path / "upload.bin"
    bad.write_bytes(b"\x00\x01" * 300)
    with pytest.raises(DocumentError, match="a.txt: binary"):
        assistant.add_document(bad, "a.txt")  # would replace a good file: refused before touching it
    assert (corpus / "a.txt").read_text() == "Apples grow in the orchard.\n"
    assert [d["source"] for d in assistant.documents()] == ["a.txt"]


def test_removing_a_document_drops_its_chunks(assistant, corpus):
    (corpus / "a.txt").write_text("Apples grow in the orchard.\n")
    (corpus / "b.txt").write_text("Bees live in the hives.\n")
    assistant.ingest()
    report = assistant.remove_document("b.txt")
    assert report.removed == ["b.txt"] and [d["source"] for d in assistant.documents()] == ["a.txt"]
    with pytest.raises(DocumentError):
        assistant.remove_document("../outside.txt")
