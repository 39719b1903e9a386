"""`qa bench` (or `python -m qa.bench`): speed and memory, side by side with the pipeline a user would otherwise
build.

The baseline is the common LangChain recipe on the same machine, in the same run, with the same embedding
model: RecursiveCharacterTextSplitter(1000, 200) + HuggingFaceEmbeddings + Chroma.from_documents persisted to
disk. Every ingest figure is the median of --runs fresh runs; latency figures are medians (and p95) over all
queries. Nothing here asserts a number: tests run a tiny version to prove the harness works, the figures go
to eval/results/bench/ (JSON + PNG) and the README.

Sections (all by default; pick with --only):
  ingest   fresh ingest of the seeds and of a SciFact subset (ours per embedding backend, and the baseline),
           MB of text/s and chunks/s; nDCG@10 on the subset for each; re-ingest unchanged; one file changed
  query    retrieval latency (dense, hybrid) on the seeds and SciFact; full answers on seed questions with the
           default local model (time to first token, total)
  scale    index sizes (default 1k, 10k, 100k chunks): ingest time and hybrid/dense query latency by size
  memory   peak RSS of `qa ingest`, `qa ask` and the UI process (each a separate process, read from /proc)
  doctypes ingest speed per document type: --type-files files of each type (made here), each type alone:
           files/s, pages/s (PDF pages, slides, chapters; a scan's pages through OCR), MB of files/s, chunks/s
  time     where an answer's time goes (retrieve, context, prefill, first token, generate, check), per answer and
           as medians, before and after in one picture (time.png), read from saved `qa eval` results (--results;
           by default session 6's start and today's pipeline on the seeds, measured in the same hour)

It measures the seeds and questions of a source checkout. The baseline and the plots need the dev extras
(langchain-huggingface, langchain-chroma, matplotlib: `pip install -e '.[dev]'`); they are imported only here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from qa.errors import QAError

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "bench" / "scifact"
CHUNKS_PER_SCIFACT_DOC = 4.15  # measured: 21,489 chunks from 5,183 abstracts at chunk_size 600


def ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def text_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version()}


# The benchmark's own dependencies (module: the pip package that brings it); none of them is needed to run qa.
DEV_EXTRAS = {
    "langchain_huggingface": "langchain-huggingface",
    "langchain_chroma": "langchain-chroma",
    "matplotlib": "matplotlib",
    "reportlab": "reportlab",
}
NEEDS = {
    "ingest": ["langchain_huggingface", "langchain_chroma", "matplotlib"],
    "scale": ["matplotlib"],
    "time": ["matplotlib"],
    "doctypes": ["reportlab"],  # writes the text-layer PDFs (the other types use the libraries qa reads them with)
}


def dev_import(module: str):
    """Import one of DEV_EXTRAS, or raise a QAError saying which `pip install` brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        package = DEV_EXTRAS[module]
        raise QAError(
            f"qa bench needs {package} ({exc}): pip install {package} (or pip install -e '.[dev]' in a checkout)"
        ) from None


def check_extras(sections: list[str]) -> None:
    """Fail before any work when a section's extras are missing, naming every one and the pip install."""
    missing = []
    for module in dict.fromkeys(m for section in sections for m in NEEDS.get(section, [])):
        try:
            dev_import(module)
        except QAError:
            missing.append(DEV_EXTRAS[module])
    if missing:
        raise QAError(
            f"qa bench needs {', '.join(missing)}: pip install {' '.join(missing)} (or pip install -e '.[dev]')"
        )


# ---- the two pipelines ------------------------------------------------------------------------------------


def ours_ingest(settings, corpus: Path, index: Path):
    from qa.api import Assistant

    assistant = Assistant(settings.replace(vectorstore=index, corpus=corpus))
    started = time.perf_counter()
    report = assistant.ingest()
    seconds = time.perf_counter() - started
    return assistant, report, seconds


class Baseline:
    """The recipe from the LangChain docs, as a user would write it."""

    def __init__(self, model_path: str, threads: int):
        import torch

        HuggingFaceEmbeddings = dev_import("langchain_huggingface").HuggingFaceEmbeddings
        torch.set_num_threads(threads)
        self.embeddings = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"})

    def ingest(self, corpus: Path, index: Path):
        from langchain_core.documents import Document
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        Chroma = dev_import("langchain_chroma").Chroma
        started = time.perf_counter()
        docs = [
            Document(page_content=p.read_text(encoding="utf-8", errors="replace"), metadata={"source": p.name})
            for p in sorted(corpus.rglob("*.txt"))
        ]
        splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
        store = Chroma.from_documents(splits, self.embeddings, persist_directory=str(index))
        return store, len(splits), time.perf_counter() - started


class BaselineRetriever:
    """Adapts the baseline's similarity search to what qa.evaluate.beir_scores expects."""

    def __init__(self, store):
        self.store = store

    def search(self, text: str, k: int, mode: str = "dense"):
        hits = self.store.similarity_search(text, k=min(k, 300))
        return [SimpleNamespace(chunk=SimpleNamespace(source=d.metadata["source"])) for d in hits]


# ---- sections -----------------------------------------------------------------------------------------------


def scifact_subset(work: Path, docs: int, scifact: Path, queries: int | None = None):
    from qa import evaluate

    corpus, queries, qrels = evaluate.load_beir(scifact, max_docs=docs, max_queries=queries)
    folder = work / f"scifact-{docs}"
    evaluate.write_beir_corpus(corpus, folder)
    return folder, queries, qrels


def bench_ingest(settings, args, work: Path, log) -> dict:
    from qa import evaluate
    from qa.embeddings import resolve_model_path

    seeds = work / "seeds"
    shutil.copytree(ROOT / "seeds", seeds, dirs_exist_ok=True)
    scifact, queries, qrels = scifact_subset(work, args.docs, args.scifact, args.queries)
    corpora = {"seeds": seeds, f"scifact-{args.docs}": scifact}
    rows, quality = [], []

    baseline = Baseline(resolve_model_path(settings.embed_model), settings.threads)
    systems = [("baseline (LangChain recipe)", None)] + [(f"qa ({b})", b) for b in args.backends]
    for name, backend in systems:
        if backend:
            ours = settings.replace(embed_backend=backend)
            warm, _, _ = ours_ingest(ours, seeds, work / f"warm-{backend}")  # load/export the model, untimed
            warm.store.close()
        for label, corpus in corpora.items():
            times, chunks, last = [], 0, None
            for run in range(args.runs):
                index = work / f"idx-{backend or 'baseline'}-{label}-{run}"
                if backend:
                    last, report, seconds = ours_ingest(ours, corpus, index)
                    chunks = report.chunks + report.reused
                else:
                    last, chunks, seconds = baseline.ingest(corpus, index)
                times.append(seconds)
                if run < args.runs - 1:
                    if backend:
                        last.store.close()
                    shutil.rmtree(index, ignore_errors=True)
            assert last is not None  # runs >= 1
            mb = text_mb(corpus)
            row = {
                "system": name,
                "corpus": label,
                "files": sum(1 for _ in corpus.rglob("*.txt")),
                "mb": round(mb, 3),
                "chunks": chunks,
                "ingest_s": round(statistics.median(times), 2),
                "runs": [round(t, 2) for t in times],
                "mb_per_s": round(mb / statistics.median(times), 4),
                "chunks_per_s": round(chunks / statistics.median(times), 1),
            }
            log(row)
            rows.append(row)
            if label.startswith("scifact"):
                retriever = last.retriever if backend else BaselineRetriever(last)
                for mode in ("dense", "hybrid") if backend else ("dense",):
                    scores = evaluate.beir_scores(retriever, queries, qrels, mode)
                    quality.append({"system": name, **scores})
                    log(quality[-1])
            if backend:
                rows.extend(reingest_rows(last, corpus, name, label, args.runs, log))
                last.store.close()
    base = {r["corpus"]: r for r in rows if r["system"].startswith("baseline") and "kind" not in r}
    summary = []
    for r in rows:
        if "kind" not in r and not r["system"].startswith("baseline"):
            r["speedup_vs_baseline"] = round(r["mb_per_s"] / base[r["corpus"]]["mb_per_s"], 2)
            # One line per corpus with both pipelines' medians: the figure the README's ingest rows quote.
            summary.append(
                {
                    "corpus": r["corpus"],
                    "ours": r["system"],
                    "ours_mb_per_s": r["mb_per_s"],
                    "baseline_mb_per_s": base[r["corpus"]]["mb_per_s"],
                    "ratio": r["speedup_vs_baseline"],
                    "median_of": len(r["runs"]),
                }
            )
    return {"rows": rows, "quality": quality, "summary": summary}


def reingest_rows(assistant, corpus: Path, name: str, label: str, runs: int, log) -> list[dict]:
    """Re-ingest of the unchanged corpus, and after appending a paragraph to one file (then restoring it)."""
    out = []
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        assistant.ingest()
        times.append(time.perf_counter() - started)
    out.append(
        {"system": name, "corpus": label, "kind": "re-ingest unchanged", "s": round(statistics.median(times), 3)}
    )
    target = sorted(corpus.rglob("*.txt"))[0]
    original = target.read_text(encoding="utf-8")
    times, embedded = [], []
    for run in range(runs):
        target.write_text(original + f"\nAn added closing paragraph, edit number {run}.\n", encoding="utf-8")
        started = time.perf_counter()
        report = assistant.ingest()
        times.append(time.perf_counter() - started)
        embedded.append(report.chunks)
    target.write_text(original, encoding="utf-8")
    assistant.ingest()
    out.append(
        {
            "system": name,
            "corpus": label,
            "kind": "re-ingest, one file changed",
            "s": round(statistics.median(times), 3),
            "chunks_embedded": statistics.median(embedded),
        }
    )
    for row in out:
        log(row)
    return out


def bench_query(settings, args, work: Path, log) -> dict:
    from qa import evaluate

    rows = []
    seeds = work / "seeds"
    shutil.copytree(ROOT / "seeds", seeds, dirs_exist_ok=True)
    questions = evaluate.load_questions(ROOT / "eval" / "questions.jsonl")
    assistant, _, _ = ours_ingest(settings, seeds, work / "q-seeds")
    retriever = assistant.retriever
    for mode in ("dense", "hybrid"):
        retriever.search(questions[0].question, settings.top_k, mode=mode)  # warm
        lat = []
        for _ in range(args.runs):
            for q in questions:
                started = time.perf_counter()
                retriever.search(q.question, settings.top_k, mode=mode)
                lat.append(time.perf_counter() - started)
        rows.append(
            {
                "corpus": "seeds",
                "what": f"retrieval {mode}",
                "n": len(lat),
                "p50_ms": ms(statistics.median(lat)),
                "p95_ms": ms(evaluate.p95(lat)),
            }
        )
        log(rows[-1])
    scifact, queries, qrels = scifact_subset(work, args.docs, args.scifact, args.queries)
    sci, _, _ = ours_ingest(settings, scifact, work / "q-scifact")
    for mode in ("dense", "hybrid"):
        s = evaluate.beir_scores(sci.retriever, queries, qrels, mode)
        rows.append(
            {
                "corpus": f"scifact-{args.docs}",
                "what": f"retrieval {mode}",
                "n": s["queries"],
                "p50_ms": s["latency_p50_ms"],
                "p95_ms": s["latency_p95_ms"],
                "ndcg@10": s["ndcg@10"],
            }
        )
        log(rows[-1])
    sci.store.close()
    if args.answers:
        answerable = [q for q in questions if q.answerable][: args.answers]
        first, total = [], []
        assistant.ask(answerable[0].question)  # loads the model; not timed
        for q in answerable:
            answer = assistant.ask(q.question)
            total.append(answer.timings["total"])
            first.append(answer.timings.get("first_token", answer.timings["total"]))
        for what, values in (("answer: first token", first), ("answer: total", total)):
            rows.append(
                {
                    "corpus": "seeds",
                    "what": what,
                    "n": len(values),
                    "p50_ms": ms(statistics.median(values)),
                    "p95_ms": ms(evaluate.p95(values)),
                    "model": settings.llm_model,
                }
            )
            log(rows[-1])
    assistant.store.close()
    return {"rows": rows}


def scaled_corpus(work: Path, chunks: int, unique_cap: int, scifact: Path, settings) -> tuple[Path, int]:
    """About `chunks` chunks of SciFact text; beyond `unique_cap` chunks the same abstracts repeat in copy
    folders (their vectors are then reused from the index, so that part measures the store, not the model)."""
    from qa import evaluate
    from qa.chunking import chunk_document
    from qa.documents import load_document

    corpus, _, _ = evaluate.load_beir(scifact)
    ids = sorted(corpus, key=int)
    folder = work / f"scale-{chunks}"
    first = folder / "copy0"
    first.mkdir(parents=True, exist_ok=True)
    unique, per_copy = 0, 0
    # Add abstracts until one copy holds the distinct part of the target (chunking is cheap; embedding is not).
    while per_copy < min(chunks, unique_cap) and unique < len(ids):
        doc_id = ids[unique]
        evaluate.write_beir_corpus({doc_id: corpus[doc_id]}, first / doc_id)
        path = first / doc_id / f"{doc_id}.txt"
        per_copy += len(chunk_document(load_document(path, path.name), settings.chunk_size, settings.chunk_overlap))
        unique += 1
    copies = max(1, math.ceil(chunks / per_copy))
    for c in range(1, copies):
        shutil.copytree(first, folder / f"copy{c}")
    return folder, copies


def bench_scale(settings, args, work: Path, log) -> dict:
    from qa import evaluate

    _, queries, _ = evaluate.load_beir(args.scifact, max_queries=args.queries)
    texts = list(queries.values())
    rows = []
    for size in args.sizes:
        folder, index = work / f"scale-{size}", work / f"scale-idx-{size}"
        # --keep-scale: a 100k index takes minutes to build; a later run in the same --work measures it again
        kept = args.keep_scale and folder.is_dir() and (index / "qa.sqlite3").is_file()
        copies = (
            len(list(folder.glob("copy*")))
            if kept
            else scaled_corpus(work, size, args.unique_cap, args.scifact, settings)[1]
        )
        assistant, report, seconds = ours_ingest(settings, folder, index)
        row = {
            "target_chunks": size,
            "chunks": assistant.store.chunk_count(),
            "embedded": report.chunks,
            "reused": report.reused,
            "copies": copies,
            "ingest": "unchanged re-ingest of a kept index" if kept else "fresh",
            "ingest_s": round(seconds, 1),
            "mb": round(text_mb(folder), 2),
        }
        # Each figure is the median over --runs passes of all the queries (each pass: p50 and p95 of its queries).
        for mode in ("dense", "hybrid"):
            assistant.retriever.search(texts[0], settings.top_k, mode=mode)
            passes = []
            for _ in range(args.runs):
                lat = []
                for text in texts:
                    started = time.perf_counter()
                    assistant.retriever.search(text, settings.top_k, mode=mode)
                    lat.append(time.perf_counter() - started)
                passes.append((statistics.median(lat), evaluate.p95(lat)))
            row[f"{mode}_p50_ms"] = ms(statistics.median(p50 for p50, _ in passes))
            row[f"{mode}_p95_ms"] = ms(statistics.median(p95 for _, p95 in passes))
        row["index_mb"] = round(sum(p.stat().st_size for p in index.rglob("*") if p.is_file()) / 1e6, 1)
        assistant.store.close()
        log(row)
        rows.append(row)
        if not args.keep_scale:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(index, ignore_errors=True)
    return {"rows": rows}


def _peak_rss_mb(cmd: list[str], env: dict, until=None, timeout: float = 900) -> tuple[float, int]:
    """Run `cmd`, polling /proc for the peak resident set (VmHWM) until it exits (or `until()` is true)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = Path(f"/proc/{proc.pid}/status")
    peak, deadline = 0.0, time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
            peak = max(peak, int(hwm.split()[1]) / 1024)
        except (OSError, StopIteration):
            pass
        if until and until():
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    return round(peak, 1), proc.returncode


def bench_memory(settings, args, work: Path, log) -> dict:
    import socket

    seeds = work / "seeds"
    shutil.copytree(ROOT / "seeds", seeds, dirs_exist_ok=True)
    scifact, _, _ = scifact_subset(work, args.docs, args.scifact, args.queries)
    keep = ("embed_backend", "embed_model", "llm", "llm_model", "llm_base_url", "threads", "cache_dir")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **{f"QA_{k.upper()}": str(getattr(settings, k)) for k in keep}}
    qa = [sys.executable, "-m", "qa.cli"]
    rows = []
    index = work / "mem-idx"
    peak, rc = _peak_rss_mb(qa + ["ingest", "--corpus", str(scifact), "--vectorstore", str(index)], env)
    rows.append({"process": f"qa ingest (scifact-{args.docs})", "peak_rss_mb": peak, "exit": rc})
    seeds_index = work / "mem-seeds"
    subprocess.run(
        qa + ["ingest", "--corpus", str(seeds), "--vectorstore", str(seeds_index)],
        env=env,
        check=True,
        capture_output=True,
    )
    question = "Who offered asylum to the Venezuelan opposition leader?"
    peak, rc = _peak_rss_mb(qa + ["ask", question, "--corpus", str(seeds), "--vectorstore", str(seeds_index)], env)
    rows.append({"process": "qa ask (seeds, local model)", "peak_rss_mb": peak, "exit": rc})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    asked: dict = {}

    def ask_once() -> bool:
        # Ready when the UI answers one question through its API (model loaded, index open).
        if asked.get("done"):
            return True
        try:
            from gradio_client import Client

            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            client.predict(question, api_name="/ask")
            asked["done"] = True
        except Exception:
            time.sleep(1)
        return False

    ui = qa + ["ui", "--port", str(port), "--corpus", str(seeds), "--vectorstore", str(seeds_index)]
    peak, _ = _peak_rss_mb(ui, env, until=ask_once, timeout=600)
    rows.append({"process": "qa ui (one question answered)", "peak_rss_mb": peak, "answered": bool(asked)})
    for row in rows:
        log(row)
    return {"rows": rows}


# ---- ingest speed per document type -------------------------------------------------------------------------
# The same made-up text in every type (a page = a PDF page, a slide, an e-book chapter; the other types are one
# flow of paragraphs), written with the libraries qa reads them with, so the figures compare the readers.

_WORDS = (
    "harbour ferry committee repairs budget lighthouse keeper storm quay pier tide survey report council vote "
    "engine crew cargo season winter summer island village road bridge museum garden school market station "
    "records shows approved rejected opened closed measured inspected painted repaired built planned delayed"
).split()


def _page_paragraphs(rng, chars: int = 1800) -> list[str]:
    """About `chars` characters of sentences, as paragraphs of three sentences."""
    sentences, size = [], 0
    while size < chars:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 16))]
        sentence = " ".join(words).capitalize() + f" in {rng.randint(1850, 2024)}."
        sentences.append(sentence)
        size += len(sentence) + 1
    return [" ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)]


def _write_type(kind: str, path: Path, pages: list[list[str]]) -> None:
    """One file of `kind` (a suffix without the dot) holding `pages` (each a list of paragraphs)."""
    flat = [p for page in pages for p in page]
    if kind in ("txt", "md"):
        path.write_text("\n\n".join(flat) + "\n")
    elif kind == "html":
        body = "\n".join(f"<p>{p}</p>" for p in flat)
        path.write_text(
            f"<html><head><title>{path.stem}</title></head><body><article>\n{body}\n</article></body></html>"
        )
    elif kind == "rtf":
        path.write_text(
            "{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times;}}\\f0 " + "".join(p + "\\par\n" for p in flat) + "}"
        )
    elif kind == "docx":
        import docx

        d = docx.Document()
        for p in flat:
            d.add_paragraph(p)
        d.save(str(path))
    elif kind == "odt":
        from odf.opendocument import OpenDocumentText
        from odf.text import P

        odt = OpenDocumentText()
        for p in flat:
            odt.text.addElement(P(text=p))
        odt.save(str(path))
    elif kind == "pptx":
        from pptx import Presentation
        from pptx.util import Inches

        deck = Presentation()
        for page in pages:
            frame = deck.slides.add_slide(deck.slide_layouts[6]).shapes.add_textbox(0, 0, Inches(9), Inches(7))
            frame.text_frame.text = page[0]
            for p in page[1:]:
                frame.text_frame.add_paragraph().text = p
        deck.save(str(path))
    elif kind == "epub":
        from ebooklib import epub

        book = epub.EpubBook()
        book.set_identifier(path.stem)
        book.set_title(path.stem)
        book.set_language("en")
        chapters = []
        for n, page in enumerate(pages, start=1):
            body = "".join(f"<p>{p}</p>" for p in page)
            chapters.append(
                epub.EpubHtml(title=f"{n}", file_name=f"c{n}.xhtml", content=f"<html><body>{body}</body></html>")
            )
            book.add_item(chapters[-1])
        book.toc, book.spine = chapters, chapters
        book.add_item(epub.EpubNcx())
        book.add_item(epub.EpubNav())
        epub.write_epub(str(path), book)
    elif kind == "pdf":
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.styles import getSampleStyleSheet
        from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

        style = getSampleStyleSheet()["BodyText"]
        story = []
        for page in pages:
            story += [Paragraph(p, style) for p in page] + [PageBreak()]
        SimpleDocTemplate(str(path), pagesize=A4).build(story[:-1])
    elif kind == "scanned pdf":  # page images only, as a scanner makes them: A4 at 200 dpi, black on white
        import textwrap

        from PIL import Image, ImageDraw, ImageFont

        font, images = ImageFont.load_default(size=34), []
        for page in pages:
            image = Image.new("L", (1654, 2339), 255)
            lines = [line for p in page for line in textwrap.wrap(p, 78) + [""]]
            draw = ImageDraw.Draw(image)
            for n, line in enumerate(lines):
                draw.text((120, 150 + n * 48), line, fill=0, font=font)
            images.append(image)
        images[0].save(path, "PDF", resolution=200.0, save_all=True, append_images=images[1:])
    else:
        raise ValueError(kind)


DOCTYPES = ("txt", "md", "html", "pdf", "scanned pdf", "docx", "pptx", "epub", "odt", "rtf")


def doctype_corpus(work: Path, kind: str, files: int, pages: int, seed: int = 7) -> Path:
    """`files` files of `kind`, each of `pages` pages of the same made-up text (the same for every kind)."""
    import random

    folder = work / f"doctype-{kind.replace(' ', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "pdf" if kind == "scanned pdf" else kind
    rng = random.Random(seed)
    for n in range(files):
        _write_type(kind, folder / f"doc{n:03d}.{suffix}", [_page_paragraphs(rng) for _ in range(pages)])
    return folder


def bench_doctypes(settings, args, work: Path, log) -> dict:
    """Fresh ingest of --type-files files of each type (--type-pages pages each; a scan: --ocr-pages pages in all),
    each type alone into a new index, --runs times: files/s, pages/s, MB of files/s and chunks/s (medians)."""
    settings = settings.replace(ocr=True)
    warm, _, _ = ours_ingest(settings, doctype_corpus(work, "txt", 1, 1, seed=1), work / "doctype-warm")
    warm.store.close()  # the embedding model loaded once, untimed
    rows = []
    for kind in args.types:
        files = max(1, args.ocr_pages // args.type_pages) if kind == "scanned pdf" else args.type_files
        corpus = doctype_corpus(work, kind, files, args.type_pages)
        times, chunks, skipped = [], 0, []
        for run in range(args.runs):
            index = work / f"doctype-idx-{kind.replace(' ', '-')}-{run}"
            assistant, report, seconds = ours_ingest(settings, corpus, index)
            times.append(seconds)
            chunks, skipped = report.chunks + report.reused, list(report.failed)
            assistant.store.close()
            shutil.rmtree(index, ignore_errors=True)
        median = statistics.median(times)
        pages = files * args.type_pages
        mb = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
        row = {
            "type": kind,
            "files": files,
            "pages": pages if kind in ("pdf", "scanned pdf", "pptx", "epub") else None,
            "mb": round(mb, 3),
            "chunks": chunks,
            "ingest_s": round(median, 2),
            "runs": [round(t, 2) for t in times],
            "files_per_s": round(files / median, 2),
            "pages_per_s": round(pages / median, 2) if kind in ("pdf", "scanned pdf", "pptx", "epub") else None,
            "mb_per_s": round(mb / median, 3),
            "chunks_per_s": round(chunks / median, 1),
        }
        if skipped:
            row["skipped"] = [f"{s}: {r}" for s, r in skipped][:3]
        log(row)
        rows.append(row)
    return {"rows": rows, "type_pages": args.type_pages}


# ---- output -----------------------------------------------------------------------------------------------


def write_plots(result: dict, out: Path) -> list[str]:
    scale = result.get("scale", {}).get("rows", [])
    ingest = [r for r in result.get("ingest", {}).get("rows", []) if "kind" not in r]
    if not scale and not ingest:
        return []
    matplotlib = dev_import("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if scale:
        x = [r["chunks"] for r in scale]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(x, [r["ingest_s"] for r in scale], "o-", label="ingest (s)")
        a.set(xscale="log", yscale="log", xlabel="chunks in index", ylabel="seconds", title="Fresh ingest")
        for r in scale:
            if r["reused"]:
                a.annotate(f"{r['reused']} reused", (r["chunks"], r["ingest_s"]), fontsize=7)
        for mode in ("dense", "hybrid"):
            b.plot(x, [r[f"{mode}_p50_ms"] for r in scale], "o-", label=f"{mode} p50")
            b.plot(x, [r[f"{mode}_p95_ms"] for r in scale], "x--", label=f"{mode} p95")
        b.set(xscale="log", xlabel="chunks in index", ylabel="ms", title="Retrieval latency")
        b.legend()
        fig.tight_layout()
        fig.savefig(out / PLOTS["scale"], dpi=110)
        plt.close(fig)
        written.append(PLOTS["scale"])
    if ingest:
        corpora = sorted({r["corpus"] for r in ingest})
        systems = list(dict.fromkeys(r["system"] for r in ingest))
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            values = [
                next((r["mb_per_s"] for r in ingest if r["system"] == system and r["corpus"] == c), 0) for c in corpora
            ]
            ax.bar([j + i * width for j in range(len(corpora))], values, width, label=system)
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(corpora))], corpora)
        ax.set(ylabel="MB of text / s", title="Fresh ingest throughput (median of runs)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / PLOTS["ingest"], dpi=110)
        plt.close(fig)
        written.append(PLOTS["ingest"])
    return written


def print_tables(result: dict) -> None:
    for section in SECTIONS:
        data = result.get(section)
        if not data:
            continue
        print(f"\n## {section}")
        for key in ("rows", "quality", "summary"):
            for row in data.get(key, []):
                print("  " + "  ".join(f"{k}={v}" for k, v in row.items() if k != "runs"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="sections to run")
    p.add_argument("--scifact", type=Path, default=SCIFACT, help="BEIR SciFact folder (default ../shared/bench)")
    p.add_argument("--docs", type=int, default=500, help="SciFact abstracts in the ingest/query subset")
    p.add_argument("--queries", type=int, default=None, help="SciFact test queries (default all 300)")
    p.add_argument(
        "--runs", type=int, default=3, help="fresh runs per ingest figure, passes per scale query figure (median)"
    )
    p.add_argument("--backends", nargs="+", default=None, help="our embedding backends to compare")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="index sizes in chunks")
    p.add_argument("--unique-cap", type=int, default=10000, help="chunks of distinct text before copies repeat")
    p.add_argument(
        "--keep-scale",
        action="store_true",
        help="scale: keep each size's corpus and index in --work, and measure a kept one again instead of rebuilding",
    )
    p.add_argument("--answers", type=int, default=8, help="seed questions answered in full (0 skips)")
    p.add_argument(
        "--results", type=Path, nargs="+", default=TIME_RESULTS, help="time: `qa eval` result files, before first"
    )
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "bench")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default a temporary one)")
    p.add_argument("--types", nargs="+", choices=DOCTYPES, default=list(DOCTYPES), help="doctypes: types to ingest")
    p.add_argument("--type-files", type=int, default=20, help="doctypes: files of each type")
    p.add_argument("--type-pages", type=int, default=5, help="doctypes: pages (slides, chapters) per file")
    p.add_argument("--ocr-pages", type=int, default=10, help="doctypes: scanned pages in all (OCR is slow)")


def _plain(value):
    """An argument as JSON holds it: paths, also in lists, as text."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def run(args: argparse.Namespace, settings) -> int:
    args.backends = args.backends or [settings.embed_backend]
    if set(args.only) & NEEDS_SCIFACT and not (args.scifact / "corpus.jsonl.gz").exists():
        print(f"error: --scifact {args.scifact}: no corpus.jsonl.gz there", file=sys.stderr)
        return 2
    if set(args.only) & NEEDS_SEEDS and not (ROOT / "seeds").is_dir():
        raise QAError(f"qa bench measures the seeds of a source checkout: {ROOT / 'seeds'} is not there")
    check_extras(args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "machine": machine(),
        "settings": {
            "embed_backend": settings.embed_backend,
            "llm_model": settings.llm_model,
            "threads": settings.threads,
        },
        "args": {k: _plain(v) for k, v in vars(args).items()},
    }

    def log(row: dict) -> None:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items() if k != "runs"), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        work = args.work or Path(tmp)
        for name in args.only:
            print(f"# {name}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            result[name] = SECTIONS[name](settings, args, work, log)
            result[name]["seconds"] = round(time.perf_counter() - started, 1)
            # each section says where and when it was measured: bench.json may hold sections of earlier runs
            result[name]["machine"] = result["machine"]
            result[name]["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result["plots"] = write_plots(result, args.out) + ([PLOTS["time"]] if "time" in result else [])
    print_tables(result)
    kept = keep_earlier_sections(args.out / "bench.json", result)
    drawn = list(result["plots"])
    # a kept section's picture stays beside its figures (drawn by the run that measured them)
    result["plots"] += [png for name, png in PLOTS.items() if name in kept and (args.out / png).is_file()]
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    also = f" (kept from the earlier run: {', '.join(kept)})" if kept else ""
    print(f"\nwrote {args.out / 'bench.json'}{also} and {', '.join(drawn) or 'no plots'}")
    return 0


def keep_earlier_sections(path: Path, result: dict) -> list[str]:
    """Copy into `result` the sections of an earlier bench.json that this run did not measure, so that
    `qa bench --only doctypes` does not wipe the ingest figures beside it. Each keeps the machine it was measured
    on. Returns their names; an unreadable earlier file is replaced, with a note."""
    try:
        earlier = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        print(f"note: {path} could not be read ({exc}); it is replaced", file=sys.stderr)
        return []
    kept = []
    for name in SECTIONS:
        if name not in result and isinstance(earlier.get(name), dict):
            result[name] = {"machine": earlier.get("machine"), **earlier[name]}
            kept.append(name)
    return kept


# Issue 15's before and after, on one machine in one hour (eval/HISTORY.md, session 16): e139e14, where session 6
# started, and the pipeline of session 16.
TIME_RESULTS = [
    ROOT / "eval" / "results" / "seeds-s16-session6-start.json",
    ROOT / "eval" / "results" / "seeds-s16-title-once.json",
]


def bench_time(settings, args, work: Path, log) -> dict:
    """Each answer's seconds per stage and the medians, from saved `qa eval` results (no model runs here: the
    answers' timings are what `qa eval` recorded), drawn into time.png with every file side by side."""
    from qa import breakdown

    runs = {}
    try:  # before/seeds.json and after/seeds.json are told apart by their paths, as python -m qa.breakdown does
        labels = breakdown.labels_for(args.results)
    except ValueError as exc:  # one file given twice
        raise QAError(f"qa bench --results: {exc}") from None
    for label, path in zip(labels, args.results, strict=True):
        try:
            runs[label] = breakdown.load_time_stages(path)
        except breakdown.TimingsError as exc:
            raise QAError(f"qa bench --results: {exc}") from None
    rows = []
    for label, stages in runs.items():
        rows.append({"results": label, "answers": len(stages), **breakdown.stage_medians(stages)})
        log(rows[-1])
    breakdown.write_time_chart(runs, args.out / PLOTS["time"])
    return {"rows": rows, "plot": PLOTS["time"]}


# the sections that read the SciFact benchmark, and those that also read the checkout's seeds (doctypes makes its
# own files)
NEEDS_SCIFACT = {"ingest", "query", "scale", "memory"}
NEEDS_SEEDS = {"ingest", "query", "memory"}
SECTIONS = {
    "ingest": bench_ingest,
    "query": bench_query,
    "scale": bench_scale,
    "memory": bench_memory,
    "doctypes": bench_doctypes,
    "time": bench_time,
}
PLOTS = {"ingest": "ingest.png", "scale": "scaling.png", "time": "time.png"}  # the picture each section draws


def main(argv: list[str] | None = None) -> int:
    """`python -m qa.bench`: the same as `qa bench`, with the settings from qa.toml and QA_* only."""
    from qa.config import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m qa.bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, load_settings())
    except QAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
