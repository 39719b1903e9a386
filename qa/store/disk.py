"""Disk problems of an index folder (full, read-only, no permission, a damaged file) as one-line StorageErrors."""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
from pathlib import Path

from qa.errors import QAError, StorageError

log = logging.getLogger(__name__)


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
