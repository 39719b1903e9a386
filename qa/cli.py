"""`qa` on the command line: a thin edge over qa.api. Errors become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import fields
from pathlib import Path

from qa import bench
from qa.config import Settings, load_settings
from qa.errors import QAError
from qa.retrieve import MODES
from qa.text import short_location

_HELP = {
    "corpus": "folder of documents (default seeds)",
    "vectorstore": "index folder (env QA_VECTORSTORE, default vectorstore)",
    "chroma_url": "use a Chroma server, e.g. http://127.0.0.1:8000 (env QA_CHROMA_URL)",
    "llm": "generator: local (llama.cpp GGUF) or openai (any OpenAI-compatible endpoint) (env QA_LLM)",
    "llm_model": "builtin name, .gguf path, or API model name (env QA_LLM_MODEL)",
    "llm_base_url": "OpenAI-compatible base URL (env QA_LLM_BASE_URL)",
    "llm_api_key": "API key (env QA_LLM_API_KEY)",
    "embed_model": "sentence-transformers model name or folder (env QA_EMBED_MODEL)",
    "embed_backend": "torch, onnx or onnx-int8 (env QA_EMBED_BACKEND)",
}


def _settings_parent() -> argparse.ArgumentParser:
    """One flag per setting, generated from Settings so the two can never drift apart."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings (each also QA_<NAME> in the environment)")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        group.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=_HELP.get(f.name, f"(env QA_{f.name.upper()})"),
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parent = _settings_parent()
    parser = argparse.ArgumentParser(prog="qa", description="Answers from your documents, with checked citations.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[parent], help="index a folder (incremental)")
    p.add_argument("path", nargs="?", help="corpus folder (default: the corpus setting)")
    p.add_argument("--rebuild", action="store_true", help="drop the index and embed everything again")
    p.add_argument("--json", action="store_true", help="print the report as JSON (with --watch: one line per ingest)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep running: ingest again whenever files in the folder are added, changed or removed (Ctrl-C stops)",
    )

    p = sub.add_parser("status", parents=[parent], help="what is indexed")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("ask", parents=[parent], help="answer one question")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="print the answer object as JSON (schema in README)")
    p.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="FILE",
        help="only use this file (relative to the corpus root); repeatable",
    )

    p = sub.add_parser("chat", parents=[parent], help="a conversation in the terminal")
    p.add_argument("--source", action="append", dest="sources", metavar="FILE")

    p = sub.add_parser("eval", parents=[parent], help="measure answers on known-answer questions")
    p.add_argument("--questions", type=Path, default=Path("eval/questions.jsonl"), help="JSON Lines question file")
    p.add_argument("--json", type=Path, dest="json_out", metavar="OUT", help="write summary and items here")
    p.add_argument("--chart", type=Path, help="write a PNG chart of the summary (default: next to --json)")
    p.add_argument("--ids", nargs="+", help="only these question ids")
    p.add_argument(
        "--rescore",
        type=Path,
        metavar="RESULT",
        help="recompute the summary of a saved --json result (qa eval or eval-clapnq) without asking the model",
    )
    p.add_argument(
        "--floor",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="fail (exit 1) when METRIC is below VALUE (above, for false_declines and latencies)",
    )

    p = sub.add_parser("eval-beir", parents=[parent], help="retrieval benchmark on a BEIR folder (e.g. SciFact)")
    p.add_argument("folder", type=Path, help="BEIR folder with corpus.jsonl.gz, queries.jsonl, qrels/test.tsv")
    p.add_argument("--max-docs", type=int, help="keep the relevant documents plus a seeded sample up to this many")
    p.add_argument("--max-queries", type=int, help="only the first N test queries")
    p.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        help="retrieval modes to score (default: bm25 dense hybrid, and hybrid+rerank when rerank_model is set)",
    )
    p.add_argument("--json", type=Path, dest="json_out", metavar="OUT")
    p.add_argument(
        "--floor",
        action="append",
        default=[],
        metavar="MODE=NDCG",
        help="fail (exit 1) when MODE's nDCG@10 is below NDCG",
    )

    p = sub.add_parser("eval-clapnq", parents=[parent], help="answer/decline benchmark on ClapNQ dev")
    p.add_argument("folder", type=Path, help="folder with clapnq_dev_answerable.jsonl and _unanswerable.jsonl")
    p.add_argument("--per-half", type=int, help="seeded sample of N answerable + N unanswerable (default: all)")
    p.add_argument("--json", type=Path, dest="json_out", metavar="OUT")
    p.add_argument("--floor", action="append", default=[], metavar="METRIC=VALUE", help="as for `qa eval`")

    p = sub.add_parser("bench", parents=[parent], help="speed/memory benchmark vs the LangChain recipe")
    bench.add_arguments(p)

    p = sub.add_parser("doctor", parents=[parent], help="can this machine run qa? (each check ok, warn or fail)")
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    p.add_argument("--no-probe", action="store_true", help="skip the one-token test of the local model")

    p = sub.add_parser("ui", parents=[parent], help="start the web chat")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow --host beyond this machine, or --share, without a login (QA_UI_USER + QA_UI_PASSWORD)",
    )

    return parser


def _progress_bar():
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, source: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, leave=False)
        bar.total = total
        bar.set_postfix_str(source[-60:], refresh=False)
        bar.update(done - bar.n)  # a note within a file (OCR page 3 of 12) changes only the text
        if done == total:
            bar.close()
            bar = None  # the next ingest (qa ingest --watch) gets a bar of its own

    return update


def _print_report(report, as_json: bool, indent: int | None = 2) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=indent), flush=True)
        return
    for source in report.repaired:
        print(f"repaired: {source} (left half-indexed by an interrupted run)", file=sys.stderr)
    for source, reason in report.failed:
        print(f"skipped: {source}: {reason}", file=sys.stderr)
    print(report.summary(), flush=True)


def cmd_ingest(args, assistant) -> int:
    if args.watch:
        return _watch(args, assistant)
    report = assistant.ingest(args.path, rebuild=args.rebuild, progress=None if args.json else _progress_bar())
    _print_report(report, args.json)
    return 0


def _watch(args, assistant) -> int:
    """`qa ingest --watch`: a summary line (or a JSON line) per ingest until Ctrl-C, which ends as "interrupted"
    with exit code 130 in main(). An ingest that fails (index busy, no file left) prints its error and waits on."""
    import threading

    if args.rebuild:
        _print_report(assistant.ingest(rebuild=True, progress=_progress_bar()), args.json, None)
    print(f"watching {assistant.settings.corpus} for changes (Ctrl-C to stop)", file=sys.stderr, flush=True)

    def on_error(exc) -> None:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)

    assistant.watch(
        threading.Event(),
        lambda report: _print_report(report, args.json, None),
        on_error,
        progress=None if args.json else _progress_bar(),
    )
    return 0


def cmd_status(args, assistant) -> int:
    stats = assistant.status()
    docs = assistant.documents()
    if args.json:
        print(json.dumps({**stats, "documents": docs}, indent=2))
        return 1 if stats.get("problem") else 0
    for key, value in stats.items():
        if key == "types":
            value = ", ".join(f"{n} {name}" for name, n in value.items()) or "none"
        if key != "problem":
            print(f"{key:12} {value}")
    for d in docs:
        print(f"  {d['source']}  ({d['chunks']} chunks)")
    if stats.get("problem"):
        print(f"warning: {stats['problem']}", file=sys.stderr)
        return 1
    return 0


def print_answer(answer, out=sys.stdout) -> None:
    print(answer.text, file=out)
    if answer.citations:
        print("\nSources:", file=out)
        for c in answer.citations:
            where = short_location(c.source, c.start_line, c.end_line, c.page)
            print(f"  [{c.n}] {where}: \u201c{c.quote}\u201d", file=out)
    elif answer.abstained and answer.retrieved:
        print("\nClosest passages:", file=out)
        for p in answer.retrieved[:3]:
            snippet = " ".join(p.chunk.text.split())[:160]
            print(f"  {p.chunk.location}: {snippet}", file=out)
    for sentence in answer.unsupported:
        print(f"  (removed, not supported by the documents: {sentence})", file=out)


def print_evidence(evidence) -> None:
    """The passages the model is about to read, on stderr, so stdout stays the answer. Only for a person at a
    terminal: a script reading stderr gets nothing but the one-line errors."""
    if not sys.stderr.isatty():
        return
    n = len(evidence.passages)
    print(f"Reading {n} passage{'s' * (n != 1)} ({evidence.seconds:.2f}s):", file=sys.stderr)
    for p in evidence.passages:
        print(f"  {p.chunk.location}", file=sys.stderr)


def cmd_ask(args, assistant) -> int:
    from qa.answer import Answer, Evidence

    answer = None
    for event in assistant.stream(args.question, sources=args.sources):
        if isinstance(event, Evidence) and not args.json:
            print_evidence(event)  # the sources first, seconds before the model has read them
        elif isinstance(event, Answer):
            answer = event
    assert answer is not None  # stream always ends with the Answer
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_answer(answer)
        print(f"\n({answer.timings.get('total', 0):.1f}s)", file=sys.stderr)
    return 0


def cmd_chat(args, assistant) -> int:
    from qa.answer import Answer, Evidence
    from qa.errors import QuestionError

    print(
        f"qa chat over {assistant.status()['corpus'] or assistant.settings.corpus} (empty line or Ctrl-D to quit)",
        file=sys.stderr,
    )
    history: list[tuple[str, str]] = []
    while True:
        try:
            question = input("\n> ")
        except EOFError:
            return 0
        if not question.strip():
            return 0
        try:
            draft = []
            for event in assistant.stream(question, history, args.sources):
                if isinstance(event, Answer):
                    answer = event
                elif isinstance(event, Evidence):
                    print_evidence(event)
                else:
                    draft.append(event)
                    print(event, end="", flush=True)
            print("\n", file=sys.stdout)
            # say so when checking changed more than punctuation (dropped sentences, moved citations)
            if re.sub(r"[\W_]", "", answer.text) != re.sub(r"[\W_]", "", "".join(draft)):
                print("Checked answer:", end=" ")
            print_answer(answer)
            history.append((question, answer.text))
        except QuestionError as exc:
            print(f"error: {exc}", file=sys.stderr)


def cmd_eval(args, assistant) -> int:
    from qa import evaluate

    floors = _floors(args.floor)
    if args.rescore:
        return _rescore(args, assistant.settings, floors)
    questions = evaluate.load_questions(args.questions)
    if args.ids:
        unknown = sorted(set(args.ids) - {q.id for q in questions})
        if unknown:
            raise evaluate.QuestionFileError(f"{args.questions}: no question with id {', '.join(unknown)}")
        questions = [q for q in questions if q.id in set(args.ids)]
    report = assistant.ingest()
    if report.failed:
        print(f"note: {len(report.failed)} corpus file(s) could not be indexed", file=sys.stderr)

    def progress(n, total, item):
        mark = "ok" if item["score"]["correct"] or (item["abstained"] and not item["expected"]["answerable"]) else "--"
        print(f"[{n}/{total}] {mark} {item['id']}: {item['answer'][:90]}", file=sys.stderr)

    result = evaluate.run_eval(assistant, questions, assistant.settings.corpus, progress)
    print(evaluate.format_table(result["summary"]))
    if args.json_out:
        _write_json(args.json_out, result)
    chart = args.chart or (args.json_out.with_suffix(".png") if args.json_out else None)
    if chart:
        evaluate.write_chart(result["summary"], chart)
    return _report_misses(evaluate.check_floors(result["summary"], floors))


def _rescore(args, settings, floors: dict[str, float]) -> int:
    """`qa eval --rescore RESULT`: the summary recomputed from the saved items (no index, no model)."""
    from qa import evaluate

    result, kept = evaluate.rescore(args.rescore, settings.corpus, settings.top_k)
    if kept:
        print(
            f"note: {kept} item(s) cite files not in {settings.corpus}: their stored quote checks are kept",
            file=sys.stderr,
        )
    print(evaluate.format_table(result["summary"]))
    if args.json_out:
        _write_json(args.json_out, result)
    if args.chart:
        evaluate.write_chart(result["summary"], args.chart)
    return _report_misses(evaluate.check_floors(result["summary"], floors))


def _floors(items: list[str]) -> dict[str, float]:
    floors = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            floors[name] = float(value)
        except ValueError:
            raise QAError(f"--floor {item}: expected METRIC=NUMBER") from None
    return floors


def _report_misses(misses: list[str]) -> int:
    for miss in misses:
        print(f"FAIL: {miss}", file=sys.stderr)
    return 1 if misses else 0


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))


# A benchmark ingests its own documents, so it gets an index of its own beside the one `qa ingest` built (and a
# collection of its own on a Chroma server): running `qa eval-clapnq` once replaced a user's index with ClapNQ.
BENCH_INDEX = {"eval-beir": "beir", "eval-clapnq": "clapnq"}


def _bench_settings(settings: Settings, name: str) -> Settings:
    index = Path(settings.vectorstore)
    own = index.parent / f"{index.name}-{name}"
    return settings.replace(vectorstore=own, collection=f"{settings.collection}_{name}")


def _bench_corpus(assistant) -> Path:
    """A benchmark's documents become files of a corpus folder next to its index, so the real ingest is measured."""
    index = Path(assistant.settings.vectorstore)
    return index.parent / f"{index.name}-corpus"


def cmd_eval_beir(args, assistant) -> int:
    from qa import evaluate

    floors = _floors(args.floor)
    result = evaluate.run_beir(
        assistant,
        args.folder,
        _bench_corpus(assistant),
        args.max_docs,
        args.max_queries,
        args.modes,
        ingest_progress=_progress_bar(),
        log=lambda line: print(line, file=sys.stderr),
    )
    for row in result["modes"]:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json_out:
        _write_json(args.json_out, result)
    return _report_misses(evaluate.beir_floor_misses(result["modes"], floors))


def cmd_eval_clapnq(args, assistant) -> int:
    from qa import evaluate

    floors = _floors(args.floor)

    def progress(n, total, item):
        print(f"[{n}/{total}] {'declined' if item['abstained'] else 'answered'} {item['id']}", file=sys.stderr)

    result = evaluate.run_clapnq(
        assistant,
        args.folder,
        _bench_corpus(assistant),
        args.per_half,
        ingest_progress=_progress_bar(),
        progress=progress,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(evaluate.format_table(result["summary"]))
    if args.json_out:
        _write_json(args.json_out, result)
    return _report_misses(evaluate.check_floors(result["summary"], floors))


def cmd_bench(args, assistant) -> int:
    return bench.run(args, assistant.settings)


def cmd_doctor(args, assistant) -> int:
    from qa import doctor

    checks = doctor.run(assistant.settings, probe=not args.no_probe)
    if args.json:
        print(json.dumps(doctor.to_dict(checks), indent=2))
    else:
        print(doctor.format_lines(checks))
    return 0 if doctor.to_dict(checks)["ok"] else 1


def cmd_ui(args, assistant) -> int:
    from qa.ui import launch

    launch(assistant, host=args.host, port=args.port, share=args.share, allow_remote=args.allow_remote)
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "status": cmd_status,
    "ask": cmd_ask,
    "chat": cmd_chat,
    "eval": cmd_eval,
    "eval-beir": cmd_eval_beir,
    "eval-clapnq": cmd_eval_clapnq,
    "ui": cmd_ui,
    "doctor": cmd_doctor,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from qa.api import Assistant

        overrides = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
        if getattr(args, "path", None) and args.command == "ingest":
            overrides["corpus"] = str(Path(args.path))
        settings = load_settings(overrides)
        if args.command in BENCH_INDEX:
            settings = _bench_settings(settings, BENCH_INDEX[args.command])
        assistant = Assistant(settings)
        code = COMMANDS[args.command](args, assistant)
        sys.stdout.flush()  # a reader that has gone away (`qa status | head -1`) shows here, not at exit
        return code
    except QAError as exc:
        # One line, always: a message that quotes a library's error may carry that error's line breaks.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, like any Unix tool. Python would flush stdout again at exit
        # and print "Exception ignored ... BrokenPipeError", so stdout is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
