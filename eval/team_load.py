"""Team load (issue 17): several users asking at once on the "Deploy for a team" path of the README, next to one
user at a time on the same path.

    .venv/bin/python eval/team_load.py [--users 1 8] [--questions 16] [--out eval/results/team_load.json]

What it runs (each started here unless its URL is given, and stopped at the end):
  - one Chroma server (`chroma run` on 127.0.0.1), holding the seeds' index (ingested once, through qa);
  - the model behind an OpenAI-compatible server: llama-cpp-python's own (`python -m llama_cpp.server`) with the
    GGUF qa uses locally, loaded with the same CPU parameters as qa's local generator (qa.generators.native) and
    with --interrupt_requests False (see below);
  - for each user count U: U threads, each with an Assistant of its own (QA_LLM=openai at that server,
    QA_CHROMA_URL at that Chroma, and its own QA_VECTORSTORE folder, filled from the server, as U `qa ui`
    processes on U hosts would have; --shared-folder gives them the ingesting one instead); together they ask
    the same Q seed questions (eval/questions.jsonl, the first Q), each thread its share, one after another.
Reported per U: answers per minute (Q over the wall time from the first question to the last answer), answer
latency p50/p95 (seconds from asking to the checked answer, each user's own wait included), declines, errors.

llama-cpp-python's server (0.3.36) has no parallel slots: one global lock lets one request at a time use the
model; the others wait in its queue. Its default --interrupt_requests True also ends a *streaming* reply early
(sends [DONE]) as soon as another request is waiting, and qa always streams, so with two users at once answers
would be cut short; this script starts it with --interrupt_requests False, and so must a deployment.

Nothing here asserts a number (it is a measurement, not a test); the figures go to --out and the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Run as `python -c LAUNCH MODEL_ARGS...`: llama-cpp-python's server, its model loaded as qa loads it locally.
LAUNCH = """
import sys
from qa.generators import native
from llama_cpp.server.__main__ import main
plan = native.current_plan()
with native.model_params(plan.use_extra_bufts):
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"error: {what} exited (code {proc.returncode}) before serving") from None
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"error: {what} did not start within {timeout:g}s")


@contextlib.contextmanager
def chroma_server(path: Path):
    port = free_port()
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    log = open(path.parent / "chroma.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, 60, "chroma run")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@contextlib.contextmanager
def llama_server(settings, alias: str, work: Path):
    from qa.generators.llama_cpp import resolve_gguf

    gguf = resolve_gguf(settings.llm_model, settings.cache_dir)
    port = free_port()
    args = ["--model", str(gguf), "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--n_ctx", str(settings.llm_ctx), "--n_threads", str(settings.threads), "--n_batch", "512"]
    args += ["--interrupt_requests", "False", "--verbose", "False"]
    log = open(work / "llama_server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/v1/models", proc, 180, "llama_cpp.server")
        yield f"http://127.0.0.1:{port}/v1", " ".join(args[2:])
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run_users(assistants: list, questions: list[str]) -> dict:
    """One thread per Assistant (a user), asking `questions` between them (round robin), all at once."""
    users = len(assistants)
    for a in assistants:  # open each store and load each embedder before the clock starts
        a.retriever.search("warm up", 1)
    shares = [questions[i::users] for i in range(users)]
    rows: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(users + 1)

    def user(i: int) -> None:
        start.wait()
        for q in shares[i]:
            t0 = time.perf_counter()
            row = {"user": i, "question": q}
            try:
                answer = assistants[i].ask(q)
                row |= {"abstained": answer.abstained, "declined_by": answer.declined_by, "chars": len(answer.text)}
            except Exception as exc:  # an error is a figure here (counted), not a crash of the measurement
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            row["end"] = time.perf_counter()
            row["seconds"] = round(row["end"] - t0, 2)
            with lock:
                rows.append(row)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    start.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    wall = max(r["end"] for r in rows) - t_start
    for a in assistants:
        a.store.close()
    lat = [r["seconds"] for r in rows if "error" not in r]
    for r in rows:
        r["end"] = round(r["end"] - t_start, 2)
    return {
        "users": users,
        "questions": len(questions),
        "wall_s": round(wall, 1),
        "answers_per_min": round(60 * len(lat) / wall, 2),
        "latency_p50_s": round(statistics.median(lat), 1) if lat else None,
        "latency_p95_s": round(p95(lat), 1) if lat else None,
        "declined": sum(bool(r.get("abstained")) for r in rows),
        "errors": sum("error" in r for r in rows),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from qa.config import load_settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[1, 8], help="user counts to measure, in order")
    p.add_argument("--questions", type=int, default=16, help="seed questions asked at each user count")
    p.add_argument("--llm-url", default="", help="an OpenAI-compatible server already running (else started)")
    p.add_argument("--llm-model", default="", help="its model name (default: qa's llm_model)")
    p.add_argument("--chroma-url", default="", help="a Chroma server already running (else `chroma run` here)")
    p.add_argument("--corpus", type=Path, default=ROOT / "seeds")
    p.add_argument("--shared-folder", action="store_true", help="every user on the ingesting QA_VECTORSTORE")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "team_load.json")
    args = p.parse_args(argv)

    from qa.api import Assistant

    base = load_settings()
    questions = [json.loads(line)["question"] for line in (ROOT / "eval" / "questions.jsonl").read_text().splitlines()]
    questions = questions[: args.questions]
    alias = args.llm_model or base.llm_model
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qa-team-")))
        work.mkdir(parents=True, exist_ok=True)
        chroma_url = args.chroma_url or stack.enter_context(chroma_server(work / "chroma"))
        print(f"chroma: {chroma_url}", file=sys.stderr, flush=True)
        settings = base.replace(vectorstore=work / "index", corpus=args.corpus, chroma_url=chroma_url, llm="openai")
        report = Assistant(settings).ingest()
        print(f"ingested {args.corpus}: {report.summary()}", file=sys.stderr, flush=True)
        server_args = "given"
        if args.llm_url:
            llm_url = args.llm_url
        else:
            llm_url, server_args = stack.enter_context(llama_server(base, alias, work))
        print(f"model server: {llm_url} ({server_args})", file=sys.stderr, flush=True)
        settings = settings.replace(llm_base_url=llm_url, llm_model=alias)
        result = {
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "model": alias,
            "model_server": "llama_cpp.server " + server_args if not args.llm_url else llm_url,
            "chroma": "chroma run (local)" if not args.chroma_url else chroma_url,
            "vectorstore": "one QA_VECTORSTORE folder shared by every user's Assistant"
            if args.shared_folder
            else "a QA_VECTORSTORE folder per user, filled from the Chroma server",
            "runs": [],
        }
        for users in args.users:
            print(f"# {users} user(s), {len(questions)} questions", file=sys.stderr, flush=True)
            folders = [settings.vectorstore if args.shared_folder else work / f"user-{users}-{i}" for i in range(users)]
            run = run_users([Assistant(settings.replace(vectorstore=f)) for f in folders], questions)
            print("  " + "  ".join(f"{k}={v}" for k, v in run.items() if k != "rows"), file=sys.stderr, flush=True)
            result["runs"].append(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for run in result["runs"]:
        print(
            f"{run['users']} user(s): {run['answers_per_min']} answers/min, latency p50 {run['latency_p50_s']} s, "
            f"p95 {run['latency_p95_s']} s, {run['declined']} declined, {run['errors']} errors "
            f"({run['questions']} questions in {run['wall_s']} s)"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
