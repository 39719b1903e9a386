"""Ingest: make the index mirror a corpus folder, doing expensive work only for what changed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.chunking import Chunk, chunk_document
from qa.config import Settings
from qa.documents import CorpusFile, load_document, scan_corpus
from qa.errors import CorpusError, DocumentError
from qa.store import FileUpdate, Store

# Files are embedded in groups of about this many batches of chunks: big enough for efficient batches,
# small enough that progress moves and an interrupted run loses little work.
_GROUP_PER_BATCH = 8


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    repaired: list[str] = field(default_factory=list)
    chunks: int = 0  # chunks embedded in this run
    reused: int = 0  # chunks whose text was already indexed: their vectors were reused, not recomputed
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{len(self.unchanged)} unchanged, {len(self.failed)} failed; "
            f"{self.chunks} chunks embedded{f' ({self.reused} reused)' if self.reused else ''} in {self.seconds:.1f}s"
        )

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": [{"source": s, "reason": r} for s, r in self.failed],
            "repaired": self.repaired,
            "chunks": self.chunks,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
        }


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chunking_signature(settings: Settings) -> str:
    return f"recursive-v1/{settings.chunk_size}/{settings.chunk_overlap}"


def ingest(
    store: Store,
    embed: Callable[[list[str]], np.ndarray],
    settings: Settings,
    corpus: Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> IngestReport:
    """Sync `corpus` (default settings.corpus) into `store`. Bad files are reported in `failed`, never raised.

    `embed` turns texts into vectors. It is called only for texts the index does not hold yet, so a caller can
    load the embedding model lazily: an unchanged corpus never pays for it.

    Raises CorpusError for a missing/empty corpus folder or a folder other than the one this index mirrors,
    IndexBusyError when another process is writing the index.
    """
    started = time.perf_counter()
    root = Path(corpus or settings.corpus)
    files = scan_corpus(root, int(settings.max_file_mb * 1e6))
    report = IngestReport()
    with store.write_lock():
        recorded_root = store.get_meta("corpus")
        here = str(root.resolve())
        if recorded_root and recorded_root != here:
            raise CorpusError(
                f"the index in {store.folder} mirrors {recorded_root}, not {here}. Use another --vectorstore "
                "for a second corpus, or `qa ingest --rebuild` to replace it."
            )
        store.set_meta("corpus", here)
        report.repaired = store.repair()
        known = store.files()
        seen = {f.source for f in files}

        todo: list[tuple[CorpusFile, str, list[Chunk]]] = []
        for f in files:
            record = known.get(f.source)
            if f.problem:
                report.failed.append((f.source, f.problem))
                continue
            if record and record.size == f.size and record.mtime_ns == f.mtime_ns:
                report.unchanged.append(f.source)  # same size and mtime: not even read
                continue
            try:
                digest = file_hash(f.path)
                if record and record.hash == digest:
                    store.touch(f.source, f.size, f.mtime_ns)
                    report.unchanged.append(f.source)
                    continue
                # Slow steps inside one file (OCR of a scanned PDF) show in the progress as "FILE: OCR page 3 (1 of 12)"
                note = (lambda message: progress(0, len(files), message)) if progress else None
                doc = load_document(f.path, f.source, ocr=settings.ocr, progress=note)
                chunks = chunk_document(doc, settings.chunk_size, settings.chunk_overlap)
                if not chunks:
                    raise DocumentError(f.source, "no text to index")
            except DocumentError as exc:
                # A file that was fine before and is broken now keeps its last good version in the index.
                kept = " (kept the previously indexed version)" if record else ""
                report.failed.append((f.source, exc.reason + kept))
                continue
            except OSError as exc:
                report.failed.append((f.source, f"cannot read ({exc.strerror or exc})"))
                continue
            todo.append((f, digest, chunks))

        for source in sorted(set(known) - seen):
            store.remove_file(source)
            report.removed.append(source)

        total = len(todo)
        done = 0
        for group in _groups(todo, settings.embed_batch * _GROUP_PER_BATCH):
            vectors = _embed(store, embed, [c for _, _, chunks in group for c in chunks], report)
            updates, at = [], 0
            for f, digest, chunks in group:
                updates.append(FileUpdate(f.source, digest, f.size, f.mtime_ns, chunks, vectors[at : at + len(chunks)]))
                at += len(chunks)
            store.replace_files(updates)
            for f, _, _ in group:
                (report.updated if f.source in known else report.added).append(f.source)
                done += 1
                if progress:
                    progress(done, total, f.source)
    report.seconds = time.perf_counter() - started
    return report


def _embed(store: Store, embed: Callable[[list[str]], np.ndarray], chunks: list[Chunk], report: IngestReport):
    """Vectors for `chunks`, computing only those whose text the index does not hold yet."""
    known = store.vectors_for([c.hash for c in chunks])
    missing = list(dict.fromkeys(c.text for c in chunks if c.hash not in known))
    fresh = dict(zip(missing, embed(missing), strict=True)) if missing else {}
    report.chunks += len(missing)
    report.reused += len(chunks) - len(missing)  # found in the index, or a repeat of a text embedded just now
    return np.stack([known[c.hash] if c.hash in known else fresh[c.text] for c in chunks]).astype(np.float32)


def _groups(todo, chunks_per_group: int):
    group, size = [], 0
    for item in todo:
        group.append(item)
        size += len(item[2])
        if size >= chunks_per_group:
            yield group
            group, size = [], 0
    if group:
        yield group
