"""Hostile storage (issue 19): a rebuild that would wipe the index, a vectorstore that is a file, a read-only
index, a full disk, a deleted Chroma folder. Every time the user gets one line naming the path and the fix, and
what was indexed before is still there and still answers.

Read-only folders and full disks are made for real where the sandbox lets root mount (a read-only bind mount, a
small tmpfs); elsewhere each test simulates them at the seam and prints which way it went (`pytest -s` shows it).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qa.api import Assistant
from qa.cli import main
from qa.errors import ConfigError, CorpusError, IndexBusyError, IndexMismatchError, StorageError
from qa.store import Store, _forget_embedded_chroma
from tests.conftest import run_qa
from tests.test_chroma_server import chroma_server  # noqa: F401 (fixture)
from tests.test_ingest import index_state

OFF_TOPIC = "What is the capital of France?"  # declined by the relevance gate: retrieval runs, no language model
ENVOY = "Who is the U.N. envoy in Iraq?"
NEW_FILE = "The harbour master counted 412 ships in the spring of 1911, most of them carrying timber and salt.\n"


def ingest_seeds(settings) -> dict:
    """Index the corpus in this process, then let go of the index, as a user's earlier `qa ingest` would have."""
    assistant = Assistant(settings)
    assistant.ingest()
    stats = assistant.status()
    assistant.store.close()
    _forget_embedded_chroma(Path(settings.vectorstore) / "chroma")
    return stats


def status_of(settings, *flags: str):
    result = run_qa("status", "--json", "--vectorstore", str(settings.vectorstore), *flags)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else None), result.stderr


def one_error_line(stderr: str) -> str:
    """The CLI's whole complaint: exactly one line, `error: ...`, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.lstrip().startswith("0%")]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0][errors[0].index("error:") :]


@pytest.fixture
def mount():
    """mount(*args, at=folder) -> True when root could mount there (unmounted after the test), else False."""
    points: list[Path] = []

    def do(*args: str, at: Path) -> bool:
        if os.geteuid() != 0 or not shutil.which("mount"):
            return False
        if subprocess.run(["mount", *args, str(at)], capture_output=True).returncode != 0:
            return False
        points.append(at)
        return True

    yield do
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Write a file until the file system holding `folder` has no byte left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def enospc_after(monkeypatch, calls: int) -> None:
    """The seam for a full disk: Store.replace_files fails with ENOSPC after `calls` successful calls."""
    real = Store.replace_files
    seen = {"n": 0}

    def replace_files(self, files):
        seen["n"] += 1
        if seen["n"] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, files)

    monkeypatch.setattr(Store, "replace_files", replace_files)


def cli(capfd, *args: str) -> tuple[int, str, str]:
    """The real CLI in this process (where a seam is patched in), as (exit code, stdout, stderr)."""
    capfd.readouterr()
    code = main(list(args))
    out = capfd.readouterr()  # fd level: print_answer writes to the sys.stdout of import time
    return code, out.out, out.err


# ---- --rebuild -------------------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("mistake", ["mistyped model", "missing corpus", "corpus of unreadable files"])
def test_a_rebuild_that_cannot_work_is_one_line_and_the_old_index_still_answers(settings, seed_corpus, mistake):
    """Before: `qa ingest --rebuild --embed-model <typo>` dropped the index, then failed to load the model, and left
    an empty index stamped with the typo (every later command: 'built with embedding model <typo>')."""
    before = ingest_seeds(settings)
    corpus, flags = seed_corpus, []
    if mistake == "mistyped model":
        flags = ["--embed-model", "all-MiniLM-L6-v2-typo"]
    elif mistake == "missing corpus":
        corpus = seed_corpus.parent / "no-such-folder"
    else:
        corpus = seed_corpus.parent / "binaries"
        corpus.mkdir()
        (corpus / "a.txt").write_bytes(b"\x00\x01" * 100)
    result = run_qa("ingest", "--rebuild", str(corpus), "--vectorstore", str(settings.vectorstore), *flags)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    expected = {"mistyped model": "embed_model 'all-MiniLM-L6-v2-typo'", "missing corpus": str(corpus)}
    assert expected.get(mistake, f"corpus {corpus}") in line, line

    code, status, _ = status_of(settings)
    assert code == 0 and status["files"] == 5 and status["chunks"] == status["vectors"] == before["chunks"]
    assert status["embed_model"] == before["embed_model"]
    assert not list(settings.vectorstore.parent.glob("*.rebuild")), "a half-built index was left behind"


@pytest.mark.model
def test_a_rebuild_that_fails_midway_keeps_the_old_index(settings, seed_corpus, tmp_path, mount, monkeypatch):
    """The new index is built beside the old one: a full disk in the middle of the rebuild costs nothing."""
    disk = tmp_path / "disk"
    disk.mkdir()
    real_disk = mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", at=disk)
    settings = settings.replace(vectorstore=disk / "index")
    before = ingest_seeds(settings)
    if real_disk:
        print("full disk: a real 8 MB tmpfs, filled up before the rebuild")
        filler = fill_disk(disk)
    else:
        print("full disk: simulated, ENOSPC from the first write of the new index (no mount here)")
        enospc_after(monkeypatch, 0)
    assistant = Assistant(settings)
    with pytest.raises(StorageError, match=r"the disk holding the index .* is full .* free some space"):
        assistant.ingest(rebuild=True)
    if real_disk:
        filler.unlink()
    monkeypatch.undo()

    assert not (disk / "index.rebuild").exists()
    again = Assistant(settings)
    assert again.status()["chunks"] == again.status()["vectors"] == before["chunks"]
    assert again.retriever.search(ENVOY, 3)[0].chunk.source.endswith(".txt")
    again.store.close()


@pytest.mark.model
def test_a_rebuild_swaps_in_the_complete_new_index(settings, seed_corpus):
    first = Assistant(settings)
    first.ingest()
    assert first.retriever.search(ENVOY, 1)
    (settings.vectorstore / ".gitkeep").write_text("")
    (settings.vectorstore / "notes").mkdir()

    rechunked = Assistant(settings.replace(chunk_size=400))
    with pytest.raises(StorageError, match=r"replaces the whole folder .* holds notes that qa did not write"):
        rechunked.ingest(rebuild=True)
    (settings.vectorstore / "notes").rmdir()
    report = rechunked.ingest(rebuild=True)

    status = rechunked.status()
    assert len(report.added) == 5 and status["chunks"] == status["vectors"] == report.chunks
    top = rechunked.retriever.search(ENVOY, 1)[0].chunk
    assert top.end_char - top.start_char <= 400
    assert (settings.vectorstore / ".gitkeep").exists() and not list(settings.vectorstore.parent.glob("index.*"))
    with pytest.raises(IndexMismatchError, match="chunking recursive-v1/400/100, not recursive-v1/600/100"):
        Assistant(settings).status()
    # The same process kept no stale view of the old files: the CLI, reading from disk, sees the same index.
    rechunked.store.close()
    code, on_disk, _ = status_of(settings, "--chunk-size", "400")
    assert code == 0 and on_disk["chunks"] == on_disk["vectors"] == report.chunks


@pytest.mark.model
def test_what_a_killed_rebuild_left_is_removed_by_the_next_ingest(settings, seed_corpus):
    """A rebuild killed while building leaves `<index>.rebuild` (half an index), killed after its swap the old
    index as `<index>.rebuild-old-<pid>`: each a copy of the index on disk. Before, they stayed until the next
    rebuild; an ordinary ingest, which holds the same lock, now removes them and keeps what is indexed."""
    before = ingest_seeds(settings)
    index = settings.vectorstore
    half_built = index.with_name("index.rebuild")
    old = index.with_name("index.rebuild-old-4242")
    shutil.copytree(index, half_built)
    shutil.copytree(index, old)
    unrelated = index.with_name("index.rebuild-notes")  # not a name a rebuild writes: kept
    unrelated.mkdir()

    result = run_qa("ingest", str(seed_corpus), "--vectorstore", str(index))
    assert result.returncode == 0, result.stderr
    assert "5 unchanged" in result.stdout, result.stdout
    assert not half_built.exists() and not old.exists() and unrelated.exists()
    code, status, _ = status_of(settings)
    assert code == 0 and status["files"] == 5 and status["chunks"] == status["vectors"] == before["chunks"]


@pytest.mark.model
def test_no_writer_gets_in_between_a_rebuilds_swap_and_its_cleanup(settings, seed_corpus, monkeypatch):
    """Once the folders are swapped, `<index>/write.lock` is the new folder's. Before, nobody held it, so a
    writer waiting for the index (a second rebuild) got in while the first rebuild was still to delete the old
    index under the name `<index>.rebuild`, the very folder the second one builds in."""
    import qa.store as store

    ingest_seeds(settings)
    real_exchange = store._exchange
    seen = []

    def exchange_then_try_the_lock(a, b):
        real_exchange(a, b)
        try:
            with store.folder_lock(b, 0):
                seen.append("a second writer got the lock")
        except IndexBusyError:
            seen.append("busy")

    monkeypatch.setattr(store, "_exchange", exchange_then_try_the_lock)
    assistant = Assistant(settings)
    report = assistant.ingest(rebuild=True)
    assert seen == ["busy"]
    assert len(report.added) == 5 and assistant.retriever.search(ENVOY, 1)
    assert not list(settings.vectorstore.parent.glob("index.rebuild*"))
    assistant.store.close()


@pytest.mark.model
def test_a_rebuild_of_an_index_that_is_a_mount_point_checks_everything_first(settings, seed_corpus, mount, monkeypatch):
    """Nothing can be built beside a mounted index folder (a Docker volume): the rebuild clears it in place, so the
    model and the corpus are checked first, and a mistake still costs nothing."""
    settings.vectorstore.mkdir()
    if mount("-t", "tmpfs", "-o", "size=32m", "tmpfs", at=settings.vectorstore):
        how = "mount point: a real tmpfs mounted at the index folder"
    else:
        how = "mount point: simulated, os.path.ismount says so (no mount here)"
        real = os.path.ismount
        monkeypatch.setattr("qa.store.os.path.ismount", lambda p: Path(p) == settings.vectorstore.resolve() or real(p))
    before = ingest_seeds(settings)
    with pytest.raises(ConfigError, match="embed_model 'all-MiniLM-L6-v2-typo'"):
        Assistant(settings.replace(embed_model="all-MiniLM-L6-v2-typo")).ingest(rebuild=True)
    with pytest.raises(CorpusError):
        Assistant(settings).ingest(seed_corpus.parent / "missing", rebuild=True)
    kept = Assistant(settings)
    assert kept.status()["chunks"] == kept.status()["vectors"] == before["chunks"]
    kept.store.close()

    rechunked = Assistant(settings.replace(chunk_size=400))
    report = rechunked.ingest(rebuild=True)
    assert rechunked.status()["chunks"] == rechunked.status()["vectors"] == report.chunks != before["chunks"]
    rechunked.store.close()
    print(how)


# ---- what the index folder is ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_vectorstore_that_is_not_a_folder_is_one_line(tmp_path, where):
    """Before: FileExistsError / NotADirectoryError tracebacks, exit code 1."""
    target = tmp_path / "index"
    target.write_text("I am a file")
    if where == "under a file":
        target = target / "sub"
    for command in (["status"], ["ingest", str(tmp_path)]):
        result = run_qa(*command, "--vectorstore", str(target))
        assert result.returncode == 2
        line = one_error_line(result.stderr)
        assert f"vectorstore {target}" in line and "point --vectorstore (QA_VECTORSTORE) at a folder" in line


@pytest.mark.model
def test_a_read_only_index_answers_questions_and_refuses_only_writes(
    settings, seed_corpus, tmp_path, mount, monkeypatch, capfd
):
    """Before: `qa status`, `qa ask` and `qa ingest` each ended in sqlite3.OperationalError (exit code 1)."""
    ingest_seeds(settings)
    index = settings.vectorstore
    view = tmp_path / "read-only-view"
    view.mkdir()
    if mount("-o", "bind,ro", str(index), at=view):
        how = "read-only: a read-only bind mount of the index"

        def qa(*args):
            result = run_qa(*args, "--vectorstore", str(view))
            return result.returncode, result.stdout, result.stderr
    else:
        how = "read-only: simulated, os.access says the index folder is not writable (no mount here)"
        view = index
        real_access = os.access
        monkeypatch.setattr(
            "qa.store.os.access",
            lambda path, mode, **kw: (
                not (mode & os.W_OK and Path(path).resolve().is_relative_to(index.resolve()))
                and real_access(path, mode, **kw)
            ),
        )

        def qa(*args):
            return cli(capfd, *args, "--vectorstore", str(view))

    def fingerprint():
        files = [index / "qa.sqlite3", *sorted((index / "chroma").rglob("*"))]
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}

    before = fingerprint()
    code, out, err = qa("status")
    assert code == 0, err
    assert "files        5" in out and "read_only    True" in out

    code, out, err = qa("ask", OFF_TOPIC)
    assert code == 0, err
    assert "The documents don't say." in out and "Closest passages:" in out  # retrieval ran on the read-only index

    code, out, err = qa("ingest", str(seed_corpus))
    assert code == 2
    line = one_error_line(err)
    assert f"the index {view} is read-only" in line and "`qa ask` and `qa status` work on it" in line

    reader = Assistant(settings.replace(vectorstore=view))
    hits = reader.retriever.search(ENVOY, 3)
    assert any("Kobler" in h.chunk.text for h in hits)
    reader.store.close()
    assert fingerprint() == before, "the read-only index was written to"
    print(how)  # at the end: capfd takes what is printed before a CLI call


# ---- a full disk -----------------------------------------------------------------------------------------------


@pytest.mark.model
def test_a_full_disk_during_ingest_is_one_line_and_the_next_ingest_finishes(
    settings, seed_corpus, tmp_path, mount, monkeypatch, capfd
):
    """Before: a chromadb InternalError traceback (exit code 1); nothing was lost, and the next ingest repaired it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    real_disk = mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", at=disk)
    settings = settings.replace(vectorstore=disk / "index")
    before = ingest_seeds(settings)
    (seed_corpus / "harbour.txt").write_text(NEW_FILE * 8)
    if real_disk:
        how = "full disk: a real 8 MB tmpfs, filled up before the ingest"
        filler = fill_disk(disk)
        result = run_qa("ingest", str(seed_corpus), "--vectorstore", str(settings.vectorstore))
        code, err = result.returncode, result.stderr
        filler.unlink()
    else:
        how = "full disk: simulated, ENOSPC from the first group of files written (no mount here)"
        enospc_after(monkeypatch, 0)
        code, _, err = cli(capfd, "ingest", str(seed_corpus), "--vectorstore", str(settings.vectorstore))
        monkeypatch.undo()
    assert code == 2
    line = one_error_line(err)
    assert f"the disk holding the index {settings.vectorstore} is full" in line and "run `qa ingest` again" in line

    _forget_embedded_chroma(settings.vectorstore / "chroma")  # this process may have opened it (the seam)
    code, status, _ = status_of(settings)  # what was indexed before is all there
    assert code == 0 and status["files"] == 5 and status["chunks"] == before["chunks"]

    again = run_qa("ingest", str(seed_corpus), "--vectorstore", str(settings.vectorstore))
    assert again.returncode == 0, again.stderr
    assert "1 added" in again.stdout or "repaired: harbour.txt" in again.stderr
    resumed = Assistant(settings)
    clean = Assistant(settings.replace(vectorstore=tmp_path / "clean"))
    clean.ingest()
    assert index_state(resumed) == index_state(clean)
    resumed.store.close()
    clean.store.close()
    print(how)


# ---- a damaged index -------------------------------------------------------------------------------------------


@pytest.mark.model
def test_a_deleted_chroma_folder_is_reported_not_silently_declined(settings, seed_corpus):
    """Before: `qa status` showed `vectors 0` without a word, and every question was declined."""
    before = ingest_seeds(settings)
    shutil.rmtree(settings.vectorstore / "chroma")

    result = run_qa("status", "--vectorstore", str(settings.vectorstore))
    assert result.returncode == 1 and "vectors      0" in result.stdout
    assert f"warning: the index {settings.vectorstore} is damaged" in result.stderr
    assert "Run `qa ingest` to repair it" in result.stderr

    result = run_qa("ask", ENVOY, "--vectorstore", str(settings.vectorstore))
    assert result.returncode == 2 and "The documents don't say" not in result.stdout
    line = one_error_line(result.stderr)
    assert f"lists {before['chunks']} passages but Chroma" in line and "holds 0 vectors" in line

    repaired = run_qa("ingest", str(seed_corpus), "--vectorstore", str(settings.vectorstore))
    assert repaired.returncode == 0, repaired.stderr
    code, status, err = status_of(settings)
    assert code == 0 and not err.strip() and status["vectors"] == status["chunks"] == before["chunks"]


# ---- a Chroma server -------------------------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.model
def test_a_rebuild_on_a_chroma_server_is_built_aside_and_swapped(
    settings,
    seed_corpus,
    chroma_server,  # noqa: F811
    monkeypatch,
):
    import chromadb

    server = settings.replace(chroma_url=chroma_server.url, store_timeout=5)
    before = ingest_seeds(server)
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)

    def names():
        return sorted(c.name if hasattr(c, "name") else c for c in client.list_collections())

    # the chunks, the file manifest and the writer lease of one index (qa.store.shared); nothing left over
    one_index = ["qa_chunks", "qa_chunks-files", "qa_chunks-lease"]

    with pytest.raises(ConfigError, match="embed_model 'all-MiniLM-L6-v2-typo'"):
        Assistant(server.replace(embed_model="all-MiniLM-L6-v2-typo")).ingest(rebuild=True)
    enospc_after(monkeypatch, 0)
    with pytest.raises(StorageError, match="is full"):
        Assistant(server).ingest(rebuild=True)
    monkeypatch.undo()
    with pytest.raises(CorpusError):
        Assistant(server).ingest(seed_corpus.parent / "missing", rebuild=True)
    kept = Assistant(server)
    assert kept.status()["vectors"] == kept.status()["chunks"] == before["chunks"]
    assert names() == one_index

    rechunked = Assistant(server.replace(chunk_size=400))
    report = rechunked.ingest(rebuild=True)
    status = rechunked.status()
    assert status["vectors"] == status["chunks"] == report.chunks != before["chunks"]
    assert names() == one_index
    assert any("Kobler" in h.chunk.text for h in rechunked.retriever.search(ENVOY, 3))


# ---- the CLI's output read by a pipe that closes early ---------------------------------------------------------


def test_status_into_a_pipe_that_closes_early_ends_quietly(tmp_path):
    """Before: `qa status | head -1` could end in a BrokenPipeError traceback."""
    import sys

    from tests.conftest import ROOT

    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "status", "--vectorstore", str(tmp_path / "index")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stdout.close()  # the reader is gone before qa writes a byte (it takes a second to start)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as a shell reports a tool stopped by a closed pipe
    assert err == "", err
