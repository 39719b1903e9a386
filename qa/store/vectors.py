"""The vectors: one Chroma collection, embedded (a PersistentClient under `<vectorstore>/chroma`) or on a server
(an HttpClient). A server that fails a call is a StoreUnavailableError naming it.

It knows nothing of the SQLite side index: the order in which the two sides are written is qa.store.Store's.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from qa.chunking import Chunk
from qa.errors import ConfigError, IndexMismatchError, StorageError, StoreUnavailableError

log = logging.getLogger(__name__)


class Vectors:
    """A Chroma collection of chunk vectors, with each chunk's place as metadata (`source` is what deletes go by)."""

    def __init__(
        self,
        folder: Path,
        embed_model: str,
        chunking: str,
        url: str,
        collection: str,
        timeout: float,
        read_only: bool,
        verify: bool,
    ):
        self.folder = Path(folder)
        self.embed_model = embed_model
        self.chunking = chunking
        self.url = url
        self.read_only = read_only
        self.client = self._connect(url, timeout)
        self.open_collection(collection, verify)

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
            client = chromadb.HttpClient(
                host=parsed.hostname,
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
        except Exception as exc:
            raise self.unavailable(exc) from None
        _limit_requests(client, timeout)
        return client

    def open_collection(self, collection: str, verify: bool) -> None:
        try:
            self.collection = self.client.get_or_create_collection(
                collection,
                metadata={"hnsw:space": "cosine", "embed_model": self.embed_model, "chunking": self.chunking},
                embedding_function=None,
            )
        except Exception as exc:
            raise self.unavailable(exc) from None
        meta = self.collection.metadata or {}
        if verify and meta.get("embed_model", self.embed_model) != self.embed_model:
            raise IndexMismatchError(
                f"Chroma collection '{collection}' holds vectors from '{meta.get('embed_model')}', not "
                f"'{self.embed_model}'. Run `qa ingest --rebuild` or choose another --collection."
            )

    @property
    def name(self) -> str:
        return self.collection.name

    # ---- server errors -------------------------------------------------------------------------------
    def unavailable(self, exc: Exception) -> Exception:
        if self.url:
            return StoreUnavailableError(
                f"Chroma server at {self.url} is not reachable ({type(exc).__name__}: {str(exc)[:120]})"
            )
        return exc

    def call(self, call):
        """`call()`; on a server, any failure of it is a StoreUnavailableError."""
        try:
            return call()
        except Exception as exc:
            if self.url:
                raise self.unavailable(exc) from None
            raise

    # ---- reads ---------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.call(self.collection.count)

    def embeddings(self, ids: list[str]) -> dict[str, np.ndarray]:
        """{chunk id: its vector} for those of `ids` the collection holds."""
        got = self.call(lambda: self.collection.get(ids=ids, include=["embeddings"]))
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"], strict=True)}

    def query(self, vector: np.ndarray, n: int, sources: list[str] | None = None) -> tuple[list[str], list[float]]:
        """The ids of the `n` nearest vectors (of `sources` only, when given) and their cosine distances."""
        where = None
        if sources:
            where = {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": list(sources)}}
        res = self.call(
            lambda: self.collection.query(
                query_embeddings=[vector.tolist()],
                n_results=n,
                where=where,
                include=["distances"],
            )
        )
        return res["ids"][0], res["distances"][0]

    def all_ids(self) -> list[str]:
        ids: list[str] = []
        page = 5000
        while True:
            got = self.call(lambda: self.collection.get(include=[], limit=page, offset=len(ids)))
            ids.extend(got["ids"])
            if len(got["ids"]) < page:
                return ids

    def chunks_of_sources(self, sources: list[str]) -> dict[str, list[Chunk]]:
        """Every chunk of these files, rebuilt from the documents and metadata stored with the vectors (what a
        host's cache is filled from on a server), each file's in text order."""
        out: dict[str, list[Chunk]] = {s: [] for s in sources}
        where = {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": list(sources)}}
        got = self.call(lambda: self.collection.get(where=where, include=["documents", "metadatas"]))
        for chunk_id, text, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            out.setdefault(m["source"], []).append(
                Chunk(
                    chunk_id,
                    text,
                    m["source"],
                    int(m["start_char"]),
                    int(m["end_char"]),
                    int(m["start_line"]),
                    int(m["end_line"]),
                    int(m["page"]) or None,
                    m.get("title") or "",
                    m["hash"],
                )
            )
        for chunks in out.values():
            chunks.sort(key=lambda c: (c.start_char, c.id))
        return out

    # ---- writes --------------------------------------------------------------------------------------
    def add(self, chunks: list[Chunk], embeddings: np.ndarray) -> None:
        """Add the chunks' vectors (row i of `embeddings` is chunk i's) in batches the client accepts."""
        batch = max(1, self.max_batch())
        for i in range(0, len(chunks), batch):
            part = chunks[i : i + batch]
            self.call(
                lambda part=part, i=i: self.collection.add(
                    ids=[c.id for c in part],
                    embeddings=embeddings[i : i + len(part)],
                    documents=[c.text for c in part],
                    metadatas=[self.chroma_meta(c) for c in part],
                )
            )

    def delete_sources(self, sources: list[str]) -> None:
        """Delete every vector of these files (a filtered delete: it scans the collection's metadata)."""
        self.call(lambda: self.collection.delete(where={"source": {"$in": sources}}))

    def delete_source(self, source: str) -> None:
        self.call(lambda: self.collection.delete(where={"source": source}))

    def delete_ids(self, ids: list[str]) -> None:
        for i in range(0, len(ids), 1000):
            self.call(lambda i=i: self.collection.delete(ids=ids[i : i + 1000]))

    def drop(self) -> None:
        """Delete the whole collection (open_collection makes it again)."""
        name = self.collection.name
        self.call(lambda: self.client.delete_collection(name))

    def max_batch(self) -> int:
        try:
            return min(5000, int(self.client.get_max_batch_size()))
        except Exception as exc:
            log.debug("Chroma's largest batch unknown (%s): writing 1000 vectors at a time", exc)
            return 1000

    @staticmethod
    def chroma_meta(c: Chunk) -> dict:
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

    # ---- other collections of the client (a rebuild on a server) ----------------------------------------
    def rename_collection(self, old: str, new: str) -> None:
        self.client.get_collection(old, embedding_function=None).modify(name=new)

    def has_collection(self, name: str) -> bool:
        try:
            self.client.get_collection(name, embedding_function=None)
            return True
        except Exception:  # NotFoundError (or ValueError in older clients)
            return False

    def delete_collection(self, name: str) -> None:
        self.client.delete_collection(name)


def _limit_requests(client, timeout: float) -> None:
    """Bound every request to the server by `timeout` seconds (store_timeout). chromadb's HTTP client is made
    with no timeout at all (httpx timeout=None) and its settings have no field for one, so a server that hangs
    (stopped, or a network that drops packets) would hang `qa ask` and `qa ingest` for ever, an ingest keeping its
    writer lease; with the limit the user gets "Chroma server at URL is not reachable (ReadTimeout ...)"."""
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(timeout)
    else:
        log.warning("this chromadb's HTTP client is not an httpx.Client: store_timeout is not applied")


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
