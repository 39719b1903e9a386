"""What a Chroma server holds besides the vectors, so that it is the one source of truth for every host.

With a server (`chroma_url`), the chunk collection already carries each chunk's text (documents) and place
(metadata: source, start/end char, start/end line, page, title, hash). Next to it live two small collections:

* `<collection>-files`, the file manifest: one record per file (`f:<source>`: hash, size, mtime, chunk count,
  state `pending`/`done`) and one meta record (`meta`: the corpus folder, and a change stamp that every write
  step of an ingest replaces). A host compares the stamp with the one its local cache was built from, on open and
  before each question (one small read by id); only when it moved does it read the manifest and fetch the chunks
  of the files whose record changed (qa.store.Store.sync).
* `<collection>-lease`, the writer lease (`Lease`): only the host that holds it writes.

Records need a vector in Chroma: every record here carries the same one-dimensional [1.0]; nothing queries them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from qa.errors import IndexBusyError
from qa.store.sqlite import FileRecord

log = logging.getLogger(__name__)

_DUMMY = [1.0]
_META = "meta"


def _file_id(source: str) -> str:
    return f"f:{source}"


def _boot_id() -> str:
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:  # not Linux: the host name alone, and a crashed holder's lease is waited out
        return f"no-boot-id-{uuid.uuid4().hex}"


class ServerManifest:
    """The file manifest and the change stamp, in the collection `<collection>-files` of the server."""

    def __init__(self, vectors, collection: str):
        self.vectors = vectors  # qa.store.vectors.Vectors: its client, and its error wrapping
        self.name = f"{collection}-files"
        self.open()

    def open(self) -> None:
        v = self.vectors
        self.collection = v.call(lambda: v.client.get_or_create_collection(self.name, embedding_function=None))
        # The meta record exists from the start; add() of an existing id is a no-op in Chroma, so this is safe to
        # repeat and to race.
        v.call(lambda: self.collection.add(ids=[_META], embeddings=[_DUMMY], metadatas=[{"kind": "meta"}]))

    def meta(self) -> dict:
        got = self.vectors.call(lambda: self.collection.get(ids=[_META], include=["metadatas"]))
        return dict(got["metadatas"][0]) if got["ids"] else {}

    def stamp(self) -> str:
        """The change stamp: a new random value after every write step, '' before the first."""
        return str(self.meta().get("stamp", ""))

    def set_meta(self, **values) -> None:
        self.vectors.call(lambda: self.collection.update(ids=[_META], metadatas=[values]))

    def bump(self) -> None:
        """A new change stamp: every host's cache is out of step until it has read the manifest again. Only the
        lease holder writes, so reading the counter and writing it back is not a race; the random part makes the
        stamp new even if that were ever wrong."""
        generation = int(self.meta().get("generation", 0)) + 1
        self.set_meta(generation=generation, stamp=f"{generation}-{uuid.uuid4().hex[:12]}")

    def files(self) -> dict[str, FileRecord]:
        got = self.vectors.call(lambda: self.collection.get(where={"kind": "file"}, include=["metadatas"]))
        out = {}
        for m in got["metadatas"]:
            out[m["source"]] = FileRecord(
                m["source"], m["hash"], int(m["size"]), int(m["mtime_ns"]), int(m["n_chunks"]), m["state"]
            )
        return out

    def put(self, records: list[FileRecord]) -> None:
        """Create or overwrite these files' records."""
        if not records:
            return
        self.vectors.call(
            lambda: self.collection.upsert(
                ids=[_file_id(r.source) for r in records],
                embeddings=[_DUMMY] * len(records),
                metadatas=[
                    {
                        "kind": "file",
                        "source": r.source,
                        "hash": r.hash,
                        "size": r.size,
                        "mtime_ns": r.mtime_ns,
                        "n_chunks": r.n_chunks,
                        "state": r.state,
                    }
                    for r in records
                ],
            )
        )

    def delete(self, sources: list[str]) -> None:
        if sources:
            self.vectors.call(lambda: self.collection.delete(ids=[_file_id(s) for s in sources]))

    def drop(self) -> None:
        self.vectors.call(lambda: self.vectors.client.delete_collection(self.name))


class Lease:
    """The writer lease of one index on a Chroma server: owner (host and pid), expiry, renewed by a thread while
    the holder writes.

    Chroma has no compare-and-set, but `add` of an id that exists already is a no-op, and the server applies
    writes one after another. Lease records are `lease-<epoch>`; the one with the highest epoch is the lease. To
    take an expired (or released) lease at epoch E, a host adds `lease-<E+1>` with a random token of its own, then
    reads every lease record back: it holds the lease only if the record of the highest epoch carries its token.
    Of two hosts racing for E+1 only the first add is stored, so exactly one finds its token. A record is deleted
    only once a higher one exists, and the highest is never deleted, so a host that adds a stale epoch (a slot
    freed by that clean-up) always sees the higher record when it reads back, and backs off.

    Residual windows, stated plainly: (1) expiry is the holder's wall clock compared with the taker's, so hosts
    must keep their clocks within a fraction of `seconds` (NTP). (2) A holder that stalls longer than the lease (a
    paused VM, a long network cut) may find it taken over; it notices at its next renewal, or before its next
    write step (`check()`: its own clock says the last renewal is older than the lease), and stops with
    IndexBusyError. One Chroma request already in flight (at most `store_timeout`) can still land after the
    takeover; the crash protocol covers it: the files of an interrupted step stay `pending` and the next ingest
    redoes them.
    """

    def __init__(self, vectors, collection: str, seconds: float, where: str):
        self.vectors = vectors
        self.name = f"{collection}-lease"
        self.seconds = float(seconds)
        self.where = where  # for messages: "the Chroma server URL (collection NAME)"
        self.owner = f"{socket.gethostname()} pid {os.getpid()}"
        self.machine = f"{socket.gethostname()} {_boot_id()}"
        self.token = ""
        self.epoch = 0
        self.renewed = 0.0  # time.monotonic() of the last successful renewal
        self.lost = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        v = vectors
        self.collection = v.call(lambda: v.client.get_or_create_collection(self.name, embedding_function=None))

    def _records(self) -> list[dict]:
        got = self.vectors.call(lambda: self.collection.get(include=["metadatas"]))
        return sorted((dict(m) for m in got["metadatas"] if "epoch" in m), key=lambda m: int(m["epoch"]))

    def acquire(self, wait: float) -> None:
        """Take the lease, waiting up to `wait` seconds for its holder; IndexBusyError naming the holder after."""
        deadline = time.monotonic() + wait
        while True:
            records = self._records()
            current = records[-1] if records else None
            if current is None or self._free(current):
                epoch = int(current["epoch"]) + 1 if current else 1
                token = uuid.uuid4().hex
                record = {
                    "epoch": epoch,
                    "owner": self.owner,
                    "machine": self.machine,
                    "pid": os.getpid(),
                    "token": token,
                    "expires": time.time() + self.seconds,
                }
                self.vectors.call(
                    lambda epoch=epoch, record=record: self.collection.add(
                        ids=[f"lease-{epoch}"], embeddings=[_DUMMY], metadatas=[record]
                    )
                )
                self.renewed = time.monotonic()
                records = self._records()
                current = records[-1]
                if current.get("token") == token:
                    self.token, self.epoch, self.lost = token, epoch, ""
                    old = [f"lease-{int(m['epoch'])}" for m in records[:-1]]
                    if old:  # clean-up only below the highest record (see the class docstring)
                        self.vectors.call(lambda old=old: self.collection.delete(ids=old))
                    self._stop.clear()
                    self._thread = threading.Thread(target=self._renew_loop, name="qa-lease", daemon=True)
                    self._thread.start()
                    return
            if time.monotonic() >= deadline:
                until = time.strftime("%H:%M:%S UTC", time.gmtime(float(current["expires"])))
                raise IndexBusyError(
                    f"the index on {self.where} is being written by {current['owner']} (its lease runs until "
                    f"{until} unless renewed); try again when it finishes, or set lock_wait to wait for it"
                )
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def _free(self, record: dict) -> bool:
        """Whether a lease record may be taken: it expired, or its holder was a process of this machine that is
        gone (a crashed ingest rerun at once need not wait out its own lease). "This machine" is the host name
        and the kernel's boot id: a process of another host with the same pid is never mistaken for ours."""
        if float(record["expires"]) <= time.time():
            return True
        pid = int(record.get("pid", 0))
        if record.get("machine") != self.machine or pid == os.getpid() or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # it exists (another user's process)
            return False
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
            except Exception as exc:  # the server is away: check() stops the writer once the lease runs out
                log.warning("renewing the writer lease on %s failed: %s", self.where, exc)
            if self.lost:
                return

    def renew(self) -> None:
        records = self._records()
        if not records or records[-1].get("token") != self.token:
            holder = records[-1]["owner"] if records else "nobody"
            self.lost = f"the writer lease on {self.where} was taken over by {holder}"
            return
        expires = time.time() + self.seconds
        epoch = self.epoch
        self.vectors.call(lambda: self.collection.update(ids=[f"lease-{epoch}"], metadatas=[{"expires": expires}]))
        self.renewed = time.monotonic()

    def check(self) -> None:
        """Before a write step: IndexBusyError when the lease may no longer be ours."""
        if not self.token:
            return
        if not self.lost and time.monotonic() - self.renewed > self.seconds * 0.8:
            self.lost = (
                f"the writer lease on {self.where} was not renewed for {time.monotonic() - self.renewed:.0f} s "
                "(the server was away or this process stalled), so another host may hold it now"
            )
        if self.lost:
            raise IndexBusyError(f"{self.lost}; this ingest stopped, and the next `qa ingest` finishes its files")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not self.token:
            return
        epoch, token = self.epoch, self.token
        self.token = ""
        try:
            records = self._records()
            if records and records[-1].get("token") == token:  # still ours: free it for the next writer now
                self.vectors.call(lambda: self.collection.update(ids=[f"lease-{epoch}"], metadatas=[{"expires": 0.0}]))
        except Exception as exc:
            log.warning("releasing the writer lease on %s failed (it expires by itself): %s", self.where, exc)
