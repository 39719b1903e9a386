"""The Python API. The CLI, the UI and the evaluation all go through `Assistant`; none reaches past it."""

from __future__ import annotations

import filecmp
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from qa import stages
from qa.answer import Answer, Evidence
from qa.config import Settings, load_settings
from qa.context import select_context
from qa.documents import Document, load_document, safe_filename, scan_corpus, type_counts
from qa.embeddings import embedding_id
from qa.errors import CorpusError, DocumentError, IndexBusyError, QAError, QuestionError, StorageError
from qa.ingest import IngestReport, chunking_signature, ingest
from qa.prompts import rewrite_question
from qa.retrieve import Retriever, ScoreReranker
from qa.store import Store, rebuild

History = list[tuple[str, str]]  # earlier (question, answer text) turns of one conversation


def _add_usage(usage: dict[str, dict[str, int]], call: str, generator) -> None:
    """Record the tokens of the generator's last call, for back ends that count them (`last_usage`)."""
    counted = getattr(generator, "last_usage", None)
    if counted:
        usage[call] = dict(counted)


@dataclass
class UploadReport(IngestReport):
    """What Assistant.add_document did: the ingest's report, plus where the upload went and how."""

    source: str = ""  # the file's name in the corpus
    requested: str = ""  # the (safe) name it was uploaded as
    # added | renamed (another file had the name: kept both) | replaced (replace=True) | unchanged (same bytes there)
    outcome: str = ""

    def to_dict(self) -> dict:
        return {**super().to_dict(), "source": self.source, "requested": self.requested, "outcome": self.outcome}


class Assistant:
    """Answers questions about one indexed corpus.

    >>> qa = Assistant(corpus="seeds")           # any setting as a keyword; the rest from env/config
    >>> qa.ingest()                               # incremental: only changed files are embedded
    >>> qa.ask("Who offered asylum?").text
    """

    def __init__(self, settings: Settings | None = None, *, generator=None, embedder=None, **overrides: Any):
        """`generator` and `embedder` replace the configured models (any object with their interface, e.g. the
        scripted fakes of the fast tests); by default they load from the settings on first use."""
        base = settings or load_settings()
        self.settings = base.replace(**{k: v for k, v in overrides.items() if v is not None}) if overrides else base
        if generator is not None:
            self.generator = generator  # fills the cached_property below
        if embedder is not None:
            self.embedder = embedder

    # Heavy parts load on first use and once per process.
    @cached_property
    def embedder(self):
        from qa.embeddings import get_embedder

        s = self.settings
        return get_embedder(s.embed_model, s.embed_batch, s.threads, s.embed_backend, s.cache_dir)

    @cached_property
    def store(self) -> Store:
        return self._open_store(verify=True)

    def _open_store(self, verify: bool, folder: Path | None = None, collection: str | None = None) -> Store:
        s = self.settings
        return Store(
            folder or s.vectorstore,
            embedding_id(s.embed_model, s.embed_backend),
            chunking_signature(s),
            s.chroma_url,
            collection or s.collection,
            s.store_timeout,
            s.lock_wait,
            verify=verify,
            lease_seconds=s.lease_seconds,
        )

    def ingest(
        self,
        corpus: Path | str | None = None,
        rebuild: bool = False,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> IngestReport:
        """Bring the index in line with the corpus folder. See qa.ingest.ingest for what is raised."""
        # The model loads on the first text to embed (about 10 s of imports): an unchanged corpus, or one with
        # nothing new, is synced without it.
        embed = lambda texts: self.embedder.embed_documents(texts)  # noqa: E731
        root = Path(corpus) if corpus else None
        if rebuild:
            return self._rebuild(embed, root, progress)
        return ingest(self.store, embed, self.settings, root, progress)

    def _rebuild(self, embed, root: Path | None, progress) -> IngestReport:
        """Embed everything again into a new index, swapped in only when it is complete (qa.store.rebuild): a
        mistyped model, a missing corpus or a full disk leaves the old index answering as before."""
        s = self.settings
        folder = Path(root or s.corpus)
        # Everything that can be checked is checked before anything is built: the corpus, then the model.
        indexable = [f for f in scan_corpus(folder, int(s.max_file_mb * 1e6)) if not f.problem]
        if not indexable:
            raise CorpusError(f"corpus {folder}: no file that can be indexed; the old index is kept as it was")
        self.embedder  # noqa: B018 (loads the model: ConfigError for a name that does not load)

        def fill(store: Store) -> IngestReport:
            report = ingest(store, embed, s, root, progress)
            if not report.added:
                reasons = "; ".join(f"{src}: {why}" for src, why in report.failed[:3])
                raise CorpusError(
                    f"corpus {folder}: no file could be indexed ({reasons}); the old index is kept as it was"
                )
            return report

        old = self.__dict__.pop("store", None)
        self.__dict__.pop("retriever", None)
        if old is not None:
            old.close()
        return rebuild(
            s.vectorstore,
            s.chroma_url,
            s.collection,
            s.lock_wait,
            lambda f, c, verify: self._open_store(verify, f, c),
            fill,
        )

    def watch(
        self,
        stop: threading.Event,
        on_report: Callable[[IngestReport], None],
        on_error: Callable[[QAError], None] | None = None,
        quiet: float | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        """Keep the index in step with the corpus folder until `stop` is set: one ingest now, then one after each
        burst of changes (once the folder has been quiet for `quiet` seconds). See qa.watch.watch."""
        from qa.watch import QUIET_SECONDS, watch

        watch(self, stop, on_report, on_error, QUIET_SECONDS if quiet is None else quiet, progress)

    def status(self) -> dict:
        stats = self.store.stats()
        stats["types"] = type_counts(d["source"] for d in self.documents())  # {"PDF": 3, "Word document": 1}
        return stats

    def add_document(
        self,
        uploaded: Path | str,
        name: str,
        progress: Callable[[int, int, str], None] | None = None,
        replace: bool = False,
    ) -> UploadReport:
        """Copy a file into the corpus folder under a safe name and index it.

        A file already in the corpus is never replaced silently: the upload is saved as "NAME (2).txt" (or (3),
        ...) unless `replace` is true; the same bytes already there under that name are not added twice
        (outcome "unchanged"). The upload is checked first (size, type, content): a too large, unsupported or
        broken file raises DocumentError and the corpus and index stay as they were. If indexing then fails
        (IndexBusyError while another ingest holds the index, a store error, the file skipped), the upload is
        taken out of the corpus again, a replaced file is put back, and the error is raised.
        """
        uploaded = Path(uploaded)
        requested = safe_filename(name)
        try:
            size = uploaded.stat().st_size
        except OSError as exc:
            raise DocumentError(requested, f"cannot read the upload ({exc.strerror or exc})") from None
        limit = self.settings.max_file_mb
        if size > limit * 1e6:
            big = f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size:,} bytes"
            raise DocumentError(requested, f"{big} is larger than the {limit:g} MB limit (max_file_mb); not added")
        load_document(uploaded, requested, ocr=self.settings.ocr)  # raises DocumentError with the reason
        corpus = Path(self.settings.corpus)
        corpus.mkdir(parents=True, exist_ok=True)
        target, outcome = self._upload_target(corpus.resolve(), requested, uploaded, replace)
        done = UploadReport(source=target.name, requested=requested, outcome=outcome)
        if outcome == "unchanged":
            done.unchanged.append(target.name)
            return done
        tmp = target.with_name(f".{target.name}.upload")
        backup = target.with_name(f".{target.name}.previous") if outcome == "replaced" else None
        try:
            shutil.copyfile(uploaded, tmp)
            if backup:
                shutil.copy2(target, backup)  # same bytes and mtime: put back, the index sees it unchanged
            os.replace(tmp, target)  # atomic: an ingest never sees half a file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if backup:
                backup.unlink(missing_ok=True)
            raise DocumentError(target.name, f"cannot save it in the corpus ({exc.strerror or exc})") from None

        def undo() -> None:
            if backup:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)

        try:
            report = self.ingest(progress=progress)
        except IndexBusyError as exc:
            undo()
            raise IndexBusyError(f"{target.name} was not added: {exc}") from None
        except BaseException:
            undo()
            raise
        failed = dict(report.failed).get(target.name)
        if failed:
            undo()
            raise DocumentError(target.name, f"{failed}; not added")
        if backup:
            backup.unlink(missing_ok=True)
        for f in fields(IngestReport):
            setattr(done, f.name, getattr(report, f.name))
        return done

    @staticmethod
    def _upload_target(corpus: Path, name: str, uploaded: Path, replace: bool) -> tuple[Path, str]:
        """Where an upload named `name` goes, and the outcome: added, replaced, renamed or unchanged."""
        target = corpus / name  # a plain name (safe_filename): it cannot leave the corpus
        if not os.path.lexists(target):
            return target, "added"
        if replace and target.is_file() and not target.is_symlink():
            return target, "unchanged" if filecmp.cmp(target, uploaded, shallow=False) else "replaced"
        stem, suffix = name[: -len(Path(name).suffix)], Path(name).suffix
        for n in range(1, 1000):
            candidate = target if n == 1 else corpus / f"{stem} ({n}){suffix}"
            if not os.path.lexists(candidate):
                return candidate, "renamed"
            if candidate.is_file() and filecmp.cmp(candidate, uploaded, shallow=False):
                return candidate, "unchanged"
        raise DocumentError(name, "the corpus already holds 999 files of that name; rename the file")

    def remove_document(self, source: str) -> IngestReport:
        """Delete a file from the corpus folder and its chunks from the index."""
        try:
            target = self._in_corpus(source)
        except DocumentError:
            target = None
        if target is None or not target.is_file():
            raise DocumentError(source, "no such document in the corpus")
        target.unlink()
        return self.ingest()

    def document(self, source: str) -> Document:
        """The cleaned text of an indexed document, for showing it at a cited place."""
        return load_document(self._in_corpus(source), source, ocr=self.settings.ocr)

    def _in_corpus(self, source: str) -> Path:
        """The path of `source` in the corpus folder; DocumentError if it would lead outside it."""
        corpus = Path(self.settings.corpus).resolve()
        target = (corpus / source).resolve()
        if not target.is_relative_to(corpus):
            raise DocumentError(source, "outside the corpus folder")
        return target

    def documents(self) -> list[dict]:
        return [
            {"source": r.source, "chunks": r.n_chunks, "size": r.size}
            for r in sorted(self.store.files().values(), key=lambda r: r.source)
            if r.state == "done"
        ]

    # ---- asking ----------------------------------------------------------------------------------------
    @cached_property
    def generator(self):
        from qa.generators import make_generator

        return make_generator(self.settings)

    @cached_property
    def decision(self):
        """How the judge stage declines (qa.decide): this model's fitted decision, an explicit judge_threshold,
        or the uncalibrated default."""
        from qa.decide import generator_decision

        return generator_decision(self.settings, self.generator.name)

    @cached_property
    def retriever(self) -> Retriever:
        s = self.settings
        rerankers = []
        if s.rerank_model:
            from qa.embeddings import CrossEncoderReranker

            rerankers.append(ScoreReranker(CrossEncoderReranker(s.rerank_model, s.threads), s.rerank_depth))
        return Retriever(self.store, self.embedder, s.candidates, rerankers)

    def ask(
        self, question: str, history: History | None = None, sources: list[str] | None = None, top_k: int | None = None
    ) -> Answer:
        """Answer `question` from the indexed documents. `history` holds earlier turns for follow-ups;
        `sources` limits retrieval to those files. Raises QuestionError, GeneratorError, CorpusError."""
        answer = None
        for event in self.stream(question, history, sources, top_k):
            if isinstance(event, Answer):
                answer = event
        assert answer is not None
        return answer

    def stream(
        self,
        question: str,
        history: History | None = None,
        sources: list[str] | None = None,
        top_k: int | None = None,
    ) -> Iterator[Evidence | str | Answer]:
        """Like ask(), but yields events as they happen: first an Evidence (the passages the model will read, as
        soon as retrieval is done), then the model's text as it is written (str pieces), then the checked Answer.

        The streamed text is the raw draft: the final Answer may drop sentences or move citations. The stages
        (gate -> judge -> draft -> verify) are qa.stages; a decline names its stage in `Answer.declined_by`.
        """
        s = self.settings
        started = time.perf_counter()
        question = self._valid_question(question)
        self.store.sync()  # on a Chroma server: what other hosts ingested since (one read when nothing changed)
        chunks = self.store.chunk_count()
        if chunks == 0:
            raise CorpusError(f"nothing is indexed in {s.vectorstore} yet: run `qa ingest PATH` first")
        problem = self.store.damage(chunks=chunks)  # one count per question, not two
        if problem:  # otherwise every question would be declined without a word
            raise StorageError(problem)
        if sources:
            # A mistyped name would otherwise filter out every passage and read as "The documents don't say."
            indexed = self.store.known_files(sources, state="done")
            unknown = [x for x in sources if x not in indexed]
            if unknown:
                raise QuestionError(
                    f"not an indexed document: {', '.join(unknown)} (names are relative to the corpus root; "
                    "`qa status` lists them)"
                )
        timings: dict[str, float] = {}
        usage: dict[str, dict[str, int]] = {}
        standalone = question
        if history:
            standalone = rewrite_question(self.generator, question, history)
            timings["rewrite"] = time.perf_counter() - started
            _add_usage(usage, "rewrite", self.generator)
        t = time.perf_counter()
        k = top_k or s.top_k
        found = self.retriever.search(standalone, max(k, s.context_chunks) if s.context_tokens else k, sources=sources)
        timings["retrieve"] = time.perf_counter() - t
        passages = found[:k]
        gated = stages.gate(found[:k], s.min_relevance)  # on the retrieved chunks, as before the context stage
        # Off the documents' topic, the model never runs: the closest chunks are shown as they are, and the
        # context stage (which only chooses what the model reads) is skipped.
        if s.context_tokens and found and gated.passed:
            # The context stage (qa/context.py): the best sentences of the retrieved chunks, with their
            # neighbours, within a token budget; judge and draft read the same windows (one shared KV prefix).
            t = time.perf_counter()
            passages = select_context(
                standalone, found, self.store.chunks_of, self.embedder, s.context_tokens, s.context_window
            )
            timings["context"] = time.perf_counter() - t
        timings["evidence"] = time.perf_counter() - started
        yield Evidence(passages, timings["evidence"])  # the user sees what will be read before the model starts

        answer: Answer | None = None
        verdict = stages.Verdict(True)
        if not gated.passed:
            answer = stages.decline(question, passages, "relevance")
        else:
            t = time.perf_counter()
            verdict = stages.judge(self.generator, standalone, passages, self.decision, self.store.term_counts)
            if verdict.score is not None:
                timings["judge"] = time.perf_counter() - t
                _add_usage(usage, "judge", self.generator)
            if not verdict.passed:
                answer = stages.decline(question, passages, "judge")
        if answer is None:
            t = time.perf_counter()
            pieces: list[str] = []
            for piece in stages.draft(self.generator, standalone, passages, s.llm_max_tokens):
                if not pieces:
                    timings["first_token"] = time.perf_counter() - started
                pieces.append(piece)
                yield piece
            timings["generate"] = time.perf_counter() - t
            _add_usage(usage, "draft", self.generator)
            t = time.perf_counter()
            answer = stages.verify(question, "".join(pieces), passages)
            timings["verify"] = time.perf_counter() - t
            if s.redraft and answer.declined_by == "checks" and len(passages) > 1:
                # off by default (Settings.redraft); not streamed: the first draft shows until the answer replaces it
                t = time.perf_counter()
                answer = stages.redraft(self.generator, standalone, passages, answer, s.llm_max_tokens)
                timings["redraft"] = time.perf_counter() - t
                _add_usage(usage, "redraft", self.generator)
        answer.model = self.generator.name if gated.passed else ""
        answer.judge = verdict.score
        answer.standalone_question = standalone if history else ""
        answer.usage = usage
        timings["total"] = time.perf_counter() - started
        answer.timings = timings
        yield answer

    def _valid_question(self, question: str) -> str:
        import unicodedata

        # Zero-width spaces, direction marks, BOMs and other invisible characters are not a question either.
        if not isinstance(question, str) or not any(
            unicodedata.category(ch) not in _INVISIBLE and ch not in _BLANK_LETTERS for ch in question
        ):
            raise QuestionError("the question is empty")
        question = " ".join(question.split())
        if len(question) > self.settings.max_question_chars:
            raise QuestionError(
                f"the question is {len(question):,} characters long; the limit is "
                f"{self.settings.max_question_chars:,} (max_question_chars)"
            )
        script = _main_script(question)
        if script:
            # A question mostly in a script that no indexed text uses (Arabic over English documents) cannot be
            # matched: the embedding model reads one language, and keyword search finds no shared word. The
            # closest passages would be unrelated, and the model may still answer from them with a citation.
            indexed, found = self.store.db.execute(
                "SELECT EXISTS(SELECT 1 FROM chunks), EXISTS(SELECT 1 FROM chunks WHERE text GLOB ?)",
                (f"*[{_SCRIPTS[script]}]*",),
            ).fetchone()
            if indexed and not found:
                raise QuestionError(
                    f"the question is written in {script} script, which no indexed document uses: the search "
                    f"model ({self.settings.embed_model}) matches a question only to documents in its language, "
                    "so ask in the documents' language"
                )
        return question


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})  # control and format characters, spaces
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # Hangul fillers and the blank Braille cell
# Scripts a question is checked against the index for, as GLOB character ranges (code points).
_SCRIPTS = {
    "Latin": "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff",
    "Greek": "\u0370-\u03ff\u1f00-\u1fff",
    "Cyrillic": "\u0400-\u052f",
    "Armenian": "\u0531-\u058a",
    "Hebrew": "\u0591-\u05f4",
    "Arabic": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc",
    "Devanagari": "\u0900-\u097f",
    "Bengali": "\u0980-\u09ff",
    "Tamil": "\u0b80-\u0bff",
    "Thai": "\u0e00-\u0e7f",
    "Georgian": "\u10a0-\u10ff",
    "Hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "Japanese kana": "\u3040-\u30ff",
    "Han (Chinese characters)": "\u3400-\u4dbf\u4e00-\u9fff",
}


def _main_script(text: str) -> str:
    """The script (a key of _SCRIPTS) of more than half the letters of `text`, or "" if none has a majority."""
    import re

    letters = [ch for ch in text if ch.isalpha()]
    for name, ranges in _SCRIPTS.items():
        n = len(re.findall(f"[{ranges}]", "".join(letters)))
        if n * 2 > len(letters):
            return name
    return ""
