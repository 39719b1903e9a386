"""`qa doctor`: can this machine run qa with these settings, and if not, why and what to do.

Each check returns a line: ok, warn or fail, what was found, and for anything not ok the fix. Nothing here
writes to the index or loads the embedding model; the only heavy step is the one-token probe of the local
model in a child process (a few seconds), which proves its native code runs on this CPU.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qa.config import Settings
from qa.errors import QAError

GIB = 1 << 30


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


def check_llama_build() -> Check:
    try:
        from qa.generators import native

        cpu = native.current_plan()
    except ImportError:
        return Check("llama.cpp", "fail", "llama-cpp-python is not installed", "run `make install`")
    detail = (
        f"built for {' '.join(cpu.built) or 'no x86 extensions'}; this CPU has {' '.join(cpu.cpu) or 'unknown'}; "
        f"weights in {', '.join(cpu.buffer_types)}"
    )
    if not cpu.ok:
        return Check("llama.cpp", "fail", detail + f"; missing: {' '.join(cpu.missing)}", native.REBUILD_HINT)
    if "AMX_INT8" in cpu.built:
        return Check(
            "llama.cpp",
            "warn",
            detail + "; built with AMX: the model loads without extra buffer types, off the AMX path",
            native.REBUILD_HINT,
        )
    return Check("llama.cpp", "ok", detail)


def check_model(s: Settings) -> tuple[Check, Path | None]:
    """The local model file, assembled and SHA-256-checked; for an API model, the endpoint answering."""
    if s.llm == "openai":
        import httpx

        url = s.llm_base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {s.llm_api_key}"} if s.llm_api_key else {}
        try:
            r = httpx.get(url, headers=headers, timeout=min(s.llm_timeout, 5))
        except httpx.HTTPError as exc:
            return Check("model", "fail", f"{url} is unreachable ({type(exc).__name__})", _endpoint_fix(s)), None
        if r.status_code >= 400:
            return Check("model", "fail", f"{url} answered HTTP {r.status_code}", _endpoint_fix(s)), None
        return Check("model", "ok", f"endpoint {s.llm_base_url} answers, model '{s.llm_model}'"), None
    from qa.generators.llama_cpp import SHIPPED, file_sha256, resolve_gguf

    try:
        where = resolve_gguf(s.llm_model, s.cache_dir)  # joins a shipped model once, checking its SHA-256
    except QAError as exc:
        return Check("model", "fail", str(exc), "name a builtin model, a .gguf file, or run `make install`"), None
    if isinstance(where, tuple):
        return Check("model", "warn", f"hub model {where[0]} is downloaded on first use", "needs the hub"), None
    size = where.stat().st_size
    if s.llm_model in SHIPPED:
        digest = file_sha256(where)
        if digest != SHIPPED[s.llm_model].sha256:
            fix = f"delete {where} (qa joins it again from its packages) or reinstall the model packages"
            return Check("model", "fail", f"{where} has SHA-256 {digest[:12]}…, expected another", fix), None
        return Check("model", "ok", f"{where} ({size / GIB:.2f} GiB), SHA-256 verified"), where
    with open(where, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        return Check("model", "fail", f"{where} is not a GGUF file", "name a .gguf model file"), None
    return Check("model", "ok", f"{where} ({size / GIB:.2f} GiB), a GGUF file (no known checksum)"), where


def _endpoint_fix(s: Settings) -> str:
    return f"start the model server at {s.llm_base_url}, or set QA_LLM_BASE_URL / --llm-base-url"


def check_probe(s: Settings, model: Path) -> Check:
    from qa.errors import GeneratorError
    from qa.generators import native

    cpu = native.current_plan()
    try:
        native.probe(model, cpu.use_extra_bufts, s.cache_dir, force=True, flash_attn=s.llm_flash_attn)
    except GeneratorError as exc:
        return Check("model runs", "fail", str(exc), native.REBUILD_HINT)
    return Check("model runs", "ok", "one token evaluated in a child process")


def check_embeddings(s: Settings) -> Check:
    from qa.embeddings import BACKENDS, onnx_export_folder, resolve_model_path

    if s.embed_backend not in BACKENDS:
        return Check("embeddings", "fail", f"unknown backend '{s.embed_backend}'", f"use one of {', '.join(BACKENDS)}")
    path = resolve_model_path(s.embed_model)
    where = f"model {path}" if Path(path).is_dir() else f"hub model '{path}' (needs the hub unless cached)"
    if s.embed_backend == "torch":
        return Check("embeddings", "ok" if Path(path).is_dir() else "warn", f"torch, {where}")
    folder = onnx_export_folder(path, s.embed_backend, Path(s.cache_dir))
    export = f"ONNX export in {folder}" if folder.is_dir() else f"exported on first ingest into {folder}"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return Check("embeddings", "fail", f"{s.embed_backend} needs onnxruntime", "run `make install`")
    return Check("embeddings", "ok" if Path(path).is_dir() else "warn", f"{s.embed_backend}, {where}; {export}")


def check_index(s: Settings) -> Check:
    if s.chroma_url:
        import httpx

        url = s.chroma_url.rstrip("/") + "/api/v2/heartbeat"
        try:
            r = httpx.get(url if "://" in url else f"http://{url}", timeout=min(s.store_timeout, 5))
            r.raise_for_status()
        except httpx.HTTPError as exc:
            fix = "start it (`chroma run --path DIR --host 127.0.0.1 --port N`) or unset QA_CHROMA_URL"
            return Check("index", "fail", f"Chroma server {s.chroma_url} is unreachable ({type(exc).__name__})", fix)
        return Check("index", "ok", f"Chroma server {s.chroma_url} answers")
    folder = Path(s.vectorstore)
    if folder.exists() and not folder.is_dir():
        return Check("index", "fail", f"{folder} is a file, not a folder", "set QA_VECTORSTORE to a folder")
    probe = folder if folder.is_dir() else next((p for p in folder.absolute().parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return Check("index", "warn", f"{probe} is not writable: questions work, `qa ingest` will not", "")
    state = "exists" if (folder / "qa.sqlite3").exists() else "will be created by `qa ingest`"
    return Check("index", "ok", f"embedded index at {folder} ({state}), writable")


def check_chromium() -> Check:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return Check("chromium", "ok", f"{found} (for the UI tests)")
    return Check("chromium", "warn", "not installed; only the UI tests need it", "apt-get install chromium")


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_resources(s: Settings, model: Path | None) -> list[Check]:
    model_bytes = model.stat().st_size if model else 0
    cache = Path(s.cache_dir)
    where = next((p for p in [cache, *cache.absolute().parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free
    need_disk = 1 * GIB  # an ingest's index and the ONNX export; the model is already on disk
    disk = Check("disk", "ok", f"{free / GIB:.1f} GiB free at {where}")
    if free < need_disk:
        detail = f"{free / GIB:.1f} GiB free at {where}, under {need_disk / GIB:.0f} GiB"
        disk = Check("disk", "fail", detail, "free some disk space")
    # The model is memory-mapped; its context, the embedding model and Python need about 1.5 GiB beside it.
    need_mem = model_bytes + int(1.5 * GIB)
    avail = _mem_available()
    if avail is None:
        mem = Check("memory", "warn", "cannot read /proc/meminfo", "")
    elif avail < need_mem:
        mem = Check(
            "memory",
            "fail",
            f"{avail / GIB:.1f} GiB available, the model needs about {need_mem / GIB:.1f} GiB",
            "close other programs, or use a smaller model (--llm-model qwen2.5-coder-0.5b)",
        )
    else:
        mem = Check("memory", "ok", f"{avail / GIB:.1f} GiB available, about {need_mem / GIB:.1f} GiB needed")
    return [disk, mem]


def check_decline(s: Settings) -> Check:
    """Whose numbers decide declines after the judge (qa.decide): a fit for this model, the user's
    judge_threshold, or the uncalibrated default."""
    from qa.decide import settings_decision

    try:
        decision = settings_decision(s)
    except QAError as exc:
        return Check("decline", "fail", str(exc), "fix or delete that file (eval/fit_decline.py writes it again)")
    if decision.calibrated:
        return Check("decline", "ok", decision.describe())
    return Check(
        "decline",
        "warn",
        f"uncalibrated: {decision.source} (the judge alone at P(yes) {decision.threshold:g}), so declines may be "
        "too many or too few",
        f"calibrate this model: python eval/fit_decline.py --llm-model {s.llm_model} (about 5 minutes), "
        "or set judge_threshold",
    )


def run(s: Settings, probe: bool = True) -> list[Check]:
    """Every check, in the order a user would fix them."""
    checks: list[Check] = []
    model: Path | None = None
    guarded: list[Callable[[], Check]] = []
    if s.llm == "local":
        checks.append(check_llama_build())
    model_check, model = check_model(s)
    checks.append(model_check)
    if s.llm == "local" and model is not None and checks[0].status != "fail" and probe:
        guarded.append(lambda: check_probe(s, model))
    guarded += [lambda: check_embeddings(s), lambda: check_index(s), check_chromium]
    if s.llm == "local":  # an API model has no judge, so nothing to calibrate
        guarded.append(lambda: check_decline(s))
    for make in guarded:
        try:
            checks.append(make())
        except Exception as exc:  # a check must report, never crash the doctor
            checks.append(Check(getattr(make, "__name__", "check"), "fail", f"{type(exc).__name__}: {exc}"))
    checks += check_resources(s, model)
    return checks


def to_dict(checks: list[Check]) -> dict:
    return {"ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks]}


def format_lines(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:4}  {c.name:{width}}  {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
    return "\n".join(lines)
