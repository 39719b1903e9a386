"""Real documents of every supported type, written by the same libraries people's tools use, for the tests."""

from __future__ import annotations

from pathlib import Path


def write_docx(path: Path, paragraphs: list[str], table: list[list[str]] | None = None, title: str = "") -> Path:
    """A Word file: a heading (the first entry), body paragraphs, then an optional table. Returns `path`."""
    import docx

    d = docx.Document()
    d.core_properties.title = title
    d.add_heading(paragraphs[0], level=1)
    for text in paragraphs[1:]:
        d.add_paragraph(text)
    if table:
        t = d.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    d.save(path)
    return path


def write_pptx(path: Path, slides: list[dict]) -> Path:
    """A PowerPoint file; each slide {"title", "body": [lines], "table": [[cells]], "notes"} (all optional)."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for spec in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = spec.get("title", "")
        if spec.get("body"):
            box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(8), Inches(2)).text_frame
            box.text = spec["body"][0]
            for line in spec["body"][1:]:
                box.add_paragraph().text = line
        if spec.get("table"):
            rows = spec["table"]
            shape = slide.shapes.add_table(len(rows), len(rows[0]), Inches(1), Inches(4.5), Inches(8), Inches(1))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    shape.table.cell(r, c).text = cell
        if spec.get("notes"):
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    deck.save(path)
    return path


def write_epub(path: Path, title: str, chapters: list[tuple[str, list[str]]]) -> Path:
    """An EPUB 3 book: a cover page without text, then each (heading, paragraphs) chapter in spine order."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("qa-test-book")
    book.set_title(title)
    book.set_language("en")
    cover = epub.EpubHtml(
        title="Cover", file_name="cover.xhtml", content="<html><body><img src='x.png'/></body></html>"
    )
    items = [cover]
    for n, (heading, paragraphs) in enumerate(chapters, start=1):
        body = f"<h1>{heading}</h1>" + "".join(f"<p>{p}</p>" for p in paragraphs)
        items.append(
            epub.EpubHtml(title=heading, file_name=f"chap_{n}.xhtml", content=f"<html><body>{body}</body></html>")
        )
    for item in items:
        book.add_item(item)
    book.toc = items[1:]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = items
    epub.write_epub(str(path), book)
    return path


def write_odt(path: Path, heading: str, paragraphs: list[str], table: list[list[str]] | None = None) -> Path:
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text=heading))
    for text in paragraphs:
        doc.text.addElement(P(text=text))
    if table:
        t = Table(name="T1")
        t.addElement(TableColumn(numbercolumnsrepeated=len(table[0])))
        for row in table:
            tr = TableRow()
            for cell in row:
                tc = TableCell()
                tc.addElement(P(text=cell))
                tr.addElement(tc)
            t.addElement(tr)
        doc.text.addElement(t)
    doc.save(str(path))
    return path


def write_rtf(path: Path, paragraphs: list[str]) -> Path:
    escaped = [p.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}") for p in paragraphs]
    body = "".join(p + "\\par\n" for p in escaped)
    path.write_text(
        "{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times New Roman;}}\n\\f0\\fs24 " + body + "}", encoding="ascii"
    )
    return path


def write_scanned_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF of page images only (no text layer), as a scanner makes: large, clear black text on white, 200 dpi."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=44)
    images = []
    for lines in pages:
        image = Image.new("L", (1654, 2339), 255)  # A4 at 200 dpi
        draw = ImageDraw.Draw(image)
        for n, line in enumerate(lines):
            draw.text((150, 200 + n * 90), line, fill=0, font=font)
        images.append(image)
    images[0].save(path, "PDF", resolution=200.0, save_all=True, append_images=images[1:])
    return path


def write_paper_pdf(path: Path, pages: list[tuple[list[str], list[str]]], title: str = "", header: str = "") -> Path:
    """A two-column paper (reportlab): each page (left column lines, right column lines), drawn row by row across
    both columns (the order that makes naive extraction read across the gutter), a running `header` at the top
    and the page number at the bottom. `title` spans both columns on the first page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    width, height = A4
    c = canvas.Canvas(str(path), pagesize=A4)
    for number, (left, right) in enumerate(pages, start=1):
        c.setFont("Helvetica", 9)
        if header:
            c.drawString(60, height - 40, header)
        c.drawCentredString(width / 2, 30, str(number))
        y = height - 80
        if title and number == 1:
            c.setFont("Helvetica-Bold", 14)
            c.drawCentredString(width / 2, y, title)
            y -= 30
        c.setFont("Helvetica", 10)
        for row in range(max(len(left), len(right))):
            if row < len(left):
                c.drawString(60, y, left[row])
            if row < len(right):
                c.drawString(width / 2 + 15, y, right[row])
            y -= 13
        c.showPage()
    c.save()
    return path
