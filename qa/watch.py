"""`qa ingest --watch`: keep the index in step with the corpus folder while files are added, changed and removed.

The folder is watched with watchdog (inotify on Linux, FSEvents on macOS, polling elsewhere). A burst of events
(an editor's save, a copy of many files) is one ingest once the folder has been quiet for `quiet` seconds, and
every ingest is the ordinary incremental `Assistant.ingest`: the events only say *when* to look, the file sizes,
times and hashes say *what* changed, so a missed or doubled event costs nothing but an early or extra sync.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qa.errors import CorpusError, IndexBusyError, QAError

if TYPE_CHECKING:
    from qa.api import Assistant
    from qa.ingest import IngestReport

QUIET_SECONDS = 0.75
# Reading a file is not a change: ingest itself opens every file it reads (inotify's IN_OPEN / IN_CLOSE_NOWRITE).
_NOT_CHANGES = frozenset({"opened", "closed_no_write"})


def ignored(path: str, root: Path, index: Path) -> bool:
    """True for paths whose events are not corpus changes: hidden names anywhere below the corpus (qa's own
    `.NAME.upload` / `.NAME.previous` copies, editors' swap files, `.git`) and an index kept inside the corpus."""
    p = Path(path)
    if p.is_relative_to(index):
        return True
    try:
        parts = p.relative_to(root).parts
    except ValueError:
        return False
    return any(part.startswith(".") for part in parts)


def watch(
    assistant: Assistant,
    stop: threading.Event,
    on_report: Callable[[IngestReport], None],
    on_error: Callable[[QAError], None] | None = None,
    quiet: float = QUIET_SECONDS,
    progress: Callable[[int, int, str], None] | None = None,
) -> None:
    """Sync the corpus once, then again after each burst of changes, until `stop` is set.

    Each ingest's report goes to `on_report`. A QAError from an ingest (the index busy with another writer, the
    last file removed) goes to `on_error`, and the watch goes on; the next change, or the retry after a busy
    index, syncs again. Without `on_error` it is raised. Returns when `stop` is set; KeyboardInterrupt passes.
    """
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    root = Path(assistant.settings.corpus).resolve()
    index = Path(assistant.settings.vectorstore).resolve()
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist, or is not a folder")
    changed = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in _NOT_CHANGES or (event.is_directory and event.event_type == "modified"):
                return  # a folder's "modified" is a file in it created or removed, which has its own event
            paths = [p for p in (event.src_path, getattr(event, "dest_path", "")) if p]
            if any(not ignored(str(p), root, index) for p in paths):
                changed.set()

    def sync() -> None:
        try:
            on_report(assistant.ingest(progress=progress))
        except QAError as exc:
            if on_error is None:
                raise
            on_error(exc)
            if isinstance(exc, IndexBusyError):
                changed.set()  # try again after the next quiet spell

    observer = Observer()
    observer.schedule(Handler(), str(root), recursive=True)
    observer.start()
    try:
        sync()  # changes made before the watch started
        while not stop.is_set():
            if not changed.wait(0.2):
                continue
            while changed.is_set() and not stop.is_set():  # wait for `quiet` seconds without an event
                changed.clear()
                stop.wait(quiet)
            if not stop.is_set():
                sync()
    finally:
        observer.stop()
        observer.join()
