"""The Gradio chat UI: a thin edge over qa.api.Assistant.

Everything taken from documents or the model is shown as text: HTML-escaped in the HTML panels, and in the chat
(which renders Markdown) every punctuation character is a character reference (`inert`). A document holding
`<script>`, `<img onerror=...>`, `![x](http://...)` or a bare URL shows as text, runs nothing and fetches nothing.
"""

from __future__ import annotations

import html
import ipaddress
import json
import re
import string
import sys
from pathlib import Path

import gradio as gr

from qa.answer import Answer, Evidence
from qa.api import Assistant
from qa.documents import Document, file_type, supported_list
from qa.documents import place as _where
from qa.errors import ConfigError, QAError
from qa.text import CHECKED_MARKER, DECLINE_TEXT

# Curated questions for the shipped seeds/ (the README's screenshot shows them); any other corpus gets questions
# made from its own documents by example_questions().
SEED_EXAMPLES = [
    "How many MEK members did Albania offer to take in?",
    "Who rejected the asylum offer, and why?",
    "What did the State Department spokeswoman urge the MEK to do?",
    "How do the sources describe Camp Liberty?",
]
SEEDS = Path(__file__).resolve().parent.parent / "seeds"

_TITLE_MARKUP = re.compile(r"^[#=*>\s-]+|[#=*\s]+$")
_BOILERPLATE = re.compile(r"(?i)\b(skip to|menu|navigation|links?|home|cookies?|sign in|log in|subscribe)\b")
_NAME = re.compile(r"[A-Z][\w'’-]+(?:\s+(?:of|the|de|van|von)?\s*[A-Z][\w'’-]*)*")


def _title(text: str) -> str:
    """The first line when it reads as a title: short, no sentence full stop (a Markdown '# ' or '**' dropped)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    title = _TITLE_MARKUP.sub("", first.strip())
    if _BOILERPLATE.search(title) or "»" in title:  # a web page's navigation or breadcrumbs, not its title
        return ""
    if 2 <= len(title) <= 80 and len(title.split()) <= 10 and title[-1] not in ".!?:;,":
        return title if any(ch.isalpha() for ch in title) else ""
    return ""


def _main_name(text: str) -> str:
    """The capitalised name the text repeats most (a sentence's first word does not count as a name)."""
    counts: dict[str, int] = {}
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        words = sentence.split(maxsplit=1)
        for match in _NAME.finditer(words[1] if len(words) > 1 else ""):
            name = re.sub(r"['’]s$", "", match.group().strip())
            counts[name] = counts.get(name, 0) + 1
    return max(counts, key=lambda n: (counts[n], -list(counts).index(n)), default="")


def example_questions(documents: list[tuple[str, str]], limit: int = 4) -> list[str]:
    """Example questions for the indexed corpus, from (source, opening text) pairs, largest documents first.

    The shipped seeds keep their curated questions. Otherwise each document gives at most one question: "What is
    "TITLE" about?" when its first line reads as a title, else "What do the documents say about NAME?" for the
    name its opening repeats most; a document with neither gives none. Deterministic: the same corpus, the same
    questions.
    """
    if not documents:
        return []
    if SEEDS.is_dir() and sorted(s for s, _ in documents) == sorted(p.name for p in SEEDS.iterdir() if p.is_file()):
        return list(SEED_EXAMPLES)
    questions: list[str] = []
    for _, text in documents:
        title = _title(text)
        name = "" if title else _main_name(text[:2000])
        question = f'What is "{title}" about?' if title else f"What do the documents say about {name}?" if name else ""
        if question and question not in questions:
            questions.append(question)
        if len(questions) == limit:
            break
    return questions


def corpus_examples(assistant: Assistant, limit: int = 4) -> list[str]:
    """example_questions() for what `assistant` has indexed: each document's first passage, largest first."""
    docs = sorted(assistant.documents(), key=lambda d: (-d["chunks"], d["source"]))
    opening = []
    for d in docs[: limit * 3]:
        chunks = assistant.store.chunks_of(d["source"])
        opening.append((d["source"], chunks[0].text if chunks else ""))
    if len(docs) > limit * 3:  # still recognise the seeds by all their names
        opening += [(d["source"], "") for d in docs[limit * 3 :]]
    return example_questions(opening, limit)


CSS = """
.cite { border-left: 3px solid #3b6ea8; padding: 4px 10px; margin: 8px 0; }
.cite .where { font-size: 0.9em; color: #555; }
.cite blockquote { margin: 4px 0; white-space: pre-wrap; }
.cite mark, .doc mark { background: #ffe58a; }
.doc { font-family: ui-monospace, monospace; font-size: 0.85em; max-height: 480px; overflow: auto; }
.doc .ln { color: #999; user-select: none; display: inline-block; width: 3.5em; }
.doc div[id^="L"] { padding-left: 3.5em; text-indent: -3.5em; }  /* a wrapped line clears the numbers */
.doc .place { font-family: sans-serif; }
.doc .page-head { font-family: sans-serif; font-weight: bold; color: #3b6ea8; margin: 10px 0 2px; }
.doc .hit { background: #fff6d0; }
.decline { color: #8a4b00; }
"""

SCROLL_TO_MARK = (
    "() => { setTimeout(() => { const m = document.querySelector('#doc-view mark');"
    " if (m) m.scrollIntoView({block: 'center'}); }, 300); }"
)


# Every ASCII punctuation character is Markdown or HTML syntax somewhere: images and links `![](…)`, autolinks
# `<…>`, `http://`, `www.` and `a@b.c`, emphasis, code, tables, `$$` math, tags and entities. As a numeric
# character reference it shows as itself and means nothing, whether the text is read as Markdown or as HTML.
_INERT = {ord(ch): f"&#{ord(ch)};" for ch in string.punctuation}


def inert(text: str) -> str:
    """`text` for a Markdown component (the chat, the upload status): shown as typed, with no markup, no image,
    no link and nothing fetched."""
    return text.translate(_INERT)


def answer_markdown(answer: Answer) -> str:
    """The answer for the chat: inert text, each [n] a link to its citation in the sources panel (the only links)."""
    if answer.abstained:
        return (
            f"**{DECLINE_TEXT}** Nothing in the indexed documents answers this; "
            "the closest passages are in the Sources panel."
        )
    parts = CHECKED_MARKER.split(answer.text)  # text, citation number, text, ...
    text = "".join(inert(p) if i % 2 == 0 else f"[\\[{p}\\]](#cite-{p})" for i, p in enumerate(parts))
    if answer.unsupported:
        text += f"\n\n_{len(answer.unsupported)} unsupported sentence(s) removed after checking._"
    return text


def _highlight(passage: str, quote: str) -> str:
    at = passage.find(quote) if quote else -1
    if at < 0:
        return html.escape(passage)
    return (
        html.escape(passage[:at]) + "<mark>" + html.escape(quote) + "</mark>" + html.escape(passage[at + len(quote) :])
    )


def sources_html(answer: Answer | None, show_retrieved: bool = False) -> str:
    if answer is None:
        return "<p>Ask a question: its sources appear here.</p>"
    parts = []
    by_id = {p.chunk.id: p.chunk for p in answer.retrieved}
    for c in answer.citations:
        chunk = by_id.get(c.chunk_id)
        body = _highlight(chunk.text, c.quote) if chunk else f"<mark>{html.escape(c.quote)}</mark>"
        parts.append(
            f'<div class="cite" id="cite-{c.n}"><b>[{c.n}]</b> '
            f'<span class="where">{html.escape(_where(c.source, c.start_line, c.end_line, c.page))}</span>'
            f"<blockquote>{body}</blockquote></div>"
        )
    if answer.abstained:
        parts.append(f'<p class="decline"><b>{DECLINE_TEXT}</b> Closest passages:</p>')
    if answer.abstained or show_retrieved:
        if not answer.abstained:
            parts.append("<p><b>Retrieved passages</b> (rank order):</p>")
        for p in answer.retrieved:
            ch = p.chunk
            where = html.escape(_where(ch.source, ch.start_line, ch.end_line, ch.page))
            parts.append(
                f'<div class="cite retrieved"><span class="where">{where} · score {p.score:.3f}</span>'
                f"<blockquote>{html.escape(ch.text)}</blockquote></div>"
            )
    return "\n".join(parts) or "<p>No sources.</p>"


def evidence_html(passages) -> str:
    """The passages the model is about to read, shown while it reads them (escaped like every document text)."""
    parts = ["<p><b>Reading these passages</b> (rank order):</p>"]
    for p in passages:
        ch = p.chunk
        where = html.escape(_where(ch.source, ch.start_line, ch.end_line, ch.page))
        parts.append(
            f'<div class="cite retrieved"><span class="where">{where}</span>'
            f"<blockquote>{html.escape(ch.text)}</blockquote></div>"
        )
    return "\n".join(parts) if passages else "<p>No passage matched the question.</p>"


def _quote_span(text: str, quote: str, lo: int, hi: int) -> tuple[int, int] | None:
    """Where `quote` is in text[lo:hi] (any run of white space matching any other: a quote may cross a line)."""
    tokens = quote.split()
    if not tokens:
        return None
    found = re.compile(r"\s+".join(map(re.escape, tokens))).search(text, lo, hi)
    return found.span() if found else None


def document_html(doc: Document, start: int, end: int, page: int | None = None, quote: str = "") -> str:
    """The document with the cited place marked: lines `start`..`end` of `page` (a slide, a chapter; None outside
    paged types) shaded, the quote in them highlighted. Each page/slide/chapter has a heading, each line its number
    as cited. With no lines (start 0) the quote alone finds the place, on `page` if given."""
    kind = file_type(doc.source)
    page_word = (kind.page_word if kind else "p.").replace("p.", "page")
    mark_no = "¶ " if kind and kind.line_word == "paragraph" else ""  # the number column counts paragraphs
    lines = doc.text.split("\n")
    offsets, at = [], 0
    for line in lines:
        offsets.append(at)
        at += len(line) + 1
    sections = doc.sections or [(0, len(doc.text), None)]
    line_page, k = [], 0
    for offset in offsets:  # pages are joined by one "\n", so a line past a section's end starts the next
        while k < len(sections) - 1 and offset > sections[k][1]:
            k += 1
        line_page.append(sections[k][2])
    on_page = [i for i in range(len(lines)) if page is None or line_page[i] == page]
    cited = {i for i in on_page if start <= doc.line_map[i] <= end}
    if cited:
        first, last = min(cited), max(cited)
        span = _quote_span(doc.text, quote, offsets[first], offsets[last] + len(lines[last]))
    else:  # no lines given, or they are not in this version of the file: look for the quote
        span = (
            _quote_span(doc.text, quote, offsets[on_page[0]], offsets[on_page[-1]] + len(lines[on_page[-1]]))
            if on_page
            else None
        )
        if span:
            cited = {i for i in on_page if offsets[i] < span[1] and offsets[i] + len(lines[i]) >= span[0]}
    if cited:
        first, last = min(cited), max(cited)
        where = _where(doc.source, doc.line_map[first], doc.line_map[last], line_page[first])
        head = f'<p class="place"><b>{html.escape(doc.source)}</b> · {html.escape(where[len(doc.source) + 2 :])}</p>'
    else:
        head = (
            f'<p class="place"><b>{html.escape(doc.source)}</b> · the cited place is not in the file as it is now '
            "(it changed after it was indexed)</p>"
        )
    rows: list[str] = []
    shown_page: object = object()
    for i, text in enumerate(lines):
        if line_page[i] is not None and line_page[i] != shown_page:
            if rows:
                rows.append("</section>")
            rows.append(
                f'<section data-page="{line_page[i]}"><div class="page-head">{page_word.capitalize()} '
                f"{line_page[i]}</div>"
            )
        shown_page = line_page[i]
        if span and i in cited and span[0] < offsets[i] + len(text) and span[1] > offsets[i]:
            a, b = max(span[0] - offsets[i], 0), min(span[1] - offsets[i], len(text))
            body = html.escape(text[:a]) + f"<mark>{html.escape(text[a:b])}</mark>" + html.escape(text[b:])
        elif i in cited and not span:
            body = f"<mark>{html.escape(text)}</mark>"  # the quote is not found: the cited lines are the place
        else:
            body = html.escape(text) or "&nbsp;"
        hit = ' class="hit"' if i in cited else ""
        rows.append(f'<div id="L{i}"{hit}><span class="ln">{mark_no}{doc.line_map[i]}</span>{body}</div>')
    if shown_page is not None and rows:
        rows.append("</section>")
    return f'<div class="doc">{head}{"".join(rows)}</div>'


def place_value(source: str, page: int | None, start: int, end: int, quote: str = "") -> str:
    """A cited place as the "Open a cited document" list carries it (JSON: any file name, any quote)."""
    return json.dumps([source, page, start, end, quote])


def build_app(assistant: Assistant) -> gr.Blocks:
    settings = assistant.settings

    def documents_table():
        return [[d["source"], d["chunks"]] for d in assistant.documents()]

    def respond(message, chat, history, top_k, show_retrieved):
        chat = list(chat or [])
        chat.append({"role": "user", "content": inert(message or "")})

        def status(text: str, panel=None):
            # the question shows at once; then what qa is doing, until the draft starts
            bubble = {"role": "assistant", "content": f"_{text}_"}
            return chat + [bubble], history, gr.update() if panel is None else panel, gr.update(), ""

        yield status("searching the documents…")
        try:
            draft = ""
            for event in assistant.stream(message, history, top_k=int(top_k)):
                if isinstance(event, Answer):
                    answer = event
                    break
                if isinstance(event, Evidence):
                    n = len(event.passages)
                    yield status(f"reading {n} passage{'s' * (n != 1)}…", evidence_html(event.passages))
                    continue
                draft += event
                yield (
                    chat + [{"role": "assistant", "content": inert(draft) + " ▌"}],
                    history,
                    gr.update(),
                    gr.update(),
                    "",
                )
        except QAError as exc:
            yield (
                chat + [{"role": "assistant", "content": f"⚠️ {inert(str(exc))}"}],
                history,
                gr.update(),
                gr.update(),
                "",
            )
            return
        chat.append({"role": "assistant", "content": answer_markdown(answer)})
        history = list(history or []) + [(answer.question, answer.text)]
        choices = [
            (
                f"[{c.n}] {_where(c.source, c.start_line, c.end_line, c.page)}",
                place_value(c.source, c.page, c.start_line, c.end_line, c.quote),
            )
            for c in answer.citations
        ]
        if answer.abstained:
            choices = [
                (
                    _where(p.chunk.source, p.chunk.start_line, p.chunk.end_line, p.chunk.page),
                    place_value(p.chunk.source, p.chunk.page, p.chunk.start_line, p.chunk.end_line),
                )
                for p in answer.retrieved
            ]
        yield chat, history, sources_html(answer, show_retrieved), gr.update(choices=choices, value=None), ""

    loaded: dict[str, tuple[tuple, Document]] = {}  # source -> (its file's size and time, the loaded document)

    def load(source: str) -> Document:
        # Opening a cited place loads the file again (a scan is OCR'd again): keep the last few while unchanged.
        try:
            stat = (Path(settings.corpus) / source).stat()
            key: tuple = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = ()
        if source in loaded and key and loaded[source][0] == key:
            return loaded[source][1]
        doc = assistant.document(source)
        if len(loaded) >= 8:
            loaded.pop(next(iter(loaded)))
        loaded[source] = (key, doc)
        return doc

    def open_place(source: str, page: int | None, start: int, end: int, quote: str = "") -> str:
        try:
            return document_html(load(source), start, end, page, quote)
        except QAError as exc:
            return f"<p>⚠️ {html.escape(str(exc))}</p>"

    def open_document(choice):
        if not choice:
            return ""
        source, page, start, end, quote = json.loads(choice)
        return open_place(source, page, start, end, quote)

    def open_from_url(request: gr.Request):
        """A cited place as a link: ?doc=FILE&part=N&lines=A-B&quote=TEXT, part being the page, slide or chapter
        (part, lines and quote optional; not "page", which Gradio keeps for pages of an app)."""
        query = dict(request.query_params) if request else {}
        if not query.get("doc"):
            return ""
        lines = re.fullmatch(r"\s*(\d+)\s*(?:[-–]\s*(\d+))?\s*", query.get("lines", ""))
        page = query.get("part", "").strip()
        if (query.get("lines") and not lines) or (page and not page.isdigit()):
            return "<p>⚠️ a link to a cited place reads ?doc=FILE&amp;part=N&amp;lines=A-B&amp;quote=TEXT</p>"
        start, end = (int(lines[1]), int(lines[2] or lines[1])) if lines else (0, 0)
        return open_place(query["doc"], int(page) if page else None, start, end, query.get("quote", ""))

    def upload(files, progress=gr.Progress()):  # noqa: B008 (how Gradio injects a progress bar)
        messages = []
        for f in files or []:
            path = Path(getattr(f, "name", f))
            original = getattr(f, "orig_name", None) or path.name
            try:
                report = assistant.add_document(
                    path, original, progress=lambda d, t, s: progress((d, t), desc=f"indexing {s}")
                )
            except QAError as exc:
                messages.append(f"❌ {inert(str(exc))} — nothing was indexed")
                continue
            name, asked = report.source, report.requested
            if report.outcome == "unchanged":
                where = "" if name == asked else f" as {name}"
                messages.append(f"☑️ {inert(f'{asked} is already in the corpus{where} with the same content')}")
                continue
            said = f"saved as {name} because {asked} exists; " if report.outcome == "renamed" else f"{name} "
            chunks = next((d["chunks"] for d in assistant.documents() if d["source"] == name), 0)
            said += f"{'replaced and ' if report.outcome == 'replaced' else ''}indexed ({chunks} chunks)"
            failed = "; ".join(f"{s}: {r}" for s, r in report.failed)
            messages.append(f"✅ {inert(said)}" + (f" — skipped: {inert(failed)}" if failed else ""))
        sources = [d["source"] for d in assistant.documents()]
        return "\n\n".join(messages), documents_table(), gr.update(choices=sources, value=None)

    def remove(source):
        if not source:
            return "Choose a document to remove.", documents_table(), gr.update()
        try:
            assistant.remove_document(source)
            message = f"Removed {inert(source)}."
        except QAError as exc:
            message = f"❌ {inert(str(exc))}"
        return message, documents_table(), gr.update(choices=[d["source"] for d in assistant.documents()], value=None)

    def api_ask(question: str) -> dict:
        """Ask one question; returns the answer object (same fields as `qa ask --json`)."""
        try:
            return assistant.ask(question).to_dict()
        except QAError as exc:
            # gr.Error reaches the API caller with its message; any other exception is hidden (show_error=False)
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="qa — answers from your documents") as app:
        gr.Markdown("## qa — answers from your documents, with checked citations")
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Chat", height=480, elem_id="chat", sanitize_html=True, feedback_options=None
                )
                with gr.Row():
                    box = gr.Textbox(
                        placeholder="Ask about your documents…", show_label=False, scale=5, elem_id="question"
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                clear = gr.Button("Clear chat", elem_id="clear")
                examples = corpus_examples(assistant)
                if examples:
                    gr.Examples(examples, inputs=box, label="Example questions")
            with gr.Column(scale=2):
                sources = gr.HTML(sources_html(None), label="Sources", elem_id="sources")
                cited = gr.Dropdown(label="Open a cited document at that place", choices=[], elem_id="open-doc")
                viewer = gr.HTML("", elem_id="doc-view")
        with gr.Accordion("Documents", open=False, elem_id="documents"):
            uploader = gr.File(label=f"Add documents ({supported_list(' ')})", file_count="multiple", elem_id="upload")
            upload_status = gr.Markdown(elem_id="upload-status")
            table = gr.Dataframe(
                documents_table(), headers=["document", "chunks"], interactive=False, elem_id="doc-table"
            )
            with gr.Row():
                to_remove = gr.Dropdown([d["source"] for d in assistant.documents()], label="Document")
                remove_btn = gr.Button("Remove from corpus (deletes the file)", variant="stop")
        with gr.Accordion("Settings", open=False):
            gr.Markdown(
                f"Answering model: `{settings.llm}:{settings.llm_model}`"
                f"{' at ' + settings.llm_base_url if settings.llm == 'openai' else ''} · "
                f"embeddings: `{settings.embed_model}` · index: `{settings.chroma_url or settings.vectorstore}`"
            )
            top_k = gr.Slider(1, 10, value=settings.top_k, step=1, label="Passages per answer")
            show_retrieved = gr.Checkbox(False, label="Show retrieved passages")

        outputs = [chatbot, history, sources, cited, box]
        box.submit(respond, [box, chatbot, history, top_k, show_retrieved], outputs, api_visibility="private")
        send.click(respond, [box, chatbot, history, top_k, show_retrieved], outputs, api_visibility="private")
        clear.click(
            lambda: ([], [], sources_html(None), gr.update(choices=[], value=None), ""),
            None,
            [chatbot, history, sources, cited, viewer],
            api_visibility="private",
        )
        cited.change(open_document, cited, viewer, api_visibility="private").then(None, js=SCROLL_TO_MARK)
        app.load(open_from_url, None, viewer, api_visibility="private").then(None, js=SCROLL_TO_MARK)
        uploader.upload(upload, uploader, [upload_status, table, to_remove], api_visibility="private")
        remove_btn.click(remove, to_remove, [upload_status, table, to_remove], api_visibility="private")
        gr.api(api_ask, api_name="ask")
    return app


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "": it may be reachable from elsewhere


def check_access(settings, host: str, port: int, share: bool, allow_remote: bool) -> str:
    """Refuse to start a UI open to others by mistake. Returns a line to print when it is reachable from other
    machines, else "". Raises ConfigError: half a login (one of user and password), or a UI bound beyond this
    machine (or --share) with no login and no --allow-remote."""
    user, password = bool(settings.ui_user), bool(settings.ui_password)
    if user != password:
        have, lack = ("QA_UI_USER", "QA_UI_PASSWORD") if user else ("QA_UI_PASSWORD", "QA_UI_USER")
        raise ConfigError(
            f"QA_UI_USER and QA_UI_PASSWORD (--ui-user, --ui-password) go together: {have} is set but {lack} is "
            "not, which would leave the UI without a login; set both, or neither"
        )
    if not share and _is_loopback(host):
        return ""
    where = "a public Gradio share link" if share else f"--host {host or '(all addresses)'} port {port}"
    if user:
        return f"note: the UI is reachable from other machines through {where}; login required (QA_UI_USER)"
    if not allow_remote:
        raise ConfigError(
            f"{where} would let anyone who reaches it use the UI without a login: set QA_UI_USER and "
            "QA_UI_PASSWORD, or pass --allow-remote to run it open"
        )
    return f"warning: the UI is reachable from other machines through {where}, with NO login (--allow-remote)"


def launch(
    assistant: Assistant, host: str = "127.0.0.1", port: int = 7860, share: bool = False, allow_remote: bool = False
) -> None:
    s = assistant.settings
    note = check_access(s, host, port, share, allow_remote)  # before anything slow loads
    if note:
        print(note, file=sys.stderr, flush=True)
    auth = (s.ui_user, s.ui_password) if s.ui_user and s.ui_password else None
    assistant.ingest()  # the index mirrors the corpus before the first question
    assistant.generator  # load the model now, not on the first question  # noqa: B018
    app = build_app(assistant)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        css=CSS,
        show_error=False,
    )
