"""Documents people actually have: Word, PowerPoint, EPUB, OpenDocument and RTF files, read and cited to a place a
person can find (a paragraph, a slide, a chapter), and broken ones skipped with a one-line reason."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from qa import documents
from qa.chunking import chunk_document
from qa.documents import load_document
from qa.errors import DocumentError
from tests.docgen import write_docx, write_epub, write_odt, write_pptx, write_rtf

# One fact per file, each in a place the test knows: (file, question, answer sentence, page, line)
FACTS = [
    (
        "budget.docx",
        "How much did the committee approve for the ferry repairs?",
        "The committee approved 4,200 euros for the ferry repairs.",
        None,
        2,
    ),
    ("budget.docx", "What does the harbour crane cost?", "Harbour crane | 7,300 euros", None, 5),
    ("lighthouse.pptx", "How tall is the lighthouse?", "The lighthouse is 52 metres tall.", 2, 2),
    ("lighthouse.pptx", "Who kept the lighthouse in 1901?", "1901 | Ada Lund", 2, 4),
    ("lighthouse.pptx", "Which storm should the speaker mention?", "Mention the storm of 1899 in the talk.", 2, 5),
    ("parrot.epub", "What was the parrot called?", "The parrot on the boat was called Pim.", 2, 2),
    ("garden.odt", "How many hours of sun do tomatoes need?", "Tomatoes need six hours of sun.", None, 2),
    ("garden.odt", "How often is basil watered?", "Basil | daily", None, 4),
    ("minutes.rtf", "When did the treasurer resign?", "The treasurer resigned on Friday.", None, 2),
]


def make_corpus(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    write_docx(
        folder / "budget.docx",
        ["Ferry budget", "The committee approved 4,200 euros for the ferry repairs.", "Members voted 7 to 2."],
        table=[["Item", "Cost"], ["Harbour crane", "7,300 euros"]],
        title="Ferry budget 2024",
    )
    write_pptx(
        folder / "lighthouse.pptx",
        [
            {"title": "The old lighthouse", "body": ["A talk for the harbour society"]},
            {
                "title": "Lighthouse facts",
                "body": ["The lighthouse is 52 metres tall."],
                "table": [["Year", "Keeper"], ["1901", "Ada Lund"]],
                "notes": "Mention the storm of 1899 in the talk.",
            },
        ],
    )
    write_epub(
        folder / "parrot.epub",
        "Sea Stories",
        [("Chapter One", ["The boat left at dawn."]), ("Chapter Two", ["The parrot on the boat was called Pim."])],
    )
    write_odt(
        folder / "garden.odt",
        "Garden notes",
        ["Tomatoes need six hours of sun."],
        [["Plant", "Water"], ["Basil", "daily"]],
    )
    write_rtf(folder / "minutes.rtf", ["Club minutes", "The treasurer resigned on Friday.", "Next meeting in May."])
    return folder


@pytest.fixture
def typed_corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.mark.parametrize("name, question, sentence, page, line", FACTS)
def test_each_type_is_read_and_cited_to_its_paragraph_slide_or_chapter(
    typed_corpus, name, question, sentence, page, line
):
    doc = load_document(typed_corpus / name, name)
    assert sentence in doc.text.split("\n")
    chunk = next(c for c in chunk_document(doc, 600, 100) if sentence in c.text)
    assert chunk.page == page
    # the sentence's own line number (a paragraph, or a line of the slide / chapter)
    at = doc.text.index(sentence)
    assert doc.line_map[doc.text.count("\n", 0, at)] == line
    assert chunk.start_line <= line <= chunk.end_line


def test_titles_come_from_the_files_metadata(typed_corpus):
    assert load_document(typed_corpus / "budget.docx", "budget.docx").title == "Ferry budget 2024"
    assert load_document(typed_corpus / "parrot.epub", "parrot.epub").title == "Sea Stories"


def test_a_slide_never_shares_a_passage_with_the_next(typed_corpus):
    doc = load_document(typed_corpus / "lighthouse.pptx", "lighthouse.pptx")
    chunks = chunk_document(doc, 600, 100)
    assert {c.page for c in chunks} == {1, 2}
    assert all("harbour society" not in c.text for c in chunks if c.page == 2)


def test_an_ebook_cover_without_text_is_not_a_chapter(typed_corpus):
    doc = load_document(typed_corpus / "parrot.epub", "parrot.epub")
    assert [page for _, _, page in doc.sections] == [1, 2]
    assert doc.text.startswith("Chapter One\nThe boat left at dawn.")


def _zip_with(member: str, payload: bytes, base: Path) -> bytes:
    """`base` (a zip package) with one more member added, stored uncompressed-size-wise as `payload`."""
    out = io.BytesIO()
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr(member, payload)
    return out.getvalue()


PACKAGES = ["budget.docx", "lighthouse.pptx", "parrot.epub", "garden.odt"]


@pytest.mark.parametrize("name", [*PACKAGES, "minutes.rtf"])
def test_a_zero_byte_file_is_refused_naming_it(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DocumentError, match=rf"^{name}: empty file$"):
        load_document(tmp_path / name, name)


@pytest.mark.parametrize("name", PACKAGES)
def test_a_corrupt_package_is_refused_naming_it(typed_corpus, tmp_path, name):
    good = (typed_corpus / name).read_bytes()
    for i, broken in enumerate([good[: len(good) // 2], b"PK\x03\x04" + b"garbage" * 50, b"not a zip at all " * 20]):
        path = tmp_path / f"{i}{Path(name).suffix}"
        path.write_bytes(broken)
        with pytest.raises(DocumentError) as err:
            load_document(path, path.name)
        message = str(err.value)
        assert message.startswith(f"{path.name}: corrupt ") and "\n" not in message, message


@pytest.mark.parametrize("name", ["budget.docx", "lighthouse.pptx"])
def test_a_password_protected_office_file_is_refused_with_the_reason(tmp_path, name):
    # Office encrypts a .docx / .pptx into an OLE compound file (the container of the old .doc / .ppt too).
    path = tmp_path / name
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4096)
    with pytest.raises(DocumentError, match=rf"^{name}: password-protected"):
        load_document(path, name)


def test_a_password_protected_odt_and_a_drm_epub_are_refused(typed_corpus, tmp_path):
    manifest = zipfile.ZipFile(typed_corpus / "garden.odt").read("META-INF/manifest.xml").decode()
    locked = manifest.replace(
        'manifest:full-path="content.xml"',
        'manifest:full-path="content.xml"><manifest:encryption-data manifest:checksum="x"/></manifest:file-entry'
        '><manifest:file-entry manifest:media-type="" manifest:full-path="dummy.xml"',
    )
    out = io.BytesIO()
    with zipfile.ZipFile(typed_corpus / "garden.odt") as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = locked.encode() if item.filename == "META-INF/manifest.xml" else src.read(item.filename)
            dst.writestr(item, data)
    (tmp_path / "locked.odt").write_bytes(out.getvalue())
    with pytest.raises(DocumentError, match=r"^locked.odt: password-protected OpenDocument file$"):
        load_document(tmp_path / "locked.odt", "locked.odt")

    drm = (
        '<encryption><EncryptedData><CipherData><CipherReference URI="EPUB/chap_1.xhtml"/></CipherData>'
        "</EncryptedData></encryption>"
    )
    (tmp_path / "drm.epub").write_bytes(
        _zip_with("META-INF/encryption.xml", drm.encode(), typed_corpus / "parrot.epub")
    )
    with pytest.raises(DocumentError, match=r"^drm.epub: DRM-protected EPUB"):
        load_document(tmp_path / "drm.epub", "drm.epub")


@pytest.mark.parametrize("name", PACKAGES)
def test_a_huge_embedded_image_is_refused_before_it_is_unpacked(typed_corpus, tmp_path, monkeypatch, name):
    """A few MB on disk that unpack to far more (a bomb, or a giant uncompressed picture) are not parsed; a normal
    picture is no problem. The limit is lowered here so the test does not have to write 512 MB."""
    picture = bytes(3_000_000)  # 3 MB of zeros: deflates to a few KB
    big = tmp_path / f"big{Path(name).suffix}"
    big.write_bytes(_zip_with("media/picture.bmp", picture, typed_corpus / name))
    assert big.stat().st_size < 100_000
    assert load_document(big, big.name).text  # under the real limit: read, picture ignored
    monkeypatch.setattr(documents, "MAX_UNPACKED_BYTES", 2_000_000)
    with pytest.raises(
        DocumentError, match=rf"^{big.name}: unpacks to \d MB \(largest part media/picture.bmp, 3 MB\), over the 2 MB"
    ):
        load_document(big, big.name)


def test_rtf_pictures_are_dropped_and_non_rtf_is_refused(tmp_path):
    picture = "{\\pict\\pngblip\\picw10\\pich10 " + "89504e47" * 20000 + "}"
    path = tmp_path / "pic.rtf"
    path.write_text("{\\rtf1\\ansi The boat is blue.\\par " + picture + " The sail is red.\\par}", encoding="ascii")
    doc = load_document(path, "pic.rtf")
    assert "The boat is blue." in doc.text and "The sail is red." in doc.text and "8950" not in doc.text
    (tmp_path / "fake.rtf").write_text("just text, not RTF")
    with pytest.raises(DocumentError, match=r"^fake.rtf: not an RTF file"):
        load_document(tmp_path / "fake.rtf", "fake.rtf")


def test_ingest_indexes_every_type_skips_broken_ones_and_answers_from_each(tmp_path):
    """Through the real Assistant (Chroma, SQLite, the checks) with the hash embedder and a scripted model."""
    from qa.api import Assistant
    from tests.conftest import fake_settings
    from tests.fakes import HashEmbedder, ScriptedGenerator

    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "empty.docx").write_bytes(b"")
    (corpus / "broken.pptx").write_bytes(b"PK\x03\x04 broken")
    (corpus / "old.doc").write_bytes(b"\xd0\xcf\x11\xe0")  # not a supported type: not even listed
    embedder, gen = HashEmbedder(), ScriptedGenerator(yes=1.0)
    # the gate on the hash embedder's cosine is not what this test is about
    settings = fake_settings(tmp_path, embedder, min_relevance=0.05)
    assistant = Assistant(settings, generator=gen, embedder=embedder)
    try:
        report = assistant.ingest()
        assert sorted(report.added) == sorted({name for name, *_ in FACTS})
        failed = dict(report.failed)
        assert failed == {"empty.docx": "empty file", "broken.pptx": failed["broken.pptx"]}
        assert failed["broken.pptx"].startswith("corrupt PowerPoint file")
        types = assistant.status()["types"]
        assert types == {"Word document": 1, "PowerPoint": 1, "EPUB e-book": 1, "OpenDocument text": 1, "Rich Text": 1}

        for name, question, sentence, page, line in FACTS:
            gen.enqueue(lambda messages, s=sentence: f"{s.replace(' | ', ' ')} [1].")
            answer = assistant.ask(question)
            top = answer.retrieved[0].chunk
            assert top.source == name, (question, [p.chunk.source for p in answer.retrieved])
            assert not answer.abstained, (question, answer.text)
            cited = answer.citations[0]
            assert (cited.source, cited.page) == (name, page)
            assert cited.start_line <= line <= cited.end_line

        # a file that breaks later keeps its last good version
        (corpus / "minutes.rtf").write_text("now garbage")
        report = assistant.ingest()
        assert dict(report.failed)["minutes.rtf"].endswith("(kept the previously indexed version)")
        assert "minutes.rtf" in [d["source"] for d in assistant.documents()]
    finally:
        assistant.store.close()


def test_a_scanned_pdf_is_read_by_ocr_with_its_page_numbers(tmp_path):
    from tests.docgen import write_scanned_pdf

    path = write_scanned_pdf(
        tmp_path / "scan.pdf",
        [["Annual report of the harbour", "The harbour opened in 1887."], ["The pier is 310 metres long.", "End."]],
    )
    notes = []
    doc = load_document(path, "scan.pdf", progress=notes.append)
    assert notes == ["scan.pdf: OCR page 1 (1 of 2)", "scan.pdf: OCR page 2 (2 of 2)"]
    chunks = chunk_document(doc, 600, 100)
    pier = next(c for c in chunks if "The pier is 310 metres long." in c.text)  # the OCR text is what is quoted
    assert pier.page == 2 and pier.start_line == 1
    assert next(c for c in chunks if "opened in 1887" in c.text).page == 1
    with pytest.raises(DocumentError, match=r"^scan.pdf: PDF has no text layer \(scanned images\?\) and OCR is off"):
        load_document(path, "scan.pdf", ocr=False)


def test_the_ocr_setting_reads_on_and_off_from_env_file_and_flag():
    from qa.config import load_settings
    from qa.errors import ConfigError

    assert load_settings(env={}).ocr is True
    assert load_settings(env={"QA_OCR": "off"}).ocr is False
    assert load_settings({"ocr": "false"}, env={"QA_OCR": "1"}).ocr is False
    with pytest.raises(ConfigError, match=r"setting 'ocr': expected true or false .* got 'maybe'"):
        load_settings(env={"QA_OCR": "maybe"})


def test_a_two_column_paper_reads_in_column_order_without_furniture_or_references(tmp_path):
    from tests.docgen import write_paper_pdf

    left1 = ["Gulls nest on the north cliffs.", "Each pair raises two chicks.", "The colony has grown since"]
    left1 += ["the fishing ban.", "Counts were made by infor-", "mation gathered from drones."]
    right1 = ["Terns arrive in late April.", "They leave in early August.", "Their numbers fell by half.", "Storms"]
    right1 += ["destroyed many nests.", "Rats were seen near the pier."]
    page2 = (
        ["Methods were simple.", "We counted nests twice a year.", "Volunteers walked the paths.", "Weather was"],
        ["Results follow the counts.", "The gull colony tripled.", "The tern colony halved.", "Puffins stayed"],
    )
    page3 = (
        ["Discussion of the ban.", "Fishing limits helped gulls.", "Terns need sand banks.", "References"],
        ["[1] A. Smith. Puffins of Norway.", "Journal of Birds, 1999.", "[2] B. Jones. Gull counts.", "Ibis, 2004."],
    )
    path = write_paper_pdf(
        tmp_path / "paper.pdf",
        [(left1, right1), page2, page3],
        title="Seabirds of the island",
        header="Journal of Island Studies, Vol. 3",
    )
    doc = load_document(path, "paper.pdf")
    text = doc.text
    # column order: the whole left column, then the right one
    assert text.index("the fishing ban.") < text.index("Terns arrive in late April.")
    assert "Gulls nest on the north cliffs. Terns" not in text.replace("\n", " ")
    assert "since\nthe fishing ban." in text
    # hyphenation rejoined, running header and page numbers gone
    assert "Counts were made by information" in text and "infor-" not in text
    assert "Journal of Island Studies" not in text
    assert not any(line.strip().isdigit() for line in text.split("\n"))
    # the references are not passages; the text before them is
    assert "Puffins of Norway" not in text and "Gull counts" not in text
    assert "Terns need sand banks." in text
    chunks = chunk_document(doc, 600, 100)
    terns = next(c for c in chunks if "Terns arrive in late April." in c.text)
    assert terns.page == 1
    assert next(c for c in chunks if "The gull colony tripled." in c.text).page == 2
