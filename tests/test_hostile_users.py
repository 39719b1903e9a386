"""Hostile users and hostile documents at the edges (issue 19): uploads that would replace, overflow or slip into
the corpus unindexed; a UI login that fails open; document text that makes the reader's browser fetch a URL."""

from __future__ import annotations

import html
import re

import pytest
from bs4 import BeautifulSoup

from qa.answer import Answer, Citation
from qa.chunking import Chunk
from qa.documents import safe_filename
from qa.errors import DocumentError, IndexBusyError
from qa.retrieve import Passage
from tests.conftest import run_qa

EXISTING = "000_6f09b0eae4eaabc4.txt"
# Each line fetches http://127.0.0.1:9/... in a browser that renders it as Markdown (or HTML), or turns into a link.
HOSTILE = (
    "The logo ![logo](http://127.0.0.1:9/leak.png) and ![ref][r] and <img src=http://127.0.0.1:9/b.png>.\n"
    "[r]: http://127.0.0.1:9/ref.png\n"
    "Links: [click](http://127.0.0.1:9/c) <http://127.0.0.1:9/auto> http://127.0.0.1:9/bare www.example.com "
    "mail@example.com and $$\\href{http://127.0.0.1:9/tex}{x}$$ **bold** `code` | a | b |"
)


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


# ---- what the UI shows ------------------------------------------------------------------------------------------
def shown(markdown: str) -> BeautifulSoup:
    """A chat message or the upload status as the browser gets it: Gradio renders Markdown with raw HTML allowed."""
    from markdown_it import MarkdownIt

    return BeautifulSoup(MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown), "html.parser")


def assert_inert(markdown: str, text: str) -> None:
    """Shows `text` as it is, and nothing in it loads or links anywhere but a citation in the page."""
    page = shown(markdown)
    assert page.find_all(["img", "script", "iframe", "object", "embed", "video", "audio", "source", "link"]) == []
    assert all(a.get("href", "").startswith("#cite-") for a in page.find_all("a")), page
    # Gradio's Markdown (marked, GFM) also links bare URLs, www. names and e-mail addresses, and renders $$ as LaTeX
    assert not re.search(r"(?i)https?:|www\.|\w@\w|\$\$", markdown)
    assert re.sub(r"\s+", " ", page.get_text()).strip() == re.sub(r"\s+", " ", text).strip()


def _answer(text: str, passage: str = "The logo is on the first page.", quote: str = "") -> Answer:
    chunk = Chunk("c1", passage, "doc.txt", 0, len(passage), 1, 1, None, "doc", "h")
    cite = Citation(1, "doc.txt", 1, 1, None, quote or passage, 1.0, "c1")
    return Answer(question="q", text=text, abstained=False, citations=[cite], retrieved=[Passage(chunk, 1.0, 1.0)])


def test_document_text_quoted_in_an_answer_fetches_and_links_nothing(settings):
    from qa.ui import answer_markdown

    text = HOSTILE + " The logo is on the first page [1]."
    markdown = answer_markdown(_answer(text))
    assert_inert(markdown, text)
    assert [a["href"] for a in shown(markdown).find_all("a")] == ["#cite-1"]  # the citation is still a link


def test_the_sources_panel_shows_document_markup_as_text():
    from qa.ui import sources_html

    answer = _answer("The logo is on the first page [1].", HOSTILE, quote="![logo](http://127.0.0.1:9/leak.png)")
    page = BeautifulSoup(sources_html(answer, show_retrieved=True), "html.parser")  # a gr.HTML panel: no Markdown
    assert page.find_all(["img", "a", "script"]) == [] and "![logo](http://127.0.0.1:9/leak.png)" in page.get_text()


def _app_fn(app, name: str):
    return next(f.fn for f in app.fns.values() if getattr(f, "name", "") == name)


class _Streaming:
    """Stands in for Assistant in the chat: streams a hostile draft, then the checked answer."""

    def __init__(self, settings, pieces: list[str], answer: Answer):
        self.settings, self.pieces, self.answer = settings, pieces, answer

    def documents(self):
        return []

    def stream(self, question, history=None, sources=None, top_k=None):
        yield from self.pieces
        yield self.answer


def test_the_streamed_draft_and_the_question_echo_fetch_and_link_nothing(settings):
    from qa.ui import build_app

    text = HOSTILE + " [1]"
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    app = build_app(_Streaming(settings, pieces, _answer(text)))
    question = "What is ![x](http://127.0.0.1:9/q.png)?"
    steps = [chat for chat, *_ in _app_fn(app, "respond")(question, [], [], 4, False)]
    for chat in steps:
        assert_inert(chat[0]["content"], question)
    drafts = [chat[1]["content"] for chat in steps[:-1] if chat[1:] and chat[1]["content"].endswith(" ▌")]
    assert len(drafts) == len(pieces)  # (status lines shown before the draft starts are the UI's own text)
    for n, draft in enumerate(drafts, 1):
        assert_inert(draft, "".join(pieces[:n]) + " ▌")
    assert_inert(steps[-1][1]["content"], text)


@pytest.mark.server  # a web server and a browser: left out of `make check`
@pytest.mark.server
def test_in_a_real_browser_a_hostile_answer_and_draft_fetch_nothing(settings):
    """The chat as Chromium renders it (Gradio's own Markdown): no image, no request to the URLs in the text."""
    import socket
    import time

    from playwright.sync_api import sync_playwright

    from qa.ui import CSS, build_app
    from tests.test_ui import CHROMIUM

    text = HOSTILE + " The logo is on the first page [1]."
    pieces = [text[i : i + 40] for i in range(0, len(text), 40)]

    class Slow(_Streaming):
        def stream(self, *args, **kwargs):
            for event in super().stream(*args, **kwargs):
                time.sleep(0.05)
                yield event

    app = build_app(Slow(settings, pieces, _answer(text, HOSTILE)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, css=CSS, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#question textarea", "What is ![x](http://127.0.0.1:9/q.png)?")
            page.click("#ask")
            page.wait_for_function("document.querySelector('#chat').innerText.includes('▌')", timeout=30_000)
            page.wait_for_selector('#chat a[href="#cite-1"]', timeout=30_000)
            chat = page.locator("#chat")
            assert chat.locator("img").count() == 0
            assert "![logo](http://127.0.0.1:9/leak.png)" in chat.inner_text()  # shown as text
            assert chat.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))") == ["#cite-1"]
            assert page.locator("#sources img").count() == 0
            browser.close()
    finally:
        app.close()
    assert not [u for u in requested if "127.0.0.1:9/" in u]


def test_the_upload_status_says_when_a_file_was_saved_under_another_name(assistant, corpus, tmp_path):
    from qa.ui import build_app

    (corpus / EXISTING).write_text("The granary stored 900 sacks of barley.\n")
    assistant.ingest()
    upload = _app_fn(build_app(assistant), "upload")
    new = tmp_path / "upload.bin"
    new.write_text("The ferry to the island leaves at noon.\n")

    class Uploaded(str):  # what Gradio passes: a temp path with the name the user's file had
        orig_name = EXISTING

    status, *_ = upload([Uploaded(new)], progress=lambda *a, **k: None)
    assert f"saved as 000_6f09b0eae4eaabc4 (2).txt because {EXISTING} exists" in html.unescape(status)
    status, *_ = upload([Uploaded(new)], progress=lambda *a, **k: None)
    assert "already in the corpus as 000_6f09b0eae4eaabc4 (2).txt" in html.unescape(status)

    Uploaded.orig_name = "![x](https:127.0.0.1:9).txt"  # a file name is document text too
    status, *_ = upload([Uploaded(new)], progress=lambda *a, **k: None)
    assert_inert(status, f"✅ {Uploaded.orig_name} indexed (1 chunks)")


# ---- the UI's login --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env,args,expected",
    [
        ({"QA_UI_PASSWORD": "pw"}, [], "QA_UI_USER and QA_UI_PASSWORD .* QA_UI_PASSWORD is set but QA_UI_USER is not"),
        ({"QA_UI_USER": "me"}, [], "QA_UI_USER and QA_UI_PASSWORD .* QA_UI_USER is set but QA_UI_PASSWORD is not"),
        ({}, ["--host", "0.0.0.0"], "--host 0.0.0.0 .* without a login: set QA_UI_USER and QA_UI_PASSWORD, or pass"),
    ],
)
@pytest.mark.server  # `qa ui` (about 10 s of Gradio imports each): left out of `make check`
def test_the_ui_refuses_to_start_open_by_mistake(tmp_path, env, args, expected):
    # The corpus does not exist: a UI that got past the check would stop there instead, before any model loads.
    env = {"QA_VECTORSTORE": str(tmp_path / "index"), "QA_CORPUS": str(tmp_path / "none"), **env}
    result = run_qa("ui", "--port", "9", *args, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(f"error: .*{expected}.*", lines[0]), result.stderr


@pytest.mark.server  # `qa ui`: left out of `make check`
def test_a_ui_with_a_login_on_all_addresses_says_where_it_is_reachable(tmp_path):
    env = {"QA_VECTORSTORE": str(tmp_path / "index"), "QA_CORPUS": str(tmp_path / "none")}
    result = run_qa("ui", "--port", "9", "--host", "0.0.0.0", env={**env, "QA_UI_USER": "me", "QA_UI_PASSWORD": "pw"})
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and re.match("note: .*reachable from other machines.*0.0.0.0 port 9.*login", lines[0])
    assert lines[1].startswith("error: corpus folder") and "does not exist" in lines[1]  # got past the check


@pytest.mark.parametrize(
    "host,share,allow,login,expected",
    [
        ("127.0.0.1", False, False, False, ""),
        ("localhost", False, False, False, ""),
        ("::1", False, False, False, ""),
        ("192.0.2.7", False, False, False, "error: --host 192.0.2.7 port 9 would let anyone"),
        ("myhost.example", False, False, False, "error: --host myhost.example port 9 would let anyone"),
        ("127.0.0.1", True, False, False, "error: a public Gradio share link would let anyone"),
        ("0.0.0.0", False, True, False, "warning: the UI is reachable from other machines through --host 0.0.0.0"),
        ("127.0.0.1", True, False, True, "note: the UI is reachable from other machines through a public Gradio"),
    ],
)
def test_which_addresses_need_a_login(settings, host, share, allow, login, expected):
    from qa.errors import ConfigError
    from qa.ui import check_access

    if login:
        settings = settings.replace(ui_user="me", ui_password="pw")
    try:
        said = check_access(settings, host, 9, share, allow)
    except ConfigError as exc:
        said = f"error: {exc}"
    assert said.startswith(expected) and bool(said) == bool(expected)
