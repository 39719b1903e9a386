"""Loading and cleaning: what a user's files turn into before they are chunked."""

from __future__ import annotations

import pytest

from qa.chunking import chunk_document
from qa.documents import FILE_TYPES, SUPPORTED_SUFFIXES, load_document, safe_filename, scan_corpus
from qa.errors import CorpusError, DocumentError
from tests.conftest import ROOT, SEEDS
from tests.pdfgen import write_pdf

ARTICLE = "The committee met on Tuesday.\nIt approved the budget of 4,200 euros.\nMembers voted 7 to 2.\n"


def load(path):
    return load_document(path, path.name)


def test_mojibake_in_seed_is_repaired():
    doc = load(SEEDS / "001_67768c06cffa3221.txt")
    assert "TIRANA, Albania (AP) — An Iranian" in doc.text
    assert "â€" not in doc.text


def test_cleaning_keeps_line_numbers_of_the_file():
    path = SEEDS / "001_67768c06cffa3221.txt"
    doc = load(path)
    original = path.read_text(encoding="utf-8").split("\n")
    assert len(doc.text.split("\n")) == len(original)
    line = next(i for i, s in enumerate(original, 1) if "Gobadi said there are two options" in s)
    chunk = next(c for c in chunk_document(doc, 800, 120) if "Gobadi said there are two options" in c.text)
    assert chunk.start_line <= line <= chunk.end_line


def test_page_furniture_is_dropped_but_article_text_stays():
    doc = load(SEEDS / "000_6f09b0eae4eaabc4.txt")
    assert "Home »" not in doc.text
    assert "You may also like" not in doc.text
    assert "Leave a Comment" not in doc.text
    assert "U.S. pushes MKO to accept Albanian asylum offer" in doc.text  # the headline itself stays
    assert "Camp Ashraf’s 3,100 residents" in doc.text
    assert doc.title == "U.S. pushes MKO to accept Albanian asylum offer"


@pytest.mark.parametrize(
    "encoding,prefix",
    [
        ("utf-8", b""),
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-16", b""),
        ("utf-16-le", b""),
        ("utf-16-be", b""),
        ("latin-1", b""),
        ("cp1252", b""),
    ],
)
def test_encodings_are_read_correctly(tmp_path, encoding, prefix):
    text = "Café déjà vu — naïve façade, 3 € for crème brûlée.\nSecond line.\n"
    if encoding == "latin-1":
        text = text.replace("—", "-").replace("€", "EUR")
    path = tmp_path / "doc.txt"
    path.write_bytes(prefix + text.encode(encoding))
    doc = load(path)
    assert doc.text.rstrip("\n") == text.rstrip("\n")


def test_html_keeps_main_text_and_maps_lines_to_the_file(tmp_path):
    html = """<html><head><title>Budget news</title><style>p {color: red}</style></head>
<body>
<nav><a href="/">Home</a> | <a href="/news">News</a></nav>
<script>var tracking = "secret";</script>
<article>
<h1>Budget approved</h1>
<p>The committee approved the <b>budget</b> of 4,200 euros.</p>
<p>Members voted 7 to 2.</p>
</article>
<footer>Copyright 2024 Example</footer>
</body></html>"""
    path = tmp_path / "page.html"
    path.write_text(html, encoding="utf-8")
    doc = load(path)
    assert doc.title == "Budget news"
    assert "The committee approved the budget of 4,200 euros." in doc.text
    for junk in ("tracking", "color: red", "Home", "Copyright"):
        assert junk not in doc.text
    chunk = chunk_document(doc, 800, 120)[0]
    assert chunk.start_line == 6 and chunk.end_line == 8  # the <h1> line .. the last <p> line of the file


def test_pdf_text_is_read_per_page_with_page_numbers(tmp_path):
    path = write_pdf(
        tmp_path / "report.pdf",
        [["Page one talks about apples.", "Apples are red."], ["Page two talks about pears.", "Pears are green."]],
    )
    doc = load(path)
    chunks = chunk_document(doc, 800, 120)
    pears = next(c for c in chunks if "pears" in c.text)
    apples = next(c for c in chunks if "apples" in c.text)
    assert (apples.page, pears.page) == (1, 2)
    assert "apples" not in pears.text  # a chunk never spans two pages
    assert pears.start_line == 1


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.txt", b"", "empty file"),
        ("blank.md", b"   \n\n  ", "empty file"),
        ("junk.txt", bytes(range(256)) * 40, "binary"),
        ("nul.txt", b"hello\x00world\x00\x01\x02" * 50, "binary"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "corrupt PDF"),
        ("empty.pdf", b"", "empty file"),
    ],
)
def test_bad_files_raise_a_reason_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DocumentError) as err:
        load(path)
    assert name in str(err.value) and reason in str(err.value)


def test_encrypted_pdf_is_refused_with_a_reason(tmp_path):
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(tmp_path / "plain.pdf", [["Secret text."]])
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt("hunter2")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as out:
        writer.write(out)
    with pytest.raises(DocumentError, match="locked.pdf: encrypted PDF"):
        load(locked)


def test_missing_and_empty_corpus_folders_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        scan_corpus(tmp_path / "nope", 10**6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no supported files \(\.txt, \.md, "):
        scan_corpus(tmp_path / "empty", 10**6)


def test_scan_reports_links_that_are_broken_or_leave_the_corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "good.txt").write_text(ARTICLE)
    (root / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "outside.txt").write_text("private")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a folder loop is not followed
    (root / ".hidden.txt").write_text("hidden")
    found = {f.source: f.problem for f in scan_corpus(root, 10**6)}
    assert found == {
        "good.txt": "",
        "dangling.txt": "broken symlink",
        "escape.txt": "symlink points outside the corpus folder",
    }


def test_chunks_have_exact_positions_and_stable_ids():
    doc = load(SEEDS / "002_96937d237d215014.txt")
    chunks = chunk_document(doc, 800, 120)
    assert len(chunks) > 3
    for c in chunks:
        assert doc.text[c.start_char : c.end_char] == c.text
        assert len(c.text) <= 800
        assert c.source == "002_96937d237d215014.txt"
        lines = doc.text.split("\n")
        assert c.text.split("\n")[0] in lines[c.start_line - 1]
    assert [c.id for c in chunks] == [c.id for c in chunk_document(doc, 800, 120)]
    assert len({c.id for c in chunks}) == len(chunks)
    # chunks follow the text in order, no text is lost, and most end at a sentence end
    assert all(a.start_char < b.start_char for a, b in zip(chunks, chunks[1:], strict=False))
    covered = set()
    for c in chunks:
        covered.update(range(c.start_char, c.end_char))
    assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())
    assert sum(c.text.rstrip().endswith((".", '"', "”", "?")) for c in chunks) >= len(chunks) * 0.6


def test_one_registry_gives_the_suffixes_the_errors_and_the_readme_table(tmp_path):
    import qa.config

    assert qa.config.SUPPORTED_SUFFIXES == SUPPORTED_SUFFIXES == tuple(s for t in FILE_TYPES for s in t.suffixes)
    with pytest.raises(DocumentError) as err:
        safe_filename("notes.xyz")
    assert str(err.value) == f"notes.xyz: unsupported file type (use {', '.join(SUPPORTED_SUFFIXES)})"
    (tmp_path / "notes.xyz").write_text("text")
    with pytest.raises(DocumentError, match=r"notes.xyz: unsupported file type '.xyz' \(use .txt, "):
        load(tmp_path / "notes.xyz")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| type | suffixes | cited as |") :]
    rows = table[: table.index("\n\n")].splitlines()[2:]
    assert len(rows) == len(FILE_TYPES), "one README row per registered type"
    for kind, row in zip(FILE_TYPES, rows, strict=True):
        assert row.startswith(f"| {kind.name} | ") and all(f"`{s}`" in row.split("|")[2] for s in kind.suffixes), row
