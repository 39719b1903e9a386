"""The OpenAI-compatible path against a real llama.cpp server on 127.0.0.1 (started and stopped here),
and the failures a user of a remote endpoint meets: nothing listening, and an endpoint that never answers."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time

import pytest

from qa.api import Assistant
from qa.errors import GeneratorError
from tests.conftest import SEEDS, run_qa, start_llama_server
from tests.test_ui import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(settings_module):
    port = free_port()
    proc = start_llama_server("qwen2.5-coder-1.5b", "qwen-1.5b", port, settings_module.cache_dir)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def settings_module(tmp_path_factory):
    from qa.config import load_settings

    root = tmp_path_factory.mktemp("api")
    shutil.copytree(SEEDS, root / "corpus")
    return load_settings({"vectorstore": root / "index", "corpus": root / "corpus"}, env={})


def test_an_openai_compatible_server_answers_with_checked_citations(server, settings_module):
    assistant = Assistant(settings_module.replace(llm="openai", llm_base_url=server, llm_model="qwen-1.5b"))
    assistant.ingest()
    events = list(assistant.stream("How many members of the MEK did Albania offer to take in?"))
    answer = events[-1]
    assert sum(isinstance(e, str) for e in events) > 1, "the endpoint's answer streams in pieces"
    assert answer.model == f"openai:qwen-1.5b@{server}"
    assert not answer.abstained and "210" in answer.text
    assert answer.citations and all(c.quote in (SEEDS / c.source).read_text() for c in answer.citations)


def test_nothing_listening_is_a_clear_error(settings_module):
    port = free_port()  # bound and released: nothing listens there now
    assistant = Assistant(settings_module.replace(llm="openai", llm_base_url=f"http://127.0.0.1:{port}/v1"))
    assistant.ingest()
    with pytest.raises(GeneratorError, match=f"http://127.0.0.1:{port}/v1/chat/completions is unreachable"):
        assistant.ask("Who offered asylum to the MEK members?")


def test_an_endpoint_that_never_answers_times_out_as_configured(settings_module):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    assistant = Assistant(
        settings_module.replace(llm="openai", llm_base_url=f"http://127.0.0.1:{port}/v1", llm_timeout=2)
    )
    assistant.ingest()
    started = time.monotonic()
    with pytest.raises(GeneratorError, match="did not answer within 2s"):
        assistant.ask("Who offered asylum to the MEK members?")
    assert time.monotonic() - started < 15  # the 2 s budget, plus retrieval
    listener.close()


def test_cli_reports_an_unreachable_endpoint_in_one_line(settings_module):
    port = free_port()
    env = {"QA_VECTORSTORE": str(settings_module.vectorstore), "QA_CORPUS": str(settings_module.corpus)}
    run_qa("ingest", env=env)
    result = run_qa(
        "ask", "Who offered asylum?", "--llm", "openai", "--llm-base-url", f"http://127.0.0.1:{port}/v1", env=env
    )
    assert result.returncode == 2 and result.stderr.startswith("error: model endpoint")
    assert "Traceback" not in result.stderr


@pytest.mark.model
def test_at_a_terminal_qa_ask_shows_the_passages_before_the_model_answers(settings_module):
    """The sources come first (issue 15): on a terminal they are listed before the model is even reached, here an
    endpoint that is down; piped, stderr stays the one error line (the test above)."""
    import os
    import pty
    import subprocess
    import sys

    env = {**os.environ, "QA_VECTORSTORE": str(settings_module.vectorstore), "QA_CORPUS": str(settings_module.corpus)}
    run_qa("ingest", env=env)
    leader, follower = pty.openpty()
    base = f"http://127.0.0.1:{free_port()}/v1"
    args = ["ask", "Who offered asylum?", "--llm", "openai", "--llm-base-url", base]
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", *args], stdout=subprocess.PIPE, stderr=follower, env=env, timeout=300
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    text = shown.decode()
    assert proc.returncode == 2
    # however many passages the context stage chose, they are listed before the model is reached
    reading = re.search(r"Reading \d+ passages?", text)
    assert reading and reading.start() < text.index("error: model endpoint"), text
    assert ".txt line" in text
