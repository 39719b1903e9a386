"""Loading and cleaning: a file on disk -> a Document (clean text whose lines map back to the file).

Cleaning never moves text between lines: furniture lines are blanked, not deleted, so line N of the
cleaned text is line N of the file (for .txt/.md). For HTML each extracted block maps to the source line
of its element, and for PDF to the line within its page, so every citation can point at the original.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ftfy

from qa.errors import CorpusError, DocumentError

log = logging.getLogger(__name__)


@dataclass
class Document:
    source: str  # path relative to the corpus root, '/'-separated
    text: str
    title: str
    line_map: list[int]  # original line number (1-based) of each line of `text`
    # (start_char, end_char, page) spans that chunks must not cross; page is None outside PDFs
    sections: list[tuple[int, int, int | None]] = field(default_factory=list)


# Whole lines that are site furniture, not article text. Matched after stripping, case-insensitively.
_FURNITURE = re.compile(
    r"^(home\s*[»>›].*"
    r"|you may also like|leave a (comment|reply)|related (posts|articles|stories)"
    r"|share this( article| story)?:?|accessibility links|breaking news|skip to (main )?content"
    r"|advertisement|please wait|no media source currently available|direct link"
    r"|\d{1,2}:\d{2}( \d{1,2}:\d{2}(:\d{2})?)*( \d{1,2}:\d{2})?)$",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")

# Picture furniture (issue 14.4): captions, credits and alt text are about an image, not article text, and a
# model quoting one ("Martin Kobler cartoon") answers nothing. Recognised by form, not by listing lines:
# - an agency or photo credit in brackets anywhere on the line: "(AP Photo/Karim Kadim)", "(Reuters)" after a
#   caption, "(Photo: NASA)";
_CREDIT_IN_BRACKETS = re.compile(
    r"\((?:(?-i:[A-Z])[\w.&'-]*[ /]){0,3}(?:photo|photograph|image|picture|illustration)s?\b[^)]*\)"
    r"|\((?:file|file photo)\)"
    r"|\((?:photo|image|picture)s?(?: credit)?:[^)]*\)",
    re.IGNORECASE,
)
# - a line opening with a picture label: "Photo: ...", "Image credit: ...", "Photo by ...", "Courtesy of ...";
_PICTURE_LABEL = re.compile(
    r"^(?:(?:photo|photograph|image|picture|illustration|cartoon|graphic|caption)s?(?: credits?| courtesy)?\s*[:|]"
    r"|(?:photo|photograph|image|picture|illustration|cartoon)s?(?: credits?)? (?:by|courtesy|from|via)\b"
    r"|courtesy (?:of|photo)\b|(?:photo|image|picture) credits?$)",
    re.IGNORECASE,
)
# - alt text standing alone: a markdown image, "[image: ...]", a picture's file name, "Image may contain: ...";
_ALT_TEXT = re.compile(
    r"^(?:!\[[^\]]*\]\([^)]*\)|\[(?:image|img|photo|picture)\b[^\]]*\]|\S+\.(?:jpe?g|png|gif|webp|svg|tiff?)"
    r"|image may contain\b.*)$",
    re.IGNORECASE,
)
# - a short line without a verb that ends in a picture word or credit ("martin kobler cartoon", "Getty Images",
#   "Click to enlarge"): a caption. A sentence ("The cartoon was banned.") has a verb or ends like one.
_PICTURE_END = re.compile(
    r"\b(?:photo|photograph|image|picture|cartoon|illustration|thumbnail|slideshow|gallery|enlarge|"
    r"getty images|shutterstock|alamy)s?\W*$",
    re.IGNORECASE,
)
_VERB_LIKE = re.compile(
    r"\b(?:is|are|was|were|be|been|has|have|had|do|does|did|will|would|can|could|may|might|shall|should|must)\b"
    r"|\b[a-z]{3,}(?:ed|ing)\b"
)
CAPTION_MAX_WORDS = 10


def is_picture_furniture(line: str) -> bool:
    """Is this (stripped) line a caption, credit or alt text rather than article text? See the forms above."""
    if not line:
        return False
    # every credit ends in ")": searching no further than the last one keeps a long line without it linear
    if _CREDIT_IN_BRACKETS.search(line, 0, line.rfind(")") + 1) or _PICTURE_LABEL.match(line) or _ALT_TEXT.match(line):
        return True
    short = len(line.split()) <= CAPTION_MAX_WORDS and not line.startswith("#")
    return short and bool(_PICTURE_END.search(line)) and not _VERB_LIKE.search(line) and line[-1:] not in ".!?:"


def decode_bytes(data: bytes, source: str) -> str:
    """Decode file bytes: BOMs first, UTF-16 without a BOM, UTF-8, then cp1252/Latin-1. Repairs mojibake."""
    if not data.strip():
        raise DocumentError(source, "empty file")
    text = None
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                raise DocumentError(source, f"invalid {codec} text") from None
            break
    if text is None and b"\x00" in data:
        text = _guess_utf16(data)
        if text is None:
            raise DocumentError(source, "binary file (contains NUL bytes)")
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
    if len(_CONTROL.findall(text)) > max(8, len(text) // 50):
        raise DocumentError(source, "binary file (mostly control characters)")
    return clean_text(text)


def _guess_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM shows as NULs in every other byte of ASCII-heavy text."""
    half = max(1, len(data) // 2)
    even = data[0::2].count(0) / half
    odd = data[1::2].count(0) / half
    # Real UTF-16 of mostly-Latin text has a NUL in nearly every other byte, not just now and then.
    codec = "utf-16-le" if odd > 0.7 and even < 0.05 else "utf-16-be" if even > 0.7 and odd < 0.05 else None
    if codec is None or len(data) % 2:
        return None
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        return None


def clean_text(text: str) -> str:
    """Repair encodings and blank furniture lines, keeping the line count of the input."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # ftfy undoes mojibake (â€” -> —). Quotes stay curly so quotes match the file; line breaks stay put.
    text = ftfy.fix_text(text, uncurl_quotes=False, fix_line_breaks=False, normalization="NFC")
    text = _CONTROL.sub(" ", text)
    lines = text.split("\n")
    return "\n".join(
        "" if _FURNITURE.match(line.strip()) or is_picture_furniture(line.strip()) else line.rstrip() for line in lines
    )


def _first_line_title(text: str) -> str:
    for line in text.split("\n"):
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return ""


@dataclass(frozen=True)
class LoadOptions:
    """What a loader may be asked beyond the file: OCR on or off, and where to report slow progress."""

    ocr: bool = True
    progress: Callable[[str], None] | None = None  # one short line, e.g. "report.pdf: OCR page 3 of 12"


def load_text(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    text = decode_bytes(_read_bytes(path, source), source)
    if not text.strip():
        raise DocumentError(source, "no text left after cleaning")
    n_lines = text.count("\n") + 1
    return Document(source, text, _first_line_title(text), list(range(1, n_lines + 1)), [(0, len(text), None)])


# Elements whose text is never article text.
_DROP_TAGS = [
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "iframe",
    "form",
    "nav",
    "header",
    "footer",
    "aside",
    "button",
    "select",
    "head",
]
_BLOCK_TAGS = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "td",
    "th",
    "tr",
    "table",
    "pre",
    "blockquote",
    "section",
    "article",
    "main",
    "dt",
    "dd",
    "dl",
    "figcaption",
    "figure",
    "body",
    "html",
    "br",
    "hr",
    "caption",
    "address",
}


def load_html(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    raw = decode_bytes(_read_bytes(path, source), source)
    title, blocks = html_blocks(raw, source)
    text = "\n".join(line for _, line in blocks)
    if not text.strip():
        raise DocumentError(source, "no text found in HTML")
    return Document(source, text, title or _first_line_title(text), [n for n, _ in blocks], [(0, len(text), None)])


def html_blocks(raw: str, source: str) -> tuple[str, list[tuple[int, str]]]:
    """The <title> and the article text of an HTML page as (source line of the block's element, cleaned text)."""
    from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, ProcessingInstruction

    try:
        soup = BeautifulSoup(raw, "html.parser")
        title_tag = soup.find("title")
        title = title_tag.get_text(" ", strip=True) if title_tag else ""
        for tag in soup.find_all(_DROP_TAGS):
            tag.extract()
        for tag in soup.find_all(attrs={"role": ["navigation", "banner", "contentinfo", "complementary"]}):
            tag.extract()
        root = soup.find("article") or soup.find("main") or soup.body or soup
        blocks: list[tuple[int, list[str]]] = []  # (source line, pieces)
        current = None
        block_of: dict[int, object] = {}  # element -> its nearest block ancestor (or None)
        for node in root.descendants:
            if not isinstance(node, NavigableString) or isinstance(node, Comment | Doctype | ProcessingInstruction):
                continue
            piece = re.sub(r"\s+", " ", str(node))
            if not piece.strip():
                continue
            # Walked up once per element, not once per text node: deep nesting (`<b>a<b>a...`) was quadratic.
            path, block = [], node.parent
            while block is not None and block.name not in _BLOCK_TAGS and id(block) not in block_of:
                path.append(block)
                block = block.parent
            if block is not None and id(block) in block_of:
                block = block_of[id(block)]
            for tag in path:
                block_of[id(tag)] = block
            if block is not current or not blocks:
                current = block
                blocks.append((getattr(block, "sourceline", None) or 1, []))
            blocks[-1][1].append(piece)
    except RecursionError:
        raise DocumentError(source, "HTML nested too deeply to parse") from None
    out = []
    for line_no, pieces in blocks:
        text = clean_text("".join(pieces).strip())
        if text.strip():
            out.append((line_no, text))
    return title, out


def load_pdf(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    data = _read_bytes(path, source)
    if not data.strip():
        raise DocumentError(source, "empty file")
    try:
        import io

        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:  # pypdf raises several types for unsupported crypto
                ok = 0
            if not ok:
                raise DocumentError(source, "encrypted PDF (needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise DocumentError(source, f"corrupt PDF ({type(exc).__name__}: {str(exc)[:80]})") from None
    scanned = [i for i, page_text in enumerate(pages) if _needs_ocr(page_text)]
    if scanned and options.ocr:
        for i, page_text in _ocr_pages(data, source, scanned, options.progress):
            pages[i] = page_text
    _reorder_columns(data, pages, set(scanned))
    page_lines = [clean_text(page_text).split("\n") for page_text in pages]
    _blank_running_lines(page_lines)
    _blank_references(page_lines)
    for lines in page_lines:
        _rejoin_hyphenated(lines)
    parts, line_map, sections, offset = [], [], [], 0
    for page_no, lines in enumerate(page_lines, start=1):
        page_text = "\n".join(lines)
        parts.append(page_text)
        line_map.extend(range(1, page_text.count("\n") + 2))
        sections.append((offset, offset + len(page_text), page_no))
        offset += len(page_text) + 1  # the "\n" that joins pages
    text = "\n".join(parts)
    if not text.strip():
        if scanned and not options.ocr:
            raise DocumentError(source, "PDF has no text layer (scanned images?) and OCR is off (setting ocr)")
        raise DocumentError(source, "PDF has no extractable text" + (" (OCR found none either)" if scanned else ""))
    return Document(source, text, str(meta_title)[:200] or _first_line_title(text), line_map, sections)


# ---- research papers: columns, running headers, hyphenation, references -----------------------------------------


def _reorder_columns(data: bytes, pages: list[str], skip: set[int]) -> None:
    """Replace the text of each two-column page by its lines in column order (left column, then right; a line
    across both columns, like a title or a wide figure, closes a band). Uses PDFium's character boxes."""
    try:
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # the text pypdf read stays as it is
        log.debug("PDFium cannot open the PDF (%s): columns are not reordered", exc)
        return
    try:
        for index in range(len(pages)):
            if index in skip:
                continue
            page = pdf[index]
            ordered = _column_order(_segments(page.get_textpage()), page.get_width())
            if ordered is not None:
                pages[index] = "\n".join(ordered)
    except Exception as exc:
        log.debug("PDFium cannot read the character boxes (%s): the rest keeps pypdf's order", exc)
        return
    finally:
        pdf.close()


def _segments(textpage) -> list[tuple[float, float, float, str]]:
    """Runs of text on one line, split where the gap is wider than two characters: (x0, x1, top, text)."""
    import pypdfium2.raw as raw

    segments, chars = [], []  # chars of the current run: (char, left, right)
    span = [0.0, 0.0]  # bottom and top of the current run

    def close():
        text = "".join(c[0] for c in chars)
        if text.strip():
            boxed = [c for c in chars if c[2] > c[1]]
            segments.append((boxed[0][1], boxed[-1][2], span[1], text))
        chars.clear()

    for i in range(textpage.count_chars()):
        ch = chr(raw.FPDFText_GetUnicode(textpage, i))
        if ch in "\r\n":
            close()
            continue
        if ch == "\x02":  # PDFium's soft hyphen at a line end
            ch = "-"
        if ch.isspace():  # spaces (often generated, without a box) never start or split a run
            if chars:
                chars.append((ch, chars[-1][2], chars[-1][2]))
            continue
        left, bottom, right, top = textpage.get_charbox(i)
        if chars:
            size = max(span[1] - span[0], top - bottom, 1.0)
            last_right = max(c[2] for c in chars[-3:])
            same_line = bottom < span[1] and top > span[0]
            if not same_line or left - last_right > 2 * size or left < chars[0][1] - size:
                close()
        if not chars:
            span[:] = [bottom, top]
        span[:] = [min(span[0], bottom), max(span[1], top)]
        chars.append((ch, left, right))
    close()
    return segments


def _column_order(segments, width: float) -> list[str] | None:
    """The lines of a two-column page in reading order, or None when the page is not in two columns."""
    mid = width / 2
    side = ["L" if x1 <= mid - 2 else "R" if x0 >= mid + 2 else "W" for x0, x1, _, _ in segments]
    left, right, wide = side.count("L"), side.count("R"), side.count("W")
    if left < 4 or right < 4 or wide > (left + right) / 2:
        return None
    rows = sorted(zip(segments, side, strict=True), key=lambda item: -item[0][2])
    out, band = [], {"L": [], "R": []}

    def flush():
        for column in ("L", "R"):
            out.extend(text.strip() for _, _, _, text in band[column])
            band[column] = []

    for segment, where in rows:
        if where == "W":
            flush()
            out.append(segment[3].strip())
        else:
            band[where].append(segment)
    flush()
    return out


_PAGE_NUMBER = re.compile(r"^(page\s*+)?[-–—]?\s*+\d{1,4}\s*+[-–—]?(\s*+(of|/)\s*+\d{1,4})?$", re.IGNORECASE)


def _edge_lines(lines: list[str], depth: int = 2) -> list[int]:
    """Indexes of the first and last `depth` non-empty lines of a page (where running heads and feet sit)."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:depth] + filled[-depth:]))


def _blank_running_lines(page_lines: list[list[str]]) -> None:
    """Blank page numbers and headers/footers repeated at the top or bottom of most pages (digits ignored)."""
    if len(page_lines) < 2:
        return
    key = lambda line: re.sub(r"\d+", "#", line.strip().lower())  # noqa: E731
    counts = Counter(k for lines in page_lines for k in {key(lines[i]) for i in _edge_lines(lines)})
    repeated = set()
    if len(page_lines) >= 3:  # with two pages a repeated first line is as likely a heading as a running head
        repeated = {k for k, n in counts.items() if k and n >= 0.6 * len(page_lines)}
    for lines in page_lines:
        for i in _edge_lines(lines):
            if _PAGE_NUMBER.match(lines[i].strip()) or key(lines[i]) in repeated:
                lines[i] = ""


_REFERENCES = re.compile(
    r"^((\d+|[IVX]+)\.?\s*)?(references|bibliography|works cited|literature cited|reference list)$", re.IGNORECASE
)
_AFTER_REFERENCES = re.compile(r"^([A-Z]\.?\s+)?(appendix|appendices|supplementary)\b", re.IGNORECASE)


def _blank_references(page_lines: list[list[str]]) -> None:
    """Blank the References section (from its heading to an appendix or the end): a list of citations answers no
    question about the paper and crowds out its text. Only a heading past the first 30 % of the text counts."""
    flat = [(p, i) for p, lines in enumerate(page_lines) for i in range(len(lines))]
    heads = [n for n, (p, i) in enumerate(flat) if _REFERENCES.match(page_lines[p][i].strip())]
    if not heads or heads[-1] < 0.3 * len(flat):
        return
    for p, i in flat[heads[-1] :]:
        if _AFTER_REFERENCES.match(page_lines[p][i].strip()):
            return
        page_lines[p][i] = ""


def _rejoin_hyphenated(lines: list[str]) -> None:
    """'infor-' at a line end + 'mation is' on the next line -> 'information' / 'is'. Line counts stay."""
    for i in range(len(lines) - 1):
        match = re.search(r"(?<!\w)(\w*[^\W\d_])[-\u00ad]$", lines[i])  # from a word's start: linear
        nxt = lines[i + 1].lstrip()
        if not match or not nxt or not nxt[0].islower():
            continue
        rest = re.match(r"(\S+)\s*(.*)", nxt)
        lines[i] = lines[i][: match.end(1)] + rest.group(1)
        lines[i + 1] = rest.group(2)


# A page with fewer visible characters than this has no real text layer (a scan, maybe with a stamped page number).
_OCR_MIN_CHARS = 20
OCR_DPI = 300  # tesseract reads best at about 300 dpi


def _needs_ocr(page_text: str) -> bool:
    return len(re.sub(r"\s", "", page_text)) < _OCR_MIN_CHARS


def _ocr_pages(data: bytes, source: str, pages: list[int], progress: Callable[[str], None] | None):
    """(page index, text) for each of `pages` (0-based), read by tesseract from the page rendered by PDFium."""
    import shutil

    if shutil.which("tesseract") is None:
        raise DocumentError(
            source,
            "PDF pages without a text layer need OCR, and tesseract is not installed "
            "(apt-get install tesseract-ocr, or turn the setting ocr off)",
        )
    import pypdfium2 as pdfium
    import pytesseract

    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # PdfiumError and friends
        raise DocumentError(source, f"corrupt PDF, cannot render it for OCR ({str(exc)[:80]})") from None
    try:
        for n, index in enumerate(pages, start=1):
            if progress:
                progress(f"{source}: OCR page {index + 1} ({n} of {len(pages)})")
            image = pdf[index].render(scale=OCR_DPI / 72, grayscale=True).to_pil()
            try:
                text = pytesseract.image_to_string(image)
            except (pytesseract.TesseractError, RuntimeError, OSError) as exc:
                raise DocumentError(source, f"OCR failed on page {index + 1} ({str(exc)[:80]})") from None
            yield index, text
    finally:
        pdf.close()


# ---- office documents and e-books (zip packages of XML) -------------------------------------------------------

# A package is refused when its parts would unpack to more than this: a document of a few MB whose images unpack to
# gigabytes (a decompression bomb, or a huge uncompressed picture) would otherwise fill memory while it is parsed.
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the container of encrypted Office files and of .doc/.ppt


def _open_package(data: bytes, source: str, what: str):
    """`data` as a zip file, after the checks every zip-based format shares. Raises DocumentError with the reason."""
    import io
    import zipfile

    if not data.strip():
        raise DocumentError(source, "empty file")
    if data.startswith(_OLE_MAGIC):
        raise DocumentError(
            source,
            f"password-protected, or an old binary file renamed to {Path(source).suffix.lower()} "
            "(remove the password, or save it again in the new format)",
        )
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        members = package.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise DocumentError(source, f"corrupt {what} (not a readable zip archive)") from None
    total = sum(m.file_size for m in members)
    if total > MAX_UNPACKED_BYTES:
        biggest = max(members, key=lambda m: m.file_size)
        raise DocumentError(
            source,
            f"unpacks to {total / 1e6:,.0f} MB (largest part {biggest.filename}, {biggest.file_size / 1e6:,.0f} MB), "
            f"over the {MAX_UNPACKED_BYTES / 1e6:,.0f} MB qa reads; not indexed",
        )
    return package


def _parse_failure(source: str, what: str, exc: BaseException) -> DocumentError:
    return DocumentError(source, f"corrupt {what} ({type(exc).__name__}: {str(exc)[:80]})")


def _one_line(text: str) -> str:
    """A paragraph as one line of clean text (soft line breaks and tabs become spaces)."""
    return clean_text(re.sub(r"\s+", " ", text)).strip()


def _paragraphs_document(source: str, title: str, paragraphs: Iterable[str], what: str) -> Document:
    """A document cited by paragraph: line N is the N-th non-empty paragraph."""
    lines = [p for p in map(_one_line, paragraphs) if p]
    text = "\n".join(lines)
    if not text.strip():
        raise DocumentError(source, f"no text found in {what}")
    return Document(
        source,
        text,
        (title or "").strip()[:200] or _first_line_title(text),
        list(range(1, len(lines) + 1)),
        [(0, len(text), None)],
    )


def _pages_document(source: str, title: str, pages: list[tuple[int, list[str]]], what: str) -> Document:
    """A document cited by page (slide, chapter): each page a section, line N the N-th non-empty line of it."""
    parts, line_map, sections, offset = [], [], [], 0
    for page_no, page_lines in pages:
        lines = [p for p in map(_one_line, page_lines) if p]
        if not lines:
            continue
        page_text = "\n".join(lines)
        parts.append(page_text)
        line_map.extend(range(1, len(lines) + 1))
        sections.append((offset, offset + len(page_text), page_no))
        offset += len(page_text) + 1
    text = "\n".join(parts)
    if not text.strip():
        raise DocumentError(source, f"no text found in {what}")
    return Document(source, text, (title or "").strip()[:200] or _first_line_title(text), line_map, sections)


def _row_text(cells: Iterable[str]) -> str:
    return " | ".join(c for c in (_one_line(c) for c in cells) if c)


def load_docx(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    """Word: body paragraphs, headings and tables in reading order; a table row is one paragraph (cells ' | ')."""
    import io

    _open_package(data := _read_bytes(path, source), source, "Word document")
    try:
        import docx
        from docx.table import Table

        word = docx.Document(io.BytesIO(data))
        paragraphs = []
        for block in word.iter_inner_content():
            if isinstance(block, Table):
                paragraphs.extend(_docx_table_rows(block))
            else:
                paragraphs.append(block.text)
        title = word.core_properties.title or ""
    except DocumentError:
        raise
    except Exception as exc:  # python-docx and lxml raise many types for a broken package
        raise _parse_failure(source, "Word document", exc) from None
    return _paragraphs_document(source, title, paragraphs, "the Word document")


def _docx_table_rows(table) -> list[str]:
    rows = []
    for row in table.rows:
        seen, cells = set(), []
        for cell in row.cells:  # a merged cell is listed once per grid column it spans
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(p.text for p in cell.paragraphs))
            for inner in cell.tables:
                cells.extend(_docx_table_rows(inner))
        rows.append(_row_text(cells))
    return rows


def load_pptx(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    """PowerPoint: each slide's text (shapes top to bottom, left to right; tables by row), then its notes."""
    import io

    _open_package(data := _read_bytes(path, source), source, "PowerPoint file")
    try:
        from pptx import Presentation

        deck = Presentation(io.BytesIO(data))
        pages = []
        for number, slide in enumerate(deck.slides, start=1):
            lines: list[str] = []
            for shape in _reading_order(slide.shapes):
                _pptx_shape_lines(shape, lines)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                lines.extend(slide.notes_slide.notes_text_frame.text.splitlines())
            pages.append((number, lines))
        title = deck.core_properties.title or ""
    except DocumentError:
        raise
    except Exception as exc:
        raise _parse_failure(source, "PowerPoint file", exc) from None
    return _pages_document(source, title, pages, "the slides")


def _reading_order(shapes):
    return sorted(shapes, key=lambda s: (s.top or 0, s.left or 0))


def _pptx_shape_lines(shape, lines: list[str]) -> None:
    if getattr(shape, "shapes", None) is not None and shape.shape_type is not None and not shape.has_text_frame:
        for inner in _reading_order(shape.shapes):  # a group
            _pptx_shape_lines(inner, lines)
        return
    if shape.has_text_frame:
        lines.extend(p.text for p in shape.text_frame.paragraphs)
    if getattr(shape, "has_table", False) and shape.has_table:
        lines.extend(_row_text(cell.text for cell in row.cells) for row in shape.table.rows)


def load_epub(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    """EPUB: the chapters (XHTML files) in reading (spine) order, each cleaned like an HTML page."""
    import io
    import warnings

    package = _open_package(data := _read_bytes(path, source), source, "EPUB")
    names = set(package.namelist())
    if "META-INF/encryption.xml" in names:
        encrypted = package.read("META-INF/encryption.xml").decode("utf-8", "replace")
        if re.search(r'URI="[^"]+\.x?html?"', encrypted):  # fonts are often obfuscated; text means DRM
            raise DocumentError(source, "DRM-protected EPUB (its chapters are encrypted)")
    try:
        from ebooklib import epub

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
        chapters = []
        for idref, *_ in book.spine:
            item = book.get_item_with_id(idref)
            if item is None or not item.media_type.endswith(("html", "xml")):
                continue
            content = item.get_content().decode("utf-8", "replace")
            _, blocks = html_blocks(content, source)
            if blocks:
                chapters.append((len(chapters) + 1, [text for _, text in blocks]))
        titles = book.get_metadata("DC", "title")
        title = titles[0][0] if titles else ""
    except DocumentError:
        raise
    except Exception as exc:
        raise _parse_failure(source, "EPUB", exc) from None
    return _pages_document(source, title, chapters, "the e-book")


def load_odt(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    """OpenDocument text: headings, paragraphs, list items and table rows in document order."""
    import io

    package = _open_package(data := _read_bytes(path, source), source, "OpenDocument text")
    try:
        manifest = package.read("META-INF/manifest.xml").decode("utf-8", "replace")
    except KeyError:
        manifest = ""
    if "encryption-data" in manifest:
        raise DocumentError(source, "password-protected OpenDocument file")
    try:
        from odf.opendocument import load

        odt = load(io.BytesIO(data))
        paragraphs: list[str] = []
        _odt_walk(odt.text, paragraphs)
        title = ""
        for node in odt.meta.childNodes:
            if getattr(node, "qname", ("", ""))[1] == "title":
                title = str(node)
    except DocumentError:
        raise
    except Exception as exc:
        raise _parse_failure(source, "OpenDocument text", exc) from None
    return _paragraphs_document(source, title, paragraphs, "the OpenDocument file")


def _odt_walk(element, paragraphs: list[str]) -> None:
    from odf import teletype

    for node in element.childNodes:
        if node.nodeType != node.ELEMENT_NODE:
            continue
        name = node.qname[1]
        if name in ("p", "h"):
            paragraphs.append(teletype.extractText(node))
        elif name == "table-row":
            cells = []
            for cell in node.childNodes:
                if cell.nodeType == cell.ELEMENT_NODE and cell.qname[1] == "table-cell":
                    inner: list[str] = []
                    _odt_walk(cell, inner)
                    cells.append(" ".join(inner))
            paragraphs.append(_row_text(cells))
        elif name not in ("tracked-changes", "sequence-decls", "variable-decls", "user-field-decls", "forms"):
            _odt_walk(node, paragraphs)


def load_rtf(path: Path, source: str, options: LoadOptions = LoadOptions()) -> Document:
    """RTF: the text striprtf leaves, one line per paragraph."""
    data = _read_bytes(path, source)
    if not data.strip():
        raise DocumentError(source, "empty file")
    raw = data.decode("latin-1")
    if not raw.lstrip().startswith("{\\rtf"):
        raise DocumentError(source, "not an RTF file (it does not start with {\\rtf)")
    try:
        from striprtf.striprtf import rtf_to_text

        text = rtf_to_text(raw, errors="ignore")
    except Exception as exc:
        raise _parse_failure(source, "RTF file", exc) from None
    return _paragraphs_document(source, "", text.split("\n"), "the RTF file")


def _read_bytes(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise DocumentError(source, "permission denied") from None
    except FileNotFoundError:
        raise DocumentError(source, "file disappeared or is a broken symlink") from None
    except IsADirectoryError:
        raise DocumentError(source, "is a directory") from None
    except OSError as exc:
        raise DocumentError(source, f"cannot read ({exc.strerror or exc})") from None


# ---- the registry: one entry per kind of file ----------------------------------------------------------------


@dataclass(frozen=True)
class FileType:
    """One kind of document: its suffixes, its loader, and what a citation into it points at."""

    name: str  # shown to people: "PDF", "Word document"
    suffixes: tuple[str, ...]
    loader: Callable[[Path, str, LoadOptions], Document]
    cited: str  # what "page" and "lines" mean in a citation of this type
    library: str  # what reads it
    limits: str  # what that reader does not handle
    # How a person finds a cited place in it: "p. 2" / "slide 3" / "chapter 2", then "lines" / "paragraphs"
    page_word: str = "p."
    line_word: str = "line"


# Adding a type is one entry here plus its loader. The suffix list, the upload label, error messages, `qa status`
# and the README's table of types all come from this table (tests/test_documents.py checks the README).
FILE_TYPES: tuple[FileType, ...] = (
    FileType(
        "Plain text",
        (".txt",),
        load_text,
        "lines of the file",
        "built in (BOM / UTF-16 / UTF-8 / cp1252 detection, ftfy repairs mojibake)",
        "other legacy encodings (Shift-JIS, KOI8-R) are read as cp1252",
    ),
    FileType(
        "Markdown",
        (".md", ".markdown"),
        load_text,
        "lines of the file",
        "read as plain text",
        "markup stays in the text as written",
    ),
    FileType(
        "HTML",
        (".html", ".htm"),
        load_html,
        "lines of the file (the line of each block's element)",
        "BeautifulSoup; navigation, scripts, headers and footers dropped",
        "text that scripts add when the page runs",
    ),
    FileType(
        "PDF",
        (".pdf",),
        load_pdf,
        "page, and lines of that page (for a scanned page, lines of the OCR text)",
        "pypdf; two-column pages in column order from PDFium's character boxes; scans: PDFium + tesseract (ocr)",
        "encrypted PDFs that need a password; handwriting; three or more columns; tables keep no cell structure",
    ),
    FileType(
        "Word document",
        (".docx",),
        load_docx,
        "lines = paragraph numbers (headings, list items and each table row count as one paragraph)",
        "python-docx",
        "headers, footers, footnotes, comments, text boxes, content controls (w:sdt, e.g. a cover page), tracked "
        "insertions not yet accepted; .doc (the old binary format)",
        line_word="paragraph",
    ),
    FileType(
        "PowerPoint",
        (".pptx",),
        load_pptx,
        "page = slide number; lines of that slide (shapes top to bottom, tables by row, then the notes)",
        "python-pptx",
        "text inside pictures, charts and SmartArt; .ppt (the old binary format)",
        page_word="slide",
    ),
    FileType(
        "EPUB e-book",
        (".epub",),
        load_epub,
        "page = chapter number (the N-th file with text in reading order); lines = paragraphs of that chapter",
        "ebooklib, then the HTML cleaning above",
        "DRM-protected books; text in images; a contents or title page with text counts as a chapter",
        page_word="chapter",
        line_word="paragraph",
    ),
    FileType(
        "OpenDocument text",
        (".odt",),
        load_odt,
        "lines = paragraph numbers (headings, list items and each table row count as one paragraph)",
        "odfpy",
        "headers and footers; a footnote is read inside its paragraph; password-protected files",
        line_word="paragraph",
    ),
    FileType(
        "Rich Text",
        (".rtf",),
        load_rtf,
        "lines = paragraph numbers",
        "striprtf",
        "a soft line break starts a new paragraph; a table row is one line, cells joined by '|'; pictures and "
        "embedded objects are dropped",
        line_word="paragraph",
    ),
)
FILE_TYPE_BY_SUFFIX: dict[str, FileType] = {suffix: t for t in FILE_TYPES for suffix in t.suffixes}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(FILE_TYPE_BY_SUFFIX)


def supported_list(sep: str = ", ") -> str:
    """The suffixes as people read them: '.txt, .md, .markdown, ...'."""
    return sep.join(SUPPORTED_SUFFIXES)


def file_type(source: str) -> FileType | None:
    return FILE_TYPE_BY_SUFFIX.get(Path(source).suffix.lower())


def place(source: str, start_line: int, end_line: int, page: int | None) -> str:
    """A cited place labelled the way a person finds it in that kind of file: "deck.pptx, slide 3, lines 2–4",
    "memo.docx, paragraph 14", "book.epub, chapter 2, paragraphs 3–5", "paper.pdf, p. 2, line 7", "a.txt, lines
    3–5" (an en dash)."""
    kind = file_type(source)
    page_word, line_word = (kind.page_word, kind.line_word) if kind else ("p.", "line")
    lines = f"{line_word} {start_line}" if start_line == end_line else f"{line_word}s {start_line}–{end_line}"
    return f"{source}, {page_word} {page}, {lines}" if page else f"{source}, {lines}"


def type_counts(sources: Iterable[str]) -> dict[str, int]:
    """How many of `sources` are of each type, by type name, most first: {"PDF": 3, "Plain text": 2}."""
    counts = Counter(t.name for t in map(file_type, sources) if t)
    return dict(counts.most_common())


def load_document(path: Path, source: str, ocr: bool = True, progress: Callable[[str], None] | None = None) -> Document:
    """Load one supported file; its type comes from the name `source`. Raises DocumentError naming the file."""
    kind = file_type(source)
    if kind is None:
        raise DocumentError(source, f"unsupported file type '{Path(source).suffix.lower()}' (use {supported_list()})")
    return kind.loader(path, source, LoadOptions(ocr=ocr, progress=progress))


@dataclass
class CorpusFile:
    source: str
    path: Path
    size: int
    mtime_ns: int
    problem: str = ""  # set when the file cannot be indexed at all (broken link, outside the corpus, too big)


def scan_corpus(root: Path, max_bytes: int) -> list[CorpusFile]:
    """List the supported files under `root` (hidden files and folders skipped, folder links not followed).

    Raises CorpusError when `root` is missing, not a folder, or holds no supported file.
    """
    if not root.exists():
        raise CorpusError(f"corpus folder {root} does not exist")
    if not root.is_dir():
        raise CorpusError(f"corpus path {root} is not a folder")
    real_root = root.resolve()
    found: list[CorpusFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            path = Path(dirpath) / name
            source = unicodedata.normalize("NFC", path.relative_to(root).as_posix())
            entry = CorpusFile(source, path, 0, 0)
            try:
                target = path.resolve(strict=True)
                st = path.stat()
                entry.size, entry.mtime_ns = st.st_size, st.st_mtime_ns
                if not target.is_relative_to(real_root):
                    entry.problem = "symlink points outside the corpus folder"
                elif not path.is_file():
                    entry.problem = "not a regular file"
                elif st.st_size > max_bytes:
                    entry.problem = f"larger than the {max_bytes / 1e6:.0f} MB limit (max_file_mb)"
            except (FileNotFoundError, RuntimeError):
                entry.problem = "broken symlink"
            except OSError as exc:
                entry.problem = f"cannot read ({exc.strerror or exc})"
            found.append(entry)
    if not found:
        raise CorpusError(f"corpus folder {root} has no supported files ({supported_list()})")
    return found


def safe_filename(name: str) -> str:
    """A file name from an upload that cannot leave the corpus folder: no folders, no '..', no odd characters.

    Raises DocumentError when nothing usable is left or the type is not supported.
    """
    base = unicodedata.normalize("NFC", name.replace("\\", "/").split("/")[-1])
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    base = re.sub(r"\s+", " ", base).strip(" .")
    if not base or base in (".", ".."):
        raise DocumentError(name, "not a usable file name")
    if Path(base).suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DocumentError(base, f"unsupported file type (use {supported_list()})")
    return fit_filename(base)


# File systems limit a name to 255 bytes, not characters (an emoji is 4 bytes in UTF-8). Uploads are kept well
# below that, so " (2)" or the hidden ".NAME.upload" copy made while saving still fit.
MAX_NAME_BYTES = 200


def fit_filename(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """`name` cut to at most `limit` bytes of UTF-8, keeping its suffix and never splitting a character."""
    if len(name.encode("utf-8")) <= limit:
        return name
    suffix = Path(name).suffix
    stem = name[: len(name) - len(suffix)].encode("utf-8")[: limit - len(suffix.encode("utf-8"))]
    return stem.decode("utf-8", errors="ignore").rstrip() + suffix
