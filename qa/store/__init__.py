"""The index: Chroma for vectors, SQLite (FTS5) beside it for keywords, chunk metadata and the file manifest.

Crash safety. Every change to one file's chunks follows the same steps:
  1. the manifest row is set to `pending` (committed) before Chroma is touched;
  2. the file's old vectors are deleted from Chroma by `source`, the new ones added (ids are deterministic);
  3. one SQLite transaction swaps the file's chunk rows and keyword entries and marks the row `done`.
A kill -9 anywhere leaves at most `pending` rows; `repair()` (run at the start of every ingest) deletes
everything of a pending file from both sides so that file is indexed again from scratch. A Chroma that holds
ids the manifest does not know (or misses some it does) is reconciled the same way.

One writer at a time: writes happen under an exclusive OS lock on `<vectorstore>/write.lock`.

A folder we cannot write (a read-only mount, another user's index) is opened read-only: questions are answered,
and only writes are refused. `rebuild()` builds a new index beside the old one and swaps it in when complete.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlparse

import numpy as np

from qa.chunking import Chunk
from qa.errors import ConfigError, IndexBusyError, IndexMismatchError, QAError, StorageError, StoreUnavailableError
from qa.text import query_terms

log = logging.getLogger(__name__)

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


# What qa itself keeps in an index folder; anything else there belongs to someone else.
_OWN_ENTRIES = frozenset(
    {"qa.sqlite3", "qa.sqlite3-wal", "qa.sqlite3-shm", "qa.sqlite3-journal", "chroma", "write.lock"}
)


def storage_error(folder: Path, exc: BaseException) -> StorageError | None:
    """A one-line StorageError for an exception that is about the index's disk (full, read-only, no permission,
    damaged file), naming the folder and the fix; None for anything else (a bug, a model error...)."""
    if isinstance(exc, QAError) or not isinstance(exc, Exception):
        return None
    code = getattr(exc, "errno", None)
    text = f"{exc}".lower()
    detail = f"{type(exc).__name__}: {str(exc)[:160]}"
    about_disk = isinstance(exc, OSError | sqlite3.Error) or type(exc).__module__.startswith("chromadb")
    if (
        code in (errno.ENOSPC, errno.EDQUOT)
        or any(w in text for w in ("no space left", "disk is full", "disk quota", "not enough space"))
        # SQLite reports a full disk as "disk I/O error" when it cannot grow its shared-memory file
        or (about_disk and _free_bytes(folder) < 1 << 20)
    ):
        return StorageError(
            f"the disk holding the index {folder} is full ({detail}): free some space, then run `qa ingest` again "
            "to finish (what this run could not write is indexed then)"
        )
    if code == errno.EROFS or any(w in text for w in ("read-only file system", "readonly database")):
        return StorageError(
            f"the index {folder} is on a read-only file system: `qa ingest` needs it writable (remount it "
            "read-write, or copy it and point --vectorstore / QA_VECTORSTORE at the copy); `qa ask` and "
            "`qa status` work on it as it is"
        )
    if code in (errno.EACCES, errno.EPERM) or "permission denied" in text:
        return StorageError(
            f"no permission to write the index {folder} ({detail}): run qa as the folder's owner, or point "
            "--vectorstore / QA_VECTORSTORE at a folder you can write"
        )
    if isinstance(exc, sqlite3.DatabaseError) and any(
        w in text for w in ("malformed", "not a database", "unable to open", "disk i/o error", "no such table")
    ):
        return StorageError(
            f"the index file {folder / 'qa.sqlite3'} cannot be read ({detail}): run `qa ingest --rebuild` to "
            "build it again"
        )
    return None


def _free_bytes(folder: Path) -> int:
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError as exc:
        log.debug("free space under %s unknown (%s): not taken as a full disk", probe, exc)
        return 1 << 62  # unknown: not evidence of a full disk


def _storage_guard(method):
    """Turn disk problems inside a Store method into one-line StorageErrors naming the index folder."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            err = storage_error(self.folder, exc)
            if err is None:
                raise
            raise err from None

    return guarded


@contextlib.contextmanager
def folder_lock(folder: Path, wait: float = 0.0) -> Iterator[None]:
    """The exclusive writer lock of an index folder (`folder/write.lock`). A second writer waits `wait` seconds,
    then gets IndexBusyError. The lock is taken on the file the path names *now*: a rebuild swaps folders, and a
    waiter that had opened the old one's lock file takes the new one's instead."""
    path = Path(folder) / "write.lock"
    deadline = time.monotonic() + wait
    while True:
        try:
            handle = open(path, "a+")
        except OSError as exc:
            raise storage_error(Path(folder), exc) or exc from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise IndexBusyError(
                    f"the index in {folder} is being written by {holder}; try again when it finishes"
                ) from None
            handle.close()
            time.sleep(0.2)
            continue
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            break
        fcntl.flock(handle, fcntl.LOCK_UN)  # the folder was swapped while we waited: lock the new one
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


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
        if len(collection) < 3:
            raise ConfigError(f"collection '{collection}': Chroma needs a name of at least 3 characters")
        self.db = self._open_sqlite()
        try:
            if verify:
                self._check_meta()
            self._client = self._connect(chroma_url, timeout)
            self._open_collection(collection, verify)
        except BaseException as exc:
            self.db.close()
            err = storage_error(self.folder, exc)
            if err is None:
                raise
            raise err from None

    def _open_sqlite(self) -> sqlite3.Connection:
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
            path = self.folder / "chroma"
            if self.read_only:
                path = _readable_copy(path)
            return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if not parsed.hostname:
            raise ConfigError(f"chroma_url '{url}': expected something like http://127.0.0.1:8000")
        try:
            chroma_settings.chroma_server_http_timeout = timeout  # seconds per request
        except Exception as exc:  # older settings objects may be frozen; the default timeout then applies
            log.warning("this chromadb ignores store_timeout (%s); its default request timeout applies", exc)
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
            if self.read_only:
                return  # an empty read-only index: nothing to check, nothing can be written
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
        """Exclusive writer. A second writer waits `lock_wait` seconds, then gets IndexBusyError. A disk problem
        inside the block (full, read-only) becomes a one-line StorageError; what was indexed before stays, and
        the next ingest's repair() finishes what the failed write left pending."""
        if self.read_only:
            raise StorageError(
                f"the index {self.folder} is read-only (the folder or its qa.sqlite3 cannot be written): "
                "`qa ingest` needs write access (remount it read-write, or copy it and point --vectorstore / "
                "QA_VECTORSTORE at the copy); `qa ask` and `qa status` work on it as it is"
            )
        with folder_lock(self.folder, self.lock_wait):
            try:
                yield
            except Exception as exc:
                err = storage_error(self.folder, exc)
                if err is None:
                    raise
                raise err from None

    # ---- the manifest ----------------------------------------------------------------------------------
    @_storage_guard
    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute("SELECT source, hash, size, mtime_ns, n_chunks, state FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    @_storage_guard
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

    def _rename_collection(self, old: str, new: str) -> None:
        self._client.get_collection(old, embedding_function=None).modify(name=new)

    def _has_collection(self, name: str) -> bool:
        try:
            self._client.get_collection(name, embedding_function=None)
            return True
        except Exception:  # NotFoundError (or ValueError in older clients)
            return False

    def clear(self) -> None:
        """Drop everything, including the recorded model, so another model may be used."""
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
        except Exception as exc:
            log.debug("Chroma's largest batch unknown (%s): writing 1000 vectors at a time", exc)
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
    @_storage_guard
    def chunk_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    @_storage_guard
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

    @_storage_guard
    def chunks_of(self, source: str) -> list[Chunk]:
        rows = self.db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE source=? ORDER BY start_char", (source,))
        return [_row_to_chunk(r) for r in rows]

    @_storage_guard
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

    @_storage_guard
    def search_keyword(self, query: str, k: int, sources: list[str] | None = None) -> list[Hit]:
        terms = query_terms(query)  # stop words (qa.text.KEYWORD_STOP) and single letters dropped
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

    @_storage_guard
    def stats(self) -> dict:
        files = self.db.execute("SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM files WHERE state='done'").fetchone()
        vectors = self._chroma(self.collection.count)
        stats = {
            "files": files[0],
            "chunks": files[1],
            "vectors": vectors,
            "embed_model": self.embed_model,
            "chunking": self.chunking,
            "corpus": self.get_meta("corpus"),
            "vectorstore": str(self.folder),
            "chroma": self.chroma_url or "embedded",
        }
        if self.read_only:
            stats["read_only"] = True
        problem = self.damage(vectors)
        if problem:
            stats["problem"] = problem
        return stats

    @_storage_guard
    def damage(self, vectors: int | None = None) -> str | None:
        """What is wrong when Chroma holds fewer vectors than the manifest has chunks (its folder deleted or
        replaced, a collection emptied by hand): every question would be declined without a word. None when the
        two agree, or while a write is in progress (its files are `pending` until both sides are written)."""
        chunks = self.chunk_count()
        if not chunks:
            return None
        if vectors is None:
            vectors = self._chroma(self.collection.count)
        if vectors >= chunks:
            return None
        if self.db.execute("SELECT 1 FROM files WHERE state != 'done' LIMIT 1").fetchone():
            return None
        where = self.chroma_url or self.folder / "chroma"
        return (
            f"the index {self.folder} is damaged: it lists {chunks} passages but Chroma ({where}, collection "
            f"'{self.collection.name}') holds {vectors} vectors. Run `qa ingest` to repair it "
            "(or `qa ingest --rebuild` to build it again)"
        )

    def close(self) -> None:
        self.db.close()


def _readable_copy(chroma: Path) -> Path:
    """Embedded Chroma cannot open a folder it cannot write (it fails with "attempt to write a readonly
    database"), so a read-only index is read from a copy of its Chroma folder in the temporary directory, removed
    when the process exits. It costs that folder's size in TMPDIR and the time to copy it, once per process."""
    if not (chroma / "chroma.sqlite3").is_file():
        raise StorageError(
            f"the index folder {chroma.parent} is read-only and has no Chroma data in {chroma}: run `qa ingest` "
            "with a writable --vectorstore (QA_VECTORSTORE)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="qa-readonly-chroma-"))
    atexit.register(shutil.rmtree, scratch, True)
    try:
        shutil.copytree(chroma, scratch / "chroma")
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise StorageError(
            f"the index {chroma.parent} is read-only, and its Chroma folder could not be copied to {scratch} to be "
            f"read ({exc.strerror or exc}): free space in the temporary folder (TMPDIR), or make the index writable"
        ) from None
    return scratch / "chroma"


# ---- rebuilding beside the old index -------------------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE): a process opening `b` finds the old index
    or the new one, never neither. Where that call is missing: two renames, the first undone if the second fails."""
    call = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if call is not None:
        call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(b))
    old = b.with_name(b.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(b, old)
    try:
        os.rename(a, b)
    except BaseException:
        os.rename(old, b)
        raise
    os.rename(old, a)


def _forget_embedded_chroma(*folders: Path) -> None:
    """Chroma keeps one embedded instance per folder path for the whole process; after a folder swap the path's
    instance still reads the old files. Stop and forget the instances of these paths so the next open reads
    what is there now."""
    try:
        from chromadb.api.shared_system_client import SharedSystemClient as shared
    except ImportError:
        log.debug("this chromadb has no SharedSystemClient: embedded instances are not forgotten after a swap")
        return
    wanted = {os.path.realpath(f) for f in folders}
    for key in [k for k in shared._identifier_to_system if k and os.path.realpath(k) in wanted]:
        system = shared._identifier_to_system.pop(key, None)
        getattr(shared, "_identifier_to_refcount", {}).pop(key, None)
        if system is not None:
            try:
                system.stop()
            except Exception as exc:
                log.debug("stopping the embedded Chroma of %s: %s", key, exc)


T = TypeVar("T")


def rebuild(
    folder: Path,
    chroma_url: str,
    collection: str,
    lock_wait: float,
    open_store: Callable[[Path, str, bool], Store],
    fill: Callable[[Store], T],
) -> T:
    """Replace the index in `folder` by a new one that `fill` (an ingest) writes, without risking the old one.

    The new index is built in a folder beside it (`<folder>.rebuild`; on a Chroma server, in the collection
    `<collection>-rebuild`) while the old one is locked against writers and still answers questions. Only when
    `fill` has returned is it swapped in: the two folders are exchanged in one step and the server's collections
    renamed. An error or a kill before that leaves the old index as it was (the half-built one is removed by the
    next rebuild). Needs room for both indexes while it runs.

    `open_store(folder, collection, verify)` opens a Store. When nothing can be built beside the folder (it is a
    mount point, or its parent is not writable) the old index is cleared in place instead: the caller must have
    checked everything it can (the model loads, the corpus has files) before calling.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StorageError(
            f"vectorstore {folder} is a file, not a folder: point --vectorstore (QA_VECTORSTORE) at a folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(folder, exc) or StorageError(f"vectorstore {folder}: cannot create it ({exc})") from None
    target = folder.resolve()
    foreign = sorted(e for e in os.listdir(target) if e not in _OWN_ENTRIES)
    odd = [e for e in foreign if (target / e).is_symlink() or not (target / e).is_file()]
    if odd:
        raise StorageError(
            f"`qa ingest --rebuild` replaces the whole folder {folder}, which also holds {', '.join(odd[:5])} that "
            "qa did not write: move that away, or point --vectorstore (QA_VECTORSTORE) at a folder of its own"
        )
    if os.path.ismount(target) or not os.access(target.parent, os.W_OK):
        with folder_lock(target, lock_wait):
            old = open_store(target, collection, False)
            try:
                old.clear()
            finally:
                old.close()
        return fill(open_store(target, collection, True))
    aside = target.with_name(f"{target.name}.rebuild")
    temp = f"{collection}-rebuild" if chroma_url else collection
    with folder_lock(target, lock_wait):
        shutil.rmtree(aside, ignore_errors=True)  # what a rebuild killed earlier left
        try:
            new = open_store(aside, temp, False)
        except BaseException:
            shutil.rmtree(aside, ignore_errors=True)
            raise
        renamed = False
        try:
            new.clear()  # stamps the new model; on a server, drops what a rebuild killed earlier left there
            result = fill(new)
            for name in foreign:  # small files of the user's (a .gitkeep) move along with the index
                shutil.copy2(target / name, aside / name)
            if chroma_url:
                new._chroma(lambda: _swap_collections(new, collection, temp))
                renamed = True
            new.close()
            _exchange(aside, target)
        except BaseException as exc:
            if renamed:  # the folders were not swapped: give the old collection its name back
                try:
                    _unswap_collections(new, collection, temp)
                except Exception as undo:
                    log.warning("rebuild failed; renaming collection %s back failed too: %s", collection, undo)
            try:
                if chroma_url:
                    new._client.delete_collection(temp)
            except Exception as undo:
                log.warning("rebuild failed; its collection %s is left on the Chroma server: %s", temp, undo)
            new.close()
            _forget_embedded_chroma(aside / "chroma")
            shutil.rmtree(aside, ignore_errors=True)
            if isinstance(exc, StorageError):
                raise StorageError(f"{exc} (the old index in {folder} is kept as it was)") from None
            raise
    # `aside` now holds the old index.
    if chroma_url:
        try:
            new._client.delete_collection(f"{collection}-old")
        except Exception as exc:
            log.warning("the old index's collection %s-old is left on the Chroma server: %s", collection, exc)
    else:
        _forget_embedded_chroma(target / "chroma", aside / "chroma")
    shutil.rmtree(aside, ignore_errors=True)
    return result


def _swap_collections(store: Store, name: str, temp: str) -> None:
    """Give collection `temp` the name `name`; the collection that had it is kept as `<name>-old` (deleted by the
    caller once the rebuilt side index is in place, or named back if that fails)."""
    old = f"{name}-old"
    if store._has_collection(old):
        store._client.delete_collection(old)
    had = store._has_collection(name)
    if had:
        store._rename_collection(name, old)
    try:
        store._rename_collection(temp, name)
    except BaseException:
        if had:
            store._rename_collection(old, name)
        raise


def _unswap_collections(store: Store, name: str, temp: str) -> None:
    store._rename_collection(name, temp)
    if store._has_collection(f"{name}-old"):
        store._rename_collection(f"{name}-old", name)
