"""The index: Chroma for vectors, SQLite (FTS5) beside it for keywords, chunk metadata and the file manifest.

Crash safety. Every change to one file's chunks follows the same steps:
  1. the manifest row is set to `pending` (committed) before Chroma is touched;
  2. the file's old vectors are deleted from Chroma by `source`, the new ones added (ids are deterministic);
  3. one SQLite transaction swaps the file's chunk rows and keyword entries and marks the row `done`.
A kill -9 anywhere leaves at most `pending` rows; `repair()` (run at the start of every ingest) deletes
everything of a pending file from both sides so that file is indexed again from scratch. A Chroma that holds
ids the manifest does not know (or misses some it does) is reconciled the same way.

One writer at a time: writes happen under an exclusive OS lock on `<vectorstore>/write.lock`.

On a Chroma server (`chroma_url`) the server is the source of truth, so that any host pointed at it answers
alike: the chunks' text and places are stored with their vectors, and the file manifest, a change stamp and the
writer lease in two small collections beside them (qa.store.shared). Each step above writes the server first
and bumps the stamp; the local SQLite file becomes a cache of the server that `sync()` brings in step (on open,
before each question, and under the lease before each ingest) by comparing the stamp, then fetching only the
files whose manifest record changed. The lease serialises writers across hosts, as the OS lock does on one.

A folder we cannot write (a read-only mount, another user's index) is opened read-only: questions are answered,
and only writes are refused. `rebuild()` builds a new index beside the old one and swaps it in when complete.

Each side knows only itself: qa.store.vectors the Chroma collection (embedded or a server, batches, server
errors), qa.store.sqlite the side index (manifest, chunk rows, keyword index, meta, read-only opening). `Store`
here joins them with the protocol above; qa.store.disk turns disk problems into one-line errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from qa.chunking import Chunk
from qa.errors import ConfigError, IndexBusyError, StorageError
from qa.store.disk import storage_error
from qa.store.shared import Lease, ServerManifest
from qa.store.sqlite import SCHEMA, FileRecord, FileUpdate, Hit, SideIndex
from qa.store.vectors import Vectors, _forget_embedded_chroma

__all__ = [
    "SCHEMA",
    "FileRecord",
    "FileUpdate",
    "Hit",
    "SideIndex",
    "Store",
    "Vectors",
    "folder_lock",
    "rebuild",
    "storage_error",
    "_forget_embedded_chroma",
]

log = logging.getLogger(__name__)

# What qa itself keeps in an index folder; anything else there belongs to someone else.
_OWN_ENTRIES = frozenset(
    {"qa.sqlite3", "qa.sqlite3-wal", "qa.sqlite3-shm", "qa.sqlite3-journal", "chroma", "write.lock"}
)


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
    """Vectors in Chroma (embedded under `folder/chroma`, or a server) plus the SQLite side index, joined by the
    crash protocol of this module's docstring: `self.vectors` (qa.store.vectors) and `self.side`
    (qa.store.sqlite) each know one side; only Store knows the order in which they are written."""

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
        lease_seconds: float = 30.0,
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
        self.side = SideIndex(self.folder)
        self.read_only = self.side.read_only
        try:
            if verify:
                self.side.check_meta(self.embed_model, self.chunking)
            self.vectors = Vectors(
                self.folder, embed_model, chunking, chroma_url, collection, timeout, self.read_only, verify
            )
            self.manifest: ServerManifest | None = None
            self.lease: Lease | None = None
            if chroma_url:
                self.manifest = ServerManifest(self.vectors, collection)
                self.lease = Lease(
                    self.vectors, collection, lease_seconds, f"the Chroma server {chroma_url} (collection {collection})"
                )
                self.sync()
        except BaseException as exc:
            self.side.close()
            err = storage_error(self.folder, exc)
            if err is None:
                raise
            raise err from None

    @property
    def db(self):
        """The side index's SQLite connection (for read-only queries of its tables)."""
        return self.side.db

    @property
    def collection(self):
        """The Chroma collection of the vectors."""
        return self.vectors.collection

    def get_meta(self, key: str) -> str | None:
        if self.manifest is not None and key == "corpus":  # the corpus every host's ingest must mirror
            return self.manifest.meta().get("corpus") or None
        return self.side.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        if (manifest := self.manifest) is not None and key == "corpus" and self.get_meta(key) != value:
            self._server_write(lambda: manifest.set_meta(corpus=value))
        self.side.set_meta(key, value)

    # ---- the server as the source of truth ----------------------------------------------------------------
    @property
    def shared(self) -> bool:
        """True on a Chroma server: the local SQLite file is a cache of what the server holds."""
        return self.manifest is not None

    def sync(self, force: bool = False) -> bool:
        """On a server: bring the local cache in step with the server's manifest. Costs one read of the change
        stamp when nothing changed; otherwise one read of the manifest and one of the chunks of each changed file.
        `force` compares the manifests even when the stamps agree (under the lease, before a write). Returns
        whether anything was read. Embedded: nothing to do."""
        if self.manifest is None or self.read_only:
            return False
        try:
            stamp = self.manifest.stamp()
        except Exception:
            # The collections were replaced (a rebuild on another host swaps them in under the same names, and
            # the ids this process holds are gone): open them again by name.
            self.vectors.open_collection(self.vectors.name, verify=True)
            self.manifest.open()
            stamp = self.manifest.stamp()
            force = True
        if not force and stamp == self.side.get_meta("server_stamp"):
            return False
        server = self.manifest.files()
        local = self.side.files()
        gone = sorted(set(local) - set(server))
        changed = [
            r
            for s, r in sorted(server.items())
            if s not in local or (local[s].hash, local[s].state, local[s].n_chunks) != (r.hash, r.state, r.n_chunks)
        ]
        moved = [
            r
            for s, r in server.items()
            if s in local and r not in changed and (local[s].size, local[s].mtime_ns) != (r.size, r.mtime_ns)
        ]
        complete = True
        for i in range(0, len(changed), 50):
            part = changed[i : i + 50]
            done = [r.source for r in part if r.state == "done"]
            chunks = self.vectors.chunks_of_sources(done) if done else {}
            complete &= all(len(chunks.get(r.source, [])) == r.n_chunks for r in part if r.state == "done")
            self.side.mirror(part, chunks)
        for r in moved:
            self.side.touch(r.source, r.size, r.mtime_ns)
        if gone:
            self.side.drop_sources(gone)
        if complete:  # a file read while a writer changed it is fetched again at the next sync
            self.side.set_meta("server_stamp", stamp)
        return True

    def _server_write(self, write: Callable[[], None]) -> None:
        """One write to the server's manifest, by the lease holder only."""
        if self.lease is not None:
            self.lease.check()
        write()

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
            remove_leftovers(self.folder)
            try:
                if self.lease is None:
                    yield
                    return
                self.lease.acquire(self.lock_wait)
                try:
                    self.sync(force=True)  # the server's manifest, with what other hosts wrote, before writing
                    yield
                finally:
                    self.lease.release()
            except Exception as exc:
                err = storage_error(self.folder, exc)
                if err is None:
                    raise
                raise err from None

    # ---- the manifest ----------------------------------------------------------------------------------
    @_storage_guard
    def files(self) -> dict[str, FileRecord]:
        return self.side.files()

    @_storage_guard
    def known_files(self, sources: list[str], state: str | None = None) -> set[str]:
        """Which of `sources` the manifest holds (in `state`, when given): a key lookup, not a manifest scan."""
        return self.side.known_files(sources, state)

    def touch(self, source: str, size: int, mtime_ns: int) -> None:
        """Record a new mtime for a file whose content did not change (so the next run skips reading it)."""
        if (manifest := self.manifest) is not None:
            record = self.side.files_of([source]).get(source)
            if record is not None:
                record.size, record.mtime_ns = size, mtime_ns
                self._server_write(lambda: manifest.put([record]))
        self.side.touch(source, size, mtime_ns)

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
        manifest = self.manifest  # a local, so that the lambdas below keep the not-None check
        if manifest is not None:  # on a server, its manifest first: it is what every host goes by
            self._server_write(
                lambda: manifest.put(
                    [FileRecord(f.source, f.file_hash, f.size, f.mtime_ns, 0, "pending") for f in files]
                )
            )
            manifest.bump()
        self.side.mark_pending(files)  # 1. pending, committed before Chroma is touched
        # A file with no manifest row has no vectors (repair() has removed those of any crashed run), so the
        # filtered delete, which costs a scan of the collection's metadata, is skipped for new files.
        replaced = [f.source for f in files if f.source in known]
        if replaced:
            self.vectors.delete_sources(replaced)  # 2. the old vectors out, the new ones in
        chunks = [c for f in files for c in f.chunks]
        embeddings = np.concatenate([f.embeddings for f in files])
        if self.lease is not None:
            self.lease.check()
        self.vectors.add(chunks, embeddings)
        if manifest is not None:
            self._server_write(
                lambda: manifest.put(
                    [FileRecord(f.source, f.file_hash, f.size, f.mtime_ns, len(f.chunks), "done") for f in files]
                )
            )
            manifest.bump()
        self.side.swap_chunks(files)  # 3. one transaction: the chunk rows swapped, the rows `done`
        if manifest is not None:
            self.side.set_meta("server_stamp", manifest.stamp())  # our own write: nothing to fetch

    def remove_file(self, source: str) -> None:
        manifest = self.manifest
        if manifest is not None:
            record = self.side.files_of([source]).get(source)
            if record is not None:
                record.state, record.n_chunks = "pending", 0
                self._server_write(lambda: manifest.put([record]))
                manifest.bump()
        self.side.mark_source_pending(source)
        self.vectors.delete_source(source)
        if manifest is not None:
            self._server_write(lambda: manifest.delete([source]))
            manifest.bump()
        self.side.drop_source(source)
        if manifest is not None:
            self.side.set_meta("server_stamp", manifest.stamp())

    def repair(self) -> list[str]:
        """Undo whatever an interrupted run left half-done. Returns the sources that will be indexed again."""
        pending = self.side.unfinished()
        for source in pending:
            self.remove_file(source)
        known = self.chunk_count()
        if self.vectors.count() == known:
            return pending
        # Chroma and the manifest disagree (e.g. a write that Chroma persisted after our crash marker was
        # cleared by hand, or a collection edited outside qa): reconcile id by id.
        chroma_ids = set(self.vectors.all_ids())
        ours = self.side.chunk_sources()
        extra = sorted(chroma_ids - ours.keys())
        self.vectors.delete_ids(extra)
        missing_sources = sorted({ours[i] for i in ours.keys() - chroma_ids})
        for source in missing_sources:
            self.remove_file(source)
        return pending + missing_sources

    def clear(self) -> None:
        """Drop everything, including the recorded model, so another model may be used."""
        name = self.vectors.name
        self.vectors.drop()
        if self.manifest is not None:
            self.manifest.drop()
        self.side.clear()
        self.side.check_meta(self.embed_model, self.chunking)
        self.vectors.open_collection(name, verify=True)
        if self.manifest is not None:
            self.manifest.open()

    # ---- reads ---------------------------------------------------------------------------------------
    @_storage_guard
    def chunk_count(self) -> int:
        return self.side.chunk_count()

    @_storage_guard
    def chunks(self, ids: list[str]) -> dict[str, Chunk]:
        return self.side.chunks(ids)

    def vectors_for(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """Vectors already in the index for chunk texts with these hashes: an edited file re-embeds only its
        changed chunks, and a copied or renamed file none. Only finished files count (not `pending` ones)."""
        ids = self.side.done_ids_for_hashes(hashes)
        if not ids:
            return {}
        return {ids[i]: v for i, v in self.vectors.embeddings(list(ids)).items()}

    @_storage_guard
    def chunks_of(self, source: str) -> list[Chunk]:
        return self.side.chunks_of(source)

    @_storage_guard
    def search_dense(self, vector: np.ndarray, k: int, sources: list[str] | None = None) -> list[Hit]:
        n = self.chunk_count()
        if n == 0:
            return []
        ids, dists = self.vectors.query(vector, min(k, n), sources)
        found = self.chunks(ids)
        # cosine distance -> cosine similarity; ids unknown to SQLite (mid-repair) are skipped
        return [Hit(found[i], 1.0 - float(d)) for i, d in zip(ids, dists, strict=True) if i in found]

    @_storage_guard
    def search_keyword(self, query: str, k: int, sources: list[str] | None = None) -> list[Hit]:
        return self.side.search_keyword(query, k, sources)

    @_storage_guard
    def term_counts(self, terms: list[str]) -> tuple[int, dict[str, int]]:
        return self.side.term_counts(terms)

    @_storage_guard
    def stats(self) -> dict:
        self.sync()
        files, chunks = self.side.done_totals()
        vectors = self.vectors.count()
        stats = {
            "files": files,
            "chunks": chunks,
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
    def damage(self, vectors: int | None = None, chunks: int | None = None) -> str | None:
        """What is wrong when Chroma holds fewer vectors than the manifest has chunks (its folder deleted or
        replaced, a collection emptied by hand): every question would be declined without a word. None when the
        two agree, or while a write is in progress (its files are `pending` until both sides are written)."""
        if chunks is None:
            chunks = self.chunk_count()
        if not chunks:
            return None
        if vectors is None:
            vectors = self.vectors.count()
        if vectors >= chunks:
            return None
        if self.side.any_unfinished():
            return None
        where = self.chroma_url or self.folder / "chroma"
        return (
            f"the index {self.folder} is damaged: it lists {chunks} passages but Chroma ({where}, collection "
            f"'{self.vectors.name}') holds {vectors} vectors. Run `qa ingest` to repair it "
            "(or `qa ingest --rebuild` to build it again)"
        )

    def close(self) -> None:
        self.side.close()


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


def leftovers(folder: Path) -> list[Path]:
    """What killed rebuilds left beside an index folder: a half-built `<folder>.rebuild`, or the replaced index
    moved to `<folder>.rebuild-old-<pid>` and not yet deleted. Both are garbage whenever the folder's write lock
    is held: a rebuild holds it from before it creates the first until after it has made the second."""
    folder = Path(folder).resolve()
    name = f"{folder.name}.rebuild"
    try:
        return sorted(folder.parent / e for e in os.listdir(folder.parent) if e == name or e.startswith(f"{name}-old-"))
    except OSError:
        return []


def remove_leftovers(folder: Path) -> None:
    """Delete `leftovers(folder)`; call it holding the folder's write lock. A full index copy each, so they are
    not left to the next rebuild."""
    for path in leftovers(folder):
        log.info("removing %s, left by a rebuild that was stopped", path)
        _forget_embedded_chroma(path / "chroma")
        shutil.rmtree(path, ignore_errors=True)


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
    next write to the index: `remove_leftovers`). Needs room for both indexes while it runs.

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
        remove_leftovers(target)
        try:
            new = open_store(aside, temp, False)
        except BaseException:
            shutil.rmtree(aside, ignore_errors=True)
            raise
        renamed = False
        lease = None
        try:
            # other hosts' ingests wait for the rebuild, as this host's do for the folder lock (a store on a
            # server, and only there, holds a lease)
            if new.lease is not None:
                lease = Lease(
                    new.vectors,
                    collection,
                    new.lease.seconds,
                    f"the Chroma server {chroma_url} (collection {collection})",
                )
                lease.acquire(lock_wait)
            new.clear()  # stamps the new model; on a server, drops what a rebuild killed earlier left there
            result = fill(new)
            for name in foreign:  # small files of the user's (a .gitkeep) move along with the index
                shutil.copy2(target / name, aside / name)
            if chroma_url:
                new.vectors.call(lambda: _swap_collections(new.vectors, collection, temp))
                renamed = True
            new.close()
            # The new folder's lock is taken before the swap: once swapped, `target/write.lock` is that file, and a
            # writer waiting for the folder would otherwise get in before the old index has left the name `aside`
            # (a second rebuild would then build in a folder this one is about to delete).
            with folder_lock(aside):
                _exchange(aside, target)
                old_index = aside.with_name(f"{aside.name}-old-{os.getpid()}")
                try:
                    os.rename(aside, old_index)
                except OSError:  # the swap is done, and must not be undone by the handler below
                    old_index = aside
            if lease is not None:
                lease.release()
        except BaseException as exc:
            if lease is not None:
                lease.release()
            if renamed:  # the folders were not swapped: give the old collection its name back
                try:
                    _unswap_collections(new.vectors, collection, temp)
                except Exception as undo:
                    log.warning("rebuild failed; renaming collection %s back failed too: %s", collection, undo)
            try:
                if chroma_url:
                    for name in [*_server_collections(temp), f"{temp}-lease"]:
                        if new.vectors.has_collection(name):
                            new.vectors.delete_collection(name)
            except Exception as undo:
                log.warning("rebuild failed; its collection %s is left on the Chroma server: %s", temp, undo)
            new.close()
            _forget_embedded_chroma(aside / "chroma")
            shutil.rmtree(aside, ignore_errors=True)
            if isinstance(exc, StorageError):
                raise StorageError(f"{exc} (the old index in {folder} is kept as it was)") from None
            raise
    # `old_index` now holds the old index; a kill before it is deleted leaves it to the next writer.
    if chroma_url:
        try:
            for name in [f"{n}-old" for n in _server_collections(collection)] + [f"{temp}-lease"]:
                if new.vectors.has_collection(name):
                    new.vectors.delete_collection(name)
        except Exception as exc:
            log.warning("the old index's collection %s-old is left on the Chroma server: %s", collection, exc)
    else:
        _forget_embedded_chroma(target / "chroma", aside / "chroma")
    shutil.rmtree(old_index, ignore_errors=True)
    return result


def _server_collections(name: str) -> list[str]:
    """The collections of one index on a server that a rebuild swaps: the chunks and the manifest (the lease
    stays: it guards the index under its name whatever collections it is made of)."""
    return [name, f"{name}-files"]


def _swap_collections(vectors: Vectors, name: str, temp: str) -> None:
    """Give the collections of `temp` the names of `name`'s; those that had them are kept as `<name>-old...`
    (deleted by the caller once the rebuilt side index is in place, or named back if that fails)."""
    done: list[tuple[str, str]] = []
    try:
        for n, t in zip(_server_collections(name), _server_collections(temp), strict=True):
            _swap_one(vectors, n, t)
            done.append((n, t))
    except BaseException:
        for n, t in reversed(done):
            _unswap_one(vectors, n, t)
        raise


def _unswap_collections(vectors: Vectors, name: str, temp: str) -> None:
    for n, t in reversed(list(zip(_server_collections(name), _server_collections(temp), strict=True))):
        if vectors.has_collection(n) and not vectors.has_collection(t):
            _unswap_one(vectors, n, t)


def _swap_one(vectors: Vectors, name: str, temp: str) -> None:
    old = f"{name}-old"
    if vectors.has_collection(old):
        vectors.delete_collection(old)
    had = vectors.has_collection(name)
    if had:
        vectors.rename_collection(name, old)
    try:
        vectors.rename_collection(temp, name)
    except BaseException:
        if had:
            vectors.rename_collection(old, name)
        raise


def _unswap_one(vectors: Vectors, name: str, temp: str) -> None:
    vectors.rename_collection(name, temp)
    if vectors.has_collection(f"{name}-old"):
        vectors.rename_collection(f"{name}-old", name)
