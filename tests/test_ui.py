"""The chat UI end to end: a real server on 127.0.0.1, driven by headless Chromium (Debian) through Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT, SEEDS
from tests.docgen import write_docx, write_epub, write_odt, write_pptx, write_rtf, write_scanned_pdf
from tests.pdfgen import write_pdf

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "tests" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_ui(root, corpus):
    """`qa ui` on `corpus` (its index under `root`), serving on a free port: yields its URL."""
    port = free_port()
    # Two passages per answer instead of four: half the prompt for the model to read (about 10 s less per
    # question on 2 cores). What is tested here is the UI; answer quality at the defaults is the evaluation's.
    env = {**os.environ, "QA_VECTORSTORE": str(root / "index"), "QA_CORPUS": str(corpus), "QA_TOP_K": "2"}
    log = open(root / "ui.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "ui", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((root / "ui.log").read_text()) from None
            time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError("UI did not start: " + (root / "ui.log").read_text())
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    corpus = root / "corpus"
    shutil.copytree(SEEDS, corpus)
    (corpus / "gallery.txt").write_text(
        "Gallery notice\n\nThe Ostrava gallery opens at 9 am on Sundays and closes at 5 pm.\n"
        '<img src=x onerror="window.__xss=1;alert(1)"> <script>window.__xss=2</script>\n'
    )
    with running_ui(root, corpus) as url:
        yield url, corpus


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(app_url[0])
    pg.wait_for_selector("#question textarea")
    yield pg
    pg.close()


def ask(page, question: str):
    page.fill("#question textarea", question)
    page.click("#ask")
    # the draft streams in with a cursor first, then the checked answer replaces it
    page.wait_for_function(
        "document.querySelector('#chat') && document.querySelector('#chat').innerText.includes('▌')", timeout=120_000
    )
    streamed = page.inner_text("#chat")
    page.wait_for_function("!document.querySelector('#chat').innerText.includes('▌')", timeout=180_000)
    return streamed


def test_a_seed_question_streams_an_answer_with_a_citation_and_its_quote(page):
    streamed = ask(page, "How many MEK members did Albania offer to take in?")
    assert "▌" in streamed
    page.wait_for_selector('#chat a[href="#cite-1"]', timeout=30_000)
    assert "210" in page.inner_text("#chat")
    page.screenshot(path=str(SHOTS / "answer.png"), full_page=True)
    cite = page.locator("#sources #cite-1")
    assert "210" in cite.locator("mark").inner_text()
    assert ".txt" in cite.locator(".where").inner_text()

    page.click("#open-doc input")
    page.locator("ul[role=listbox] li").first.click()
    page.wait_for_selector("#doc-view mark", timeout=30_000)
    assert page.locator("#doc-view mark").count() >= 1
    page.screenshot(path=str(SHOTS / "document.png"), full_page=True)


def test_document_text_with_html_runs_no_script(page):
    page.click("#clear")
    ask(page, "When does the Ostrava gallery open on Sundays?")
    page.wait_for_selector("#sources .cite", timeout=30_000)
    sources = page.inner_text("#sources")
    assert "9 am" in sources
    # the markup is shown as text, and none of it ran
    assert '<img src=x onerror="window.__xss=1;alert(1)">' in sources and "<script>window.__xss=2</script>" in sources
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    page.screenshot(path=str(SHOTS / "escaped.png"), full_page=True)


def test_an_uploaded_file_becomes_answerable_without_a_restart(page, app_url, tmp_path):
    page.click("#documents button, #documents .label-wrap")
    new = tmp_path / "lighthouse.txt"
    new.write_text("Keeper's log\n\nThe Zorvath lighthouse was painted green in 1987 by Marta Quell.\n")
    page.set_input_files("#upload input[type=file]", str(new))
    page.wait_for_function(
        "document.querySelector('#upload-status').innerText.includes('lighthouse.txt indexed')", timeout=120_000
    )
    assert (app_url[1] / "lighthouse.txt").is_file()
    page.screenshot(path=str(SHOTS / "upload.png"), full_page=True)

    broken = write_pdf(tmp_path / "broken.pdf", [["x"]])
    broken.write_bytes(broken.read_bytes()[:60])
    page.set_input_files("#upload input[type=file]", str(broken))
    page.wait_for_function("document.querySelector('#upload-status').innerText.includes('broken.pdf')", timeout=60_000)
    assert "nothing was indexed" in page.inner_text("#upload-status")
    assert not (app_url[1] / "broken.pdf").exists()

    page.click("#clear")
    ask(page, "What colour was the Zorvath lighthouse painted?")
    page.wait_for_selector('#chat a[href="#cite-1"]', timeout=30_000)
    assert "green" in page.inner_text("#chat").lower()
    assert "lighthouse.txt" in page.inner_text("#sources")


def test_gradio_client_can_ask_through_the_api(app_url):
    from gradio_client import Client

    client = Client(app_url[0], verbose=False)
    result = client.predict("Who is the U.N. envoy in Iraq?", api_name="/ask")
    assert result["question"] == "Who is the U.N. envoy in Iraq?"
    assert "Kobler" in result["answer"] and result["citations"]
    # a bad question reaches an API caller as qa's one-line message, not a bare "error"
    with pytest.raises(Exception, match="the question is empty"):
        client.predict("   ", api_name="/ask")


def test_two_browser_sessions_keep_their_own_conversations(page, app_url):
    """Two people on the same server at once: each sees only their own questions and answers, and clearing one
    chat leaves the other alone (the conversation lives in per-session state, not in the server)."""
    page.click("#clear")
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    other.goto(app_url[0])
    other.wait_for_selector("#question textarea")
    mine, theirs = "Who wrote the novel Pride and Prejudice?", "Which country won the 2014 FIFA World Cup?"
    for pg, question in ((page, mine), (other, theirs)):  # both asked before either is answered
        pg.fill("#question textarea", question)
        pg.click("#ask")
    for pg in (page, other):
        pg.wait_for_function(
            "document.querySelector('#chat').innerText.includes(\"The documents don't say\")", timeout=120_000
        )
    assert mine in page.inner_text("#chat") and theirs not in page.inner_text("#chat")
    assert theirs in other.inner_text("#chat") and mine not in other.inner_text("#chat")

    page.click("#clear")
    page.wait_for_function(f"!document.querySelector('#chat').innerText.includes({mine!r})", timeout=30_000)
    assert theirs in other.inner_text("#chat")
    other.context.close()


# ---- a cited place in every type of document ----------------------------------------------------------------------
def _filler(what: str, n: int) -> list[str]:
    return [
        f"{what} note {i}: the harbour office filed entry number {100 + i} without remarks." for i in range(1, n + 1)
    ]


# One sentence per file, in a place a person would look for it: (file, page, lines, sentence, the place as shown,
# the heading of the page/slide/chapter it is on). The scan's lines are what tesseract reads, so its link gives the
# page and the quote only, as a link made without line numbers may.
PLACES = [
    ("memo.docx", None, "24", "The ferry repairs cost 4,200 euros.", "paragraph 24", None),
    ("deck.pptx", 3, "2", "The Kestrel Point lighthouse is 52 metres tall.", "slide 3, line 2", "Slide 3"),
    ("book.epub", 2, "5", "The parrot on the boat was called Pim.", "chapter 2, paragraph 5", "Chapter 2"),
    ("garden.odt", None, "19", "Tomatoes need six hours of sun.", "paragraph 19", None),
    ("minutes.rtf", None, "16", "The treasurer resigned on Friday.", "paragraph 16", None),
    ("notice.html", None, "24", "The museum reopens on the first of June.", "line 24", None),
    ("report.pdf", 2, "13", "The new quay wall is 180 metres long.", "p. 2, line 13", "Page 2"),
    ("scan.pdf", 2, "", "The pier is 310 metres long.", "p. 2, line 1", "Page 2"),
]


def make_typed_corpus(folder):
    """One file of each type, each long enough that its cited place is out of sight until the viewer scrolls."""
    folder.mkdir()
    memo = ["Harbour memo"] + _filler("Memo", 22) + ["The ferry repairs cost 4,200 euros."] + _filler("Later", 6)
    write_docx(folder / "memo.docx", memo)  # the heading is paragraph 1, so the sentence is paragraph 24
    slides = [{"title": f"Slide about topic {n}", "body": _filler(f"Slide {n}", 4)} for n in (1, 2, 4)]
    slides.insert(2, {"title": "Kestrel Point", "body": ["The Kestrel Point lighthouse is 52 metres tall."]})
    write_pptx(folder / "deck.pptx", slides)
    chapters = [
        ("Chapter One", _filler("Voyage", 12)),
        ("Chapter Two", _filler("Deck", 3) + ["The parrot on the boat was called Pim."] + _filler("Galley", 8)),
        ("Chapter Three", _filler("Shore", 6)),
    ]
    write_epub(folder / "book.epub", "Sea Stories", chapters)  # heading = paragraph 1 of its chapter
    write_odt(folder / "garden.odt", "Garden notes", _filler("Garden", 17) + ["Tomatoes need six hours of sun."])
    write_rtf(folder / "minutes.rtf", ["Club minutes"] + _filler("Club", 14) + ["The treasurer resigned on Friday."])
    html = ["<html><head><title>Museum notice</title></head><body>", "<article>", "<h1>Museum notice</h1>"]
    html += [f"<p>{line}</p>" for line in _filler("Museum", 20)] + ["<p>The museum reopens on the first of June.</p>"]
    (folder / "notice.html").write_text("\n".join(html + ["</article>", "</body></html>"]))  # the sentence: line 24
    page_one = [f"Quay survey line {i}: soundings were taken at station {i}." for i in range(1, 30)]
    page_two = [f"Quay survey line {i}: the wall was inspected at bay {i}." for i in range(30, 42)]
    write_pdf(folder / "report.pdf", [page_one, page_two + ["The new quay wall is 180 metres long."]])
    write_scanned_pdf(
        folder / "scan.pdf",
        [["Annual report of the harbour", "The harbour opened in 1887."], ["The pier is 310 metres long.", "End."]],
    )
    return folder


@pytest.fixture(scope="module")
def typed_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-types")
    with running_ui(root, make_typed_corpus(root / "corpus")) as url:
        yield url


@pytest.fixture
def typed_page(browser, typed_url):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield pg
    pg.close()


def shown_place(pg) -> dict:
    """What the viewer shows once it has scrolled to the cited place: the label, the highlighted text, the heading
    of the page/slide/chapter around it, the numbers of the shaded lines, and whether the highlight is in sight."""
    pg.wait_for_selector("#doc-view mark", timeout=120_000)
    in_sight = """() => {
        const m = document.querySelector('#doc-view mark'), d = m.closest('.doc');
        const a = m.getBoundingClientRect(), b = d.getBoundingClientRect();
        return a.top >= b.top && a.bottom <= b.bottom && a.top >= 0 && a.bottom <= window.innerHeight;
    }"""
    pg.wait_for_function(in_sight, timeout=10_000)
    section = pg.locator("#doc-view section:has(mark) .page-head")
    return {
        "place": pg.inner_text("#doc-view .place"),
        "mark": " ".join(pg.locator("#doc-view mark").all_inner_texts()),
        "heading": section.inner_text() if section.count() else None,
        "numbers": pg.locator("#doc-view .hit .ln").all_inner_texts(),
        "scrolled": pg.evaluate("document.querySelector('#doc-view .doc').scrollTop") > 0,
    }


def test_a_cited_slide_opens_at_that_slide_with_the_quote_highlighted(typed_page, typed_url):
    """End to end with the model: the answer cites the slide, and the citation's entry opens the deck there."""
    typed_page.goto(typed_url)
    typed_page.wait_for_selector("#question textarea")
    ask(typed_page, "How tall is the Kestrel Point lighthouse?")
    typed_page.wait_for_selector('#chat a[href="#cite-1"]', timeout=30_000)
    assert "52" in typed_page.inner_text("#chat")
    assert "deck.pptx, slide 3, line" in typed_page.inner_text("#sources #cite-1 .where")
    typed_page.click("#open-doc input")
    typed_page.locator("ul[role=listbox] li").first.click()
    shown = shown_place(typed_page)
    assert shown["place"] == "deck.pptx · slide 3, line 2" and shown["heading"] == "Slide 3"
    assert "52 metres tall" in shown["mark"] and shown["numbers"] == ["2"]
    typed_page.screenshot(path=str(SHOTS / "slide.png"), full_page=True)


@pytest.mark.parametrize("name, page_no, lines, sentence, label, heading", PLACES, ids=[p[0] for p in PLACES])
def test_a_link_to_a_cited_place_opens_every_type_there(
    typed_page, typed_url, name, page_no, lines, sentence, label, heading
):
    """The viewer a citation opens, reached by its link (?doc=&part=&lines=&quote=): the place is labelled as a
    person finds it (paragraph 24, slide 3, chapter 2, p. 2), shown under its page's heading, scrolled into sight,
    and the quote is what is highlighted: the text at that place is the cited sentence."""
    query = {"doc": name, "part": page_no or "", "lines": lines, "quote": sentence}
    typed_page.goto(typed_url + "?" + urllib.parse.urlencode(query))
    shown = shown_place(typed_page)
    assert shown["place"] == f"{name} · {label}"
    assert shown["mark"] == sentence
    assert shown["heading"] == heading
    assert shown["numbers"] == [("¶ " if "paragraph" in label else "") + label.rsplit(" ", 1)[1]]
    # shown_place waited until the highlight is inside the viewer and the window: whether that took a scroll
    # depends on how long the document is at this width (a short deck or scan fits unscrolled)


def test_a_link_whose_quote_is_gone_marks_its_lines_or_says_the_place_is_gone(typed_page, typed_url):
    """A file edited after it was indexed: the cited paragraph is shown when the quote is no longer in it, and a
    place past its end is named as gone; a link out of the corpus folder is refused."""
    query = {"doc": "memo.docx", "lines": "24", "quote": "A sentence this memo never had."}
    typed_page.goto(typed_url + "?" + urllib.parse.urlencode(query))
    typed_page.wait_for_selector("#doc-view mark", timeout=60_000)
    assert typed_page.inner_text("#doc-view .place") == "memo.docx · paragraph 24"
    assert typed_page.locator("#doc-view mark").all_inner_texts() == ["The ferry repairs cost 4,200 euros."]
    query = {"doc": "memo.docx", "lines": "90-95", "quote": "A sentence this memo never had."}
    typed_page.goto(typed_url + "?" + urllib.parse.urlencode(query))
    typed_page.wait_for_selector("#doc-view .place", timeout=60_000)
    assert "the cited place is not in the file as it is now" in typed_page.inner_text("#doc-view .place")
    assert typed_page.locator("#doc-view mark").count() == 0
    typed_page.goto(typed_url + "?" + urllib.parse.urlencode({"doc": "../secret.txt", "lines": "1"}))
    typed_page.wait_for_selector("#doc-view p", timeout=60_000)
    assert "outside the corpus folder" in typed_page.inner_text("#doc-view")
