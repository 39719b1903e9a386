"""The same index on a real Chroma server (`chroma run` on 127.0.0.1, started here) instead of the embedded store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qa.api import Assistant
from qa.errors import StoreUnavailableError
from tests.conftest import SEEDS, wait_until_serving
from tests.test_ui import free_port

# The `chroma` command installed with chromadb, next to this interpreter (the venv need not be activated).
CHROMA = str(Path(sys.executable).parent / "chroma")
if not Path(CHROMA).exists():
    CHROMA = shutil.which("chroma") or "chroma"


class ChromaServer:
    def __init__(self, path: Path):
        self.path = path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [CHROMA, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_serving(f"{self.url}/api/v2/heartbeat", self.proc, 60, "chroma run")
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def chroma_server(tmp_path):
    server = ChromaServer(tmp_path / "chroma-server").start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def server_assistant(settings, url):
    return Assistant(settings.replace(chroma_url=url, store_timeout=5))


@pytest.mark.server
@pytest.mark.model
def test_ingest_and_search_work_the_same_on_a_server(settings, seed_corpus, chroma_server):
    assistant = server_assistant(settings, chroma_server.url)
    report = assistant.ingest()
    assert len(report.added) == 5 and not report.failed
    status = assistant.status()
    assert status["chroma"] == chroma_server.url and status["vectors"] == status["chunks"] == report.chunks
    again = assistant.ingest()
    assert again.chunks == 0 and len(again.unchanged) == 5
    (seed_corpus / "003_ea54bc5b20390dd3.txt").unlink()
    assert assistant.ingest().removed == ["003_ea54bc5b20390dd3.txt"]
    hits = assistant.retriever.search("Who turned down the asylum offer from Albania?", 3)
    assert hits and all(h.chunk.source != "003_ea54bc5b20390dd3.txt" for h in hits)
    assert assistant.status()["vectors"] == assistant.status()["chunks"]


@pytest.mark.server
@pytest.mark.model
def test_a_server_that_goes_away_is_a_clear_error_and_recovery_is_automatic(settings, seed_corpus, chroma_server):
    assistant = server_assistant(settings, chroma_server.url)
    assistant.ingest()
    chroma_server.stop()
    with pytest.raises(StoreUnavailableError, match=f"Chroma server at {chroma_server.url} is not reachable"):
        assistant.retriever.search("asylum offer", 3)
    chroma_server.start()  # same port, same data folder
    hits = assistant.retriever.search("asylum offer", 3)
    assert hits and hits[0].chunk.source.endswith(".txt")
    assert assistant.ingest().chunks == 0  # nothing was lost: the index is complete


@pytest.mark.server
@pytest.mark.timeout(120)
def test_a_server_that_hangs_is_a_clear_error_within_the_store_timeout_not_a_hang(tmp_path, chroma_server):
    """Before: chromadb's HTTP client has no timeout, and store_timeout was ignored: a stopped server (SIGSTOP,
    like a frozen VM or a network that drops packets) hung every question and ingest for ever."""
    import signal

    from tests.conftest import fake_settings
    from tests.fakes import HashEmbedder

    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    settings = fake_settings(tmp_path, corpus=corpus, chroma_url=chroma_server.url, store_timeout=2)
    assistant = Assistant(settings, embedder=HashEmbedder())
    assistant.ingest()
    chroma_server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailableError, match=r"not reachable \(ReadTimeout"):
            assistant.retriever.search("asylum offer", 3)
    finally:
        chroma_server.proc.send_signal(signal.SIGCONT)
    assert assistant.retriever.search("asylum offer", 3)  # carries on once the server answers again


def test_an_unreachable_server_is_one_clear_line_on_the_cli(settings, seed_corpus):
    from tests.conftest import run_qa

    url = f"http://127.0.0.1:{free_port()}"
    result = run_qa(
        "ingest",
        str(seed_corpus),
        "--vectorstore",
        str(settings.vectorstore),
        "--chroma-url",
        url,
        "--store-timeout",
        "3",
    )
    assert result.returncode == 2 and f"Chroma server at {url} is not reachable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.model
def test_the_seed_answer_works_against_the_server(settings, seed_corpus, chroma_server):
    pytest.importorskip("llama_cpp")
    assistant = server_assistant(settings, chroma_server.url)
    assistant.ingest()
    answer = assistant.ask("Who is the U.N. envoy in Iraq?")
    assert not answer.abstained and "Kobler" in answer.text and answer.citations
    assert {c.source for c in answer.citations} <= {p.name for p in SEEDS.iterdir()}
