"""The SQLite side index in `<vectorstore>/qa.sqlite3`: the file manifest, the chunk rows, their FTS5 keyword
index and the index's meta (model, chunking, corpus). Opened read-only when the folder cannot be written.

It knows nothing of Chroma: the order in which the two sides are written is qa.store.Store's (the crash protocol).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from qa.chunking import Chunk
from qa.errors import IndexMismatchError, StorageError
from qa.store.disk import storage_error
from qa.text import query_terms

SCHEMA = 1

_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
  source TEXT PRIMARY KEY, hash TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
  n_chunks INTEGER NOT NULL, state TEXT NOT NULL, indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
  rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, source TEXT NOT NULL, text TEXT NOT NULL,
  start_char INTEGER, end_char INTEGER, start_line INTEGER, end_line INTEGER, page INTEGER,
  title TEXT, hash TEXT);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(hash);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
  text, content='chunks', content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES('delete', old.rowid, old.text); END;
"""

_CHUNK_COLS = "id, text, source, start_char, end_char, start_line, end_line, page, title, hash"

# Keyword search leaves out a query word found in more than COMMON_SHARE of the chunks (and in more than COMMON_MIN
# of them). BM25 scores every chunk that holds any query word, so one such word ("cells", "patients" in SciFact)
# made a query score tens of thousands of chunks at 100k, while its IDF (log 9 at 10%, against 7-9 for a rare word)
# barely moves the ranking. Under COMMON_MIN chunks scoring is cheap, so small indexes rank with every word.
COMMON_SHARE = 0.1
COMMON_MIN = 2000


@dataclass
class FileRecord:
    source: str
    hash: str
    size: int
    mtime_ns: int
    n_chunks: int
    state: str


@dataclass
class FileUpdate:
    """A file's new content for the index: its manifest fields and its chunks with their vectors (one row each)."""

    source: str
    file_hash: str
    size: int
    mtime_ns: int
    chunks: list[Chunk]
    embeddings: np.ndarray


@dataclass
class Hit:
    chunk: Chunk
    score: float


def _row_to_chunk(row: tuple) -> Chunk:
    chunk_id, text, source, start_char, end_char, start_line, end_line, page, title, digest = row
    return Chunk(chunk_id, text, source, start_char, end_char, start_line, end_line, page or None, title or "", digest)


class SideIndex:
    """`folder/qa.sqlite3`: the manifest (`files`), the chunk rows (`chunks`, keyword-indexed by `chunks_fts`) and
    `meta`. Each write method is one SQLite transaction."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.read_only = False
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        """The side index, read-write; or read-only when the folder cannot be written (a read-only mount):
        then no schema, WAL or lock set-up is attempted, and only writes are refused."""
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise StorageError(
                f"vectorstore {folder} is a file, not a folder: point --vectorstore (QA_VECTORSTORE) at a folder "
                "(qa creates it when missing)"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if isinstance(exc, FileExistsError | NotADirectoryError):
                raise StorageError(
                    f"vectorstore {folder}: cannot create this folder, part of its path is a file: point "
                    "--vectorstore (QA_VECTORSTORE) at a folder"
                ) from None
            raise storage_error(folder, exc) or StorageError(
                f"vectorstore {folder}: cannot create this folder ({exc.strerror or exc}): point --vectorstore "
                "(QA_VECTORSTORE) at a folder you can write"
            ) from None
        path = folder / "qa.sqlite3"
        self.read_only = not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK))
        try:
            if not self.read_only:
                db = sqlite3.connect(path, timeout=30, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SQL)
                return db
            if not path.is_file():
                raise StorageError(
                    f"the index folder {folder} is read-only and holds no index: run `qa ingest` with a writable "
                    "--vectorstore (QA_VECTORSTORE)"
                )
            # mode=ro reads a live WAL when its shared-memory file can be used; on a read-only mount it cannot,
            # and immutable=1 (no locks, no WAL: nothing can change the file there) is the way in.
            for mode in ("mode=ro", "immutable=1"):
                db = sqlite3.connect(f"file:{quote(str(path.absolute()))}?{mode}", uri=True, check_same_thread=False)
                try:
                    db.execute("SELECT COUNT(*) FROM meta").fetchone()
                    return db
                except sqlite3.Error as exc:
                    db.close()
                    last = exc
            raise last
        except sqlite3.Error as exc:
            raise storage_error(folder, exc) or StorageError(
                f"the index file {path} cannot be opened ({type(exc).__name__}: {exc}): run `qa ingest --rebuild`"
            ) from None

    # ---- meta ----------------------------------------------------------------------------------------
    def check_meta(self, embed_model: str, chunking: str) -> None:
        """Stamp an empty index with the model and chunking; refuse one built with others (IndexMismatchError)."""
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if not meta:
            if self.read_only:
                return  # an empty read-only index: nothing to check, nothing can be written
            with self.db:
                self.db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema", str(SCHEMA)), ("embed_model", embed_model), ("chunking", chunking)],
                )
            return
        if meta.get("embed_model") != embed_model:
            raise IndexMismatchError(
                f"the index in {self.folder} was built with embedding model '{meta.get('embed_model')}', "
                f"not '{embed_model}'. Run `qa ingest --rebuild` to re-embed, or point --vectorstore elsewhere."
            )
        if meta.get("chunking") != chunking:
            raise IndexMismatchError(
                f"the index in {self.folder} was built with chunking {meta.get('chunking')}, not {chunking}. "
                "Run `qa ingest --rebuild` to re-chunk, or point --vectorstore elsewhere."
            )

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- the manifest ----------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute("SELECT source, hash, size, mtime_ns, n_chunks, state FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def known_files(self, sources: list[str], state: str | None = None) -> set[str]:
        marks = ",".join("?" * len(sources))
        where = f"source IN ({marks})" + (" AND state=?" if state else "")
        rows = self.db.execute(f"SELECT source FROM files WHERE {where}", [*sources, *([state] if state else [])])
        return {r[0] for r in rows}

    def files_of(self, sources: list[str]) -> dict[str, FileRecord]:
        """The manifest rows of these files (a key lookup)."""
        marks = ",".join("?" * len(sources))
        rows = self.db.execute(
            f"SELECT source, hash, size, mtime_ns, n_chunks, state FROM files WHERE source IN ({marks})", sources
        )
        return {r[0]: FileRecord(*r) for r in rows}

    def touch(self, source: str, size: int, mtime_ns: int) -> None:
        with self.db:
            self.db.execute("UPDATE files SET size=?, mtime_ns=? WHERE source=?", (size, mtime_ns, source))

    def unfinished(self) -> list[str]:
        """The sources whose manifest row is not `done` (a write was interrupted)."""
        return [r[0] for r in self.db.execute("SELECT source FROM files WHERE state != 'done'")]

    def any_unfinished(self) -> bool:
        return self.db.execute("SELECT 1 FROM files WHERE state != 'done' LIMIT 1").fetchone() is not None

    def done_totals(self) -> tuple[int, int]:
        """(files, chunks) of the finished files."""
        files, chunks = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM files WHERE state='done'"
        ).fetchone()
        return files, chunks

    # ---- the crash protocol's SQLite steps (each one transaction) ----------------------------------------
    def mark_pending(self, files: list[FileUpdate]) -> None:
        """Step 1: each file's manifest row (new or updated) is `pending`."""
        with self.db:
            self.db.executemany(
                "INSERT INTO files(source, hash, size, mtime_ns, n_chunks, state, indexed_at) "
                "VALUES (?,?,?,?,0,'pending',?) ON CONFLICT(source) DO UPDATE SET "
                "hash=excluded.hash, size=excluded.size, mtime_ns=excluded.mtime_ns, state='pending'",
                [(f.source, f.file_hash, f.size, f.mtime_ns, time.time()) for f in files],
            )

    def swap_chunks(self, files: list[FileUpdate]) -> None:
        """Step 3: the files' chunk rows (and keyword entries) replaced, their manifest rows `done`."""
        chunks = [c for f in files for c in f.chunks]
        with self.db:
            self.db.executemany("DELETE FROM chunks WHERE source=?", [(f.source,) for f in files])
            self._insert_chunks(chunks)
            self.db.executemany(
                "UPDATE files SET state='done', n_chunks=?, indexed_at=? WHERE source=?",
                [(len(f.chunks), time.time(), f.source) for f in files],
            )

    def _insert_chunks(self, chunks: list[Chunk]) -> None:
        """Chunk rows (and, by trigger, their keyword entries); the caller holds the transaction."""
        self.db.executemany(
            f"INSERT INTO chunks({_CHUNK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (c.id, c.text, c.source, c.start_char, c.end_char, c.start_line, c.end_line, c.page, c.title, c.hash)
                for c in chunks
            ],
        )

    def mark_source_pending(self, source: str) -> None:
        with self.db:
            self.db.execute("UPDATE files SET state='pending' WHERE source=?", (source,))

    def drop_source(self, source: str) -> None:
        """A file's chunk rows and manifest row, gone in one transaction."""
        with self.db:
            self.db.execute("DELETE FROM chunks WHERE source=?", (source,))
            self.db.execute("DELETE FROM files WHERE source=?", (source,))

    def mirror(self, records: list[FileRecord], chunks: dict[str, list[Chunk]]) -> None:
        """A server's files copied into this cache in one transaction: each file's chunk rows (and keyword
        entries) replaced by `chunks[source]`, and its manifest row set to `records`' fields. The row's chunk count
        is the number of rows written, so a file read while a writer was changing it differs from the server's
        record and is fetched again at the next sync."""
        with self.db:
            self.db.executemany("DELETE FROM chunks WHERE source=?", [(r.source,) for r in records])
            self._insert_chunks([c for r in records for c in chunks.get(r.source, [])])
            self.db.executemany(
                "INSERT OR REPLACE INTO files(source, hash, size, mtime_ns, n_chunks, state, indexed_at) "
                "VALUES (?,?,?,?,?,?,?)",
                [
                    (r.source, r.hash, r.size, r.mtime_ns, len(chunks.get(r.source, [])), r.state, time.time())
                    for r in records
                ],
            )

    def drop_sources(self, sources: list[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM chunks WHERE source=?", [(s,) for s in sources])
            self.db.executemany("DELETE FROM files WHERE source=?", [(s,) for s in sources])

    def clear(self) -> None:
        """Every row, the meta included."""
        with self.db:
            self.db.execute("DELETE FROM chunks")
            self.db.execute("DELETE FROM files")
            self.db.execute("DELETE FROM meta")

    # ---- chunks --------------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def chunk_sources(self) -> dict[str, str]:
        """Every chunk id with its source."""
        return dict(self.db.execute("SELECT id, source FROM chunks"))

    def chunks(self, ids: list[str]) -> dict[str, Chunk]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE id IN ({marks})", ids)
        return {r[0]: _row_to_chunk(r) for r in rows}

    def chunks_of(self, source: str) -> list[Chunk]:
        rows = self.db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE source=? ORDER BY start_char", (source,))
        return [_row_to_chunk(r) for r in rows]

    def done_ids_for_hashes(self, hashes: list[str]) -> dict[str, str]:
        """{chunk id: text hash}, one chunk of a finished file for each of these hashes the index holds."""
        wanted = sorted(set(hashes))
        ids: dict[str, str] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            rows = self.db.execute(
                f"SELECT c.hash, MIN(c.id) FROM chunks c JOIN files f ON f.source = c.source "
                f"WHERE f.state = 'done' AND c.hash IN ({','.join('?' * len(part))}) GROUP BY c.hash",
                part,
            )
            ids.update({chunk_id: digest for digest, chunk_id in rows})
        return ids

    def search_keyword(self, query: str, k: int, sources: list[str] | None = None) -> list[Hit]:
        terms = list(dict.fromkeys(query_terms(query)))  # stop words (qa.text.KEYWORD_STOP), single letters dropped
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in self._uncommon(terms))
        # FTS5 ranks the matches and keeps the best k by rowid alone; only those k rows are then read from
        # `chunks`. Joining every match to its row (text included) before sorting took 30% of the keyword time at
        # 100k chunks, where a query matches 23,000 of them at the median (README, Speed).
        best = "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ?"
        args: list = [match]
        if sources:
            best += f" AND rowid IN (SELECT rowid FROM chunks WHERE source IN ({','.join('?' * len(sources))}))"
            args += list(sources)
        best += " ORDER BY rank LIMIT ?"
        args.append(k)
        cols = ", ".join("c." + c.strip() for c in _CHUNK_COLS.split(","))
        sql = f"SELECT {cols}, best.rank FROM ({best}) best JOIN chunks c ON c.rowid = best.rowid ORDER BY best.rank"
        # rank is bm25(): lower-is-better and negative; flip it so higher means more relevant.
        return [Hit(_row_to_chunk(r[:10]), -float(r[10])) for r in self.db.execute(sql, args)]

    def _uncommon(self, terms: list[str]) -> list[str]:
        """`terms` without those in more than COMMON_SHARE of the chunks (and more than COMMON_MIN); the rarest
        term always stays. Counting a term's chunks reads only its list of rows (about 0.1 ms at 100k chunks)."""
        count = "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?"
        counts = {t: self.db.execute(count, (f'"{t}"',)).fetchone()[0] for t in terms}
        if max(counts.values()) <= COMMON_MIN:
            return terms
        limit = max(COMMON_MIN, COMMON_SHARE * self.chunk_count())
        return [t for t in terms if counts[t] <= limit] or [min(terms, key=counts.__getitem__)]

    def term_counts(self, terms: list[str]) -> tuple[int, dict[str, int]]:
        """(chunks in the index, {term: chunks whose text contains it}) through the keyword table, so a term is
        stemmed as the keyword search stems it: document frequencies for IDF (qa.decide)."""
        total = self.chunk_count()
        found = {}
        for term in dict.fromkeys(terms):
            # each term is quoted as one FTS5 string ("" escapes a quote), so no term is read as query syntax
            match = '"' + term.replace('"', '""') + '"'
            row = self.db.execute("SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (match,)).fetchone()
            found[term] = row[0]
        return total, found

    def close(self) -> None:
        self.db.close()
