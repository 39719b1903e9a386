"""The index: Chroma for vectors, SQLite (FTS5) beside it for keywords, chunk metadata and the file manifest.

Crash safety. Every change to one file's chunks follows the same steps:
  1. the manifest row is set to `pending` (committed) before Chroma is touched;
  2. the file's old vectors are deleted from Chroma by `source`, the new ones added (ids are deterministic);
  3. one SQLite transaction swaps the file's chunk rows and keyword entries and marks the row `done`.
A kill -9 anywhere leaves at most `pending` rows; `repair()` (run at the start of every ingest) deletes
everything of a pending file from both sides so that file is indexed again from scratch. A Chroma that holds
ids the manifest does not know (or misses some it does) is reconciled the same way.

One writer at a time: writes happen under an exclusive OS lock on `<vectorstore>/write.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from qa.chunking import Chunk
from qa.errors import ConfigError, IndexBusyError, IndexMismatchError, StoreUnavailableError

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

# Words that carry no topic; dropped from keyword queries so "what is the ..." does not match everything.
_STOP = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her his how i if in into "
    "is it its me my no not of on or our she so than that the their them then there these they this those to "
    "was we were what when where which who whom whose why will with would you your about after before did".split()
)


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
    return Chunk(*row[:7], row[7] or None, row[8] or "", row[9])


class Store:
    """Vectors in Chroma (embedded under `folder/chroma`, or a server) plus the SQLite side index."""

    def __init__(
        self,
        folder: Path,
        embed_model: str,
        chunking: str,
        chroma_url: str = "",
        collection: str = "qa_chunks",
        timeout: float = 10.0,
        lock_wait: float = 0.0,
        verify: bool = True,
    ):
        """Open (or create) the index. With verify=False a model/chunking mismatch is not an error: use it only
        to `clear()` the index for a rebuild."""
        self.folder = Path(folder)
        self.embed_model = embed_model
        self.chunking = chunking
        self.chroma_url = chroma_url
        self.lock_wait = lock_wait
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.folder / "qa.sqlite3", timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SQL)
        if verify:
            self._check_meta()
        if len(collection) < 3:
            raise ConfigError(f"collection '{collection}': Chroma needs a name of at least 3 characters")
        self._client = self._connect(chroma_url, timeout)
        self._open_collection(collection, verify)

    def _open_collection(self, collection: str, verify: bool) -> None:
        try:
            self.collection = self._client.get_or_create_collection(
                collection,
                metadata={"hnsw:space": "cosine", "embed_model": self.embed_model, "chunking": self.chunking},
                embedding_function=None,
            )
        except Exception as exc:
            raise self._unavailable(exc) from None
        meta = self.collection.metadata or {}
        if verify and meta.get("embed_model", self.embed_model) != self.embed_model:
            raise IndexMismatchError(
                f"Chroma collection '{collection}' holds vectors from '{meta.get('embed_model')}', not "
                f"'{self.embed_model}'. Run `qa ingest --rebuild` or choose another --collection."
            )

    # ---- opening -------------------------------------------------------------------------------------
    def _connect(self, url: str, timeout: float):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if not url:
            return chromadb.PersistentClient(path=str(self.folder / "chroma"), settings=chroma_settings)
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if not parsed.hostname:
            raise ConfigError(f"chroma_url '{url}': expected something like http://127.0.0.1:8000")
        try:
            chroma_settings.chroma_server_http_timeout = timeout  # seconds per request
        except Exception:  # older settings objects may be frozen; the default timeout then applies
            pass
        try:
            return chromadb.HttpClient(
                host=parsed.hostname,
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
        except Exception as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> Exception:
        if self.chroma_url:
            return StoreUnavailableError(
                f"Chroma server at {self.chroma_url} is not reachable ({type(exc).__name__}: {str(exc)[:120]})"
            )
        return exc

    def _check_meta(self) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if not meta:
            with self.db:
                self.db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema", str(SCHEMA)), ("embed_model", self.embed_model), ("chunking", self.chunking)],
                )
            return
        if meta.get("embed_model") != self.embed_model:
            raise IndexMismatchError(
                f"the index in {self.folder} was built with embedding model '{meta.get('embed_model')}', "
                f"not '{self.embed_model}'. Run `qa ingest --rebuild` to re-embed, or point --vectorstore elsewhere."
            )
        if meta.get("chunking") != self.chunking:
            raise IndexMismatchError(
                f"the index in {self.folder} was built with chunking {meta.get('chunking')}, not {self.chunking}. "
                "Run `qa ingest --rebuild` to re-chunk, or point --vectorstore elsewhere."
            )

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- the write lock --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive writer. A second writer waits `lock_wait` seconds, then gets IndexBusyError."""
        path = self.folder / "write.lock"
        handle = open(path, "a+")
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise IndexBusyError(
                        f"the index in {self.folder} is being written by {holder}; try again when it finishes"
                    ) from None
                time.sleep(0.2)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # ---- the manifest ----------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute("SELECT source, hash, size, mtime_ns, n_chunks, state FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def known_files(self, sources: list[str], state: str | None = None) -> set[str]:
        """Which of `sources` the manifest holds (in `state`, when given): a key lookup, not a manifest scan."""
        marks = ",".join("?" * len(sources))
        where = f"source IN ({marks})" + (" AND state=?" if state else "")
        rows = self.db.execute(f"SELECT source FROM files WHERE {where}", [*sources, *([state] if state else [])])
        return {r[0] for r in rows}

    def touch(self, source: str, size: int, mtime_ns: int) -> None:
        """Record a new mtime for a file whose content did not change (so the next run skips reading it)."""
        with self.db:
            self.db.execute("UPDATE files SET size=?, mtime_ns=? WHERE source=?", (size, mtime_ns, source))

    # ---- writes (call under write_lock) ---------------------------------------------------------------
    def replace_files(self, files: list[FileUpdate]) -> None:
        """Make each file's chunks its whole indexed content, as one recoverable step for the group.

        All files are marked pending first, so a crash anywhere in between leaves them to repair(). One Chroma
        add and one SQLite transaction serve the whole group: per-file round trips dominated ingest once
        vectors were reused (about 18 files/s on small files)."""
        if not files:
            return
        # Only this group's rows: a scan of the whole manifest per group grows with the corpus times the groups.
        known = self.known_files([f.source for f in files])
        with self.db:
            self.db.executemany(
                "INSERT INTO files(source, hash, size, mtime_ns, n_chunks, state, indexed_at) "
                "VALUES (?,?,?,?,0,'pending',?) ON CONFLICT(source) DO UPDATE SET "
                "hash=excluded.hash, size=excluded.size, mtime_ns=excluded.mtime_ns, state='pending'",
                [(f.source, f.file_hash, f.size, f.mtime_ns, time.time()) for f in files],
            )
        # A file with no manifest row has no vectors (repair() has removed those of any crashed run), so the
        # filtered delete, which costs a scan of the collection's metadata, is skipped for new files.
        replaced = [f.source for f in files if f.source in known]
        if replaced:
            self._chroma(lambda: self.collection.delete(where={"source": {"$in": replaced}}))
        chunks = [c for f in files for c in f.chunks]
        embeddings = np.concatenate([f.embeddings for f in files])
        batch = max(1, self._max_batch())
        for i in range(0, len(chunks), batch):
            part = chunks[i : i + batch]
            self._chroma(
                lambda part=part, i=i: self.collection.add(
                    ids=[c.id for c in part],
                    embeddings=embeddings[i : i + len(part)],
                    documents=[c.text for c in part],
                    metadatas=[self._chroma_meta(c) for c in part],
                )
            )
        with self.db:
            self.db.executemany("DELETE FROM chunks WHERE source=?", [(f.source,) for f in files])
            self.db.executemany(
                f"INSERT INTO chunks({_CHUNK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (c.id, c.text, c.source, c.start_char, c.end_char, c.start_line, c.end_line)
                    + (c.page, c.title, c.hash)
                    for c in chunks
                ],
            )
            self.db.executemany(
                "UPDATE files SET state='done', n_chunks=?, indexed_at=? WHERE source=?",
                [(len(f.chunks), time.time(), f.source) for f in files],
            )

    def remove_file(self, source: str) -> None:
        with self.db:
            self.db.execute("UPDATE files SET state='pending' WHERE source=?", (source,))
        self._chroma(lambda: self.collection.delete(where={"source": source}))
        with self.db:
            self.db.execute("DELETE FROM chunks WHERE source=?", (source,))
            self.db.execute("DELETE FROM files WHERE source=?", (source,))

    def repair(self) -> list[str]:
        """Undo whatever an interrupted run left half-done. Returns the sources that will be indexed again."""
        pending = [r[0] for r in self.db.execute("SELECT source FROM files WHERE state != 'done'")]
        for source in pending:
            self.remove_file(source)
        known = self.chunk_count()
        if self._chroma(self.collection.count) == known:
            return pending
        # Chroma and the manifest disagree (e.g. a write that Chroma persisted after our crash marker was
        # cleared by hand, or a collection edited outside qa): reconcile id by id.
        chroma_ids = set(self._all_chroma_ids())
        ours = dict(self.db.execute("SELECT id, source FROM chunks"))
        extra = sorted(chroma_ids - ours.keys())
        for i in range(0, len(extra), 1000):
            self._chroma(lambda i=i: self.collection.delete(ids=extra[i : i + 1000]))
        missing_sources = sorted({ours[i] for i in ours.keys() - chroma_ids})
        for source in missing_sources:
            self.remove_file(source)
        return pending + missing_sources

    def clear(self) -> None:
        """Drop everything (for --rebuild), including the recorded model, so another model may be used."""
        name = self.collection.name
        self._chroma(lambda: self._client.delete_collection(name))
        with self.db:
            self.db.execute("DELETE FROM chunks")
            self.db.execute("DELETE FROM files")
            self.db.execute("DELETE FROM meta")
        self._check_meta()
        self._open_collection(name, verify=True)

    def _all_chroma_ids(self) -> list[str]:
        ids: list[str] = []
        page = 5000
        while True:
            got = self._chroma(lambda: self.collection.get(include=[], limit=page, offset=len(ids)))
            ids.extend(got["ids"])
            if len(got["ids"]) < page:
                return ids

    def _max_batch(self) -> int:
        try:
            return min(5000, int(self._client.get_max_batch_size()))
        except Exception:
            return 1000

    @staticmethod
    def _chroma_meta(c: Chunk) -> dict:
        # Chroma metadata cannot hold None: page 0 means "not a PDF".
        return {
            "source": c.source,
            "start_line": c.start_line,
            "end_line": c.end_line,
            "page": c.page or 0,
            "start_char": c.start_char,
            "end_char": c.end_char,
            "title": c.title[:200],
            "hash": c.hash,
        }

    def _chroma(self, call):
        try:
            return call()
        except Exception as exc:
            if self.chroma_url:
                raise self._unavailable(exc) from None
            raise

    # ---- reads ---------------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def chunks(self, ids: list[str]) -> dict[str, Chunk]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE id IN ({marks})", ids)
        return {r[0]: _row_to_chunk(r) for r in rows}

    def vectors_for(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """Vectors already in the index for chunk texts with these hashes: an edited file re-embeds only its
        changed chunks, and a copied or renamed file none. Only finished files count (not `pending` ones)."""
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
        if not ids:
            return {}
        got = self._chroma(lambda: self.collection.get(ids=list(ids), include=["embeddings"]))
        return {ids[i]: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"], strict=True)}

    def chunks_of(self, source: str) -> list[Chunk]:
        rows = self.db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE source=? ORDER BY start_char", (source,))
        return [_row_to_chunk(r) for r in rows]

    def search_dense(self, vector: np.ndarray, k: int, sources: list[str] | None = None) -> list[Hit]:
        n = self.chunk_count()
        if n == 0:
            return []
        where = None
        if sources:
            where = {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": list(sources)}}
        res = self._chroma(
            lambda: self.collection.query(
                query_embeddings=[vector.tolist()],
                n_results=min(k, n),
                where=where,
                include=["distances"],
            )
        )
        ids, dists = res["ids"][0], res["distances"][0]
        found = self.chunks(ids)
        # cosine distance -> cosine similarity; ids unknown to SQLite (mid-repair) are skipped
        return [Hit(found[i], 1.0 - float(d)) for i, d in zip(ids, dists, strict=True) if i in found]

    def search_keyword(self, query: str, k: int, sources: list[str] | None = None) -> list[Hit]:
        terms = [t for t in re.findall(r"\w+", query.lower()) if t not in _STOP and (len(t) > 1 or t.isdigit())]
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in dict.fromkeys(terms))
        sql = (
            f"SELECT {', '.join('c.' + c.strip() for c in _CHUNK_COLS.split(','))}, bm25(chunks_fts) AS s "
            "FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid WHERE chunks_fts MATCH ?"
        )
        args: list = [match]
        if sources:
            sql += f" AND c.source IN ({','.join('?' * len(sources))})"
            args += list(sources)
        sql += " ORDER BY s LIMIT ?"
        args.append(k)
        # bm25() is lower-is-better and negative; flip it so higher means more relevant.
        return [Hit(_row_to_chunk(r[:10]), -float(r[10])) for r in self.db.execute(sql, args)]

    def stats(self) -> dict:
        files = self.db.execute("SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM files WHERE state='done'").fetchone()
        return {
            "files": files[0],
            "chunks": files[1],
            "vectors": self._chroma(self.collection.count),
            "embed_model": self.embed_model,
            "chunking": self.chunking,
            "corpus": self.get_meta("corpus"),
            "vectorstore": str(self.folder),
            "chroma": self.chroma_url or "embedded",
        }

    def close(self) -> None:
        self.db.close()
