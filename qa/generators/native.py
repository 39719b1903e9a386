"""Can llama.cpp's native code run on this CPU? The decision, and a probe that finds out without dying.

llama-cpp-python compiles llama.cpp when it is installed. A build made with `-march=native` on one machine
uses instructions another machine lacks (AVX-512 on an AVX2-only AMD EPYC), and on an Intel Xeon with AMX it
puts the weights in llama.cpp's AMX buffer, whose first tile instruction kills the process with SIGILL in the
virtual machines we run on (../shared/FACTS.md). The Makefile therefore builds for the instruction sets the
CPU lists in /proc/cpuinfo, with AMX always off. This module covers the rest: a user's own build of
llama-cpp-python, or a venv carried to a machine of another CPU kind.

- `plan()` compares the features llama.cpp was built for (its system info) with the CPU's flags
  (/proc/cpuinfo): an instruction set the CPU lacks is a clear error before anything runs; an AMX build loads
  the model without extra buffer types (`use_extra_bufts = False`), which keeps it off the AMX path, and so
  does an AVX-512 build, for speed.
- `probe()` evaluates one token of the model in a child process once per (library, model, CPU), so the first
  question cannot die with "Illegal instruction": the child does, and the user gets one line saying why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.errors import GeneratorError

# llama.cpp's name for a feature it was built with -> the /proc/cpuinfo flag the CPU must list for it
BUILD_TO_CPU_FLAG = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}

REBUILD_HINT = (
    "rebuild llama-cpp-python for this machine: `rm -rf .venv && make install` "
    "(the Makefile builds it for this CPU's instruction sets, without AMX)"
)


@dataclass
class CpuPlan:
    """How llama.cpp will be run here, and whether it can be."""

    built: list[str]  # instruction sets llama.cpp was compiled for
    cpu: list[str]  # the relevant flags this CPU lists
    missing: list[str] = field(default_factory=list)  # built for, but the CPU lacks them: it cannot run
    use_extra_bufts: bool = True  # False keeps the weights out of the AMX buffer and off AVX2 repacking
    buffer_types: list[str] = field(default_factory=list)  # where the weights will live, best first

    @property
    def ok(self) -> bool:
        return not self.missing

    def problem(self) -> str:
        return (
            f"llama.cpp was built for {', '.join(self.missing)}, which this CPU lacks, so the local model "
            f"would die with 'Illegal instruction': {REBUILD_HINT}"
        )


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def built_features(system_info: str) -> set[str]:
    """The features in llama.cpp's system info line ("CPU : SSE3 = 1 | AVX2 = 1 | ... | REPACK = 1 |")."""
    found = set()
    for item in system_info.split("|"):
        name, _, value = item.rpartition(":")[2].partition("=")
        if value.strip() == "1":
            found.add(name.strip())
    return found


def plan(system_info: str, flags: set[str]) -> CpuPlan:
    """Decide how to run a llama.cpp build (its system info) on a CPU (its /proc/cpuinfo flags).

    Where /proc/cpuinfo is unreadable (flags empty) nothing is reported missing: the probe still guards.
    """
    built = built_features(system_info)
    isa = sorted(f for f in built if f in BUILD_TO_CPU_FLAG)
    missing = [f for f in isa if flags and BUILD_TO_CPU_FLAG[f] not in flags]
    # Extra buffer types are where llama.cpp puts weights for special kernels: AMX tiles, or AVX2 repacking.
    # - An AMX build moves the weights into the AMX buffer, and the first tile instruction traps (FACTS.md): off.
    # - With AVX-512 the plain kernels beat the repacked AVX2 ones at prompt evaluation, which is most of an
    #   answer's time: 149 against 95 tokens/s (generation 23 against 29), measured on an AMD EPYC with AVX-512
    #   (README, "Why llama.cpp is built this way"): off.
    # - An AVX2-only build: repacking makes generation 1.2x faster at equal prompt speed: on.
    use_extra = not ({"AMX_INT8", "AVX512"} & built)
    buffers = []
    if use_extra and "REPACK" in built:
        buffers.append("CPU_REPACK")
    buffers.append("CPU")
    relevant = sorted(BUILD_TO_CPU_FLAG[f] for f in BUILD_TO_CPU_FLAG if BUILD_TO_CPU_FLAG[f] in flags)
    return CpuPlan(built=isa, cpu=relevant, missing=missing, use_extra_bufts=use_extra, buffer_types=buffers)


def system_info() -> str:
    """llama.cpp's own report of what it was built with. Loading the library runs no model code."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def current_plan() -> CpuPlan:
    return plan(system_info(), cpu_flags())


_params_lock = threading.Lock()


@contextlib.contextmanager
def model_params(use_extra_bufts: bool, sequences: int = 1):
    """Make `Llama()` load its model with `use_extra_bufts` as given, and its context with room for `sequences`
    KV-cache sequences in one unified cache (the judge and the draft read one shared prefix in one batch).

    llama-cpp-python 0.3.36 exposes neither field, but builds its parameters from
    `llama_cpp.llama_model_default_params()` and `llama_context_default_params()` inside `Llama.__init__`; for
    the duration of one load those functions return parameters with the fields set.
    """
    import llama_cpp.llama_cpp as lib

    if use_extra_bufts and sequences == 1:
        yield
        return
    with _params_lock:
        model_defaults, context_defaults = lib.llama_model_default_params, lib.llama_context_default_params

        def model() -> Any:
            params = model_defaults()
            params.use_extra_bufts = use_extra_bufts
            return params

        def context() -> Any:
            params = context_defaults()
            if sequences > 1:
                params.n_seq_max = sequences
                params.kv_unified = True  # one cache: the sequences share the prefix's cells, not copies
            return params

        lib.llama_model_default_params, lib.llama_context_default_params = model, context
        try:
            yield
        finally:
            lib.llama_model_default_params, lib.llama_context_default_params = model_defaults, context_defaults


# ---- the probe ---------------------------------------------------------------------------------------------

# The child imports llama_cpp alone (not qa, whose imports take seconds) and loads the model as qa does.
_PROBE = """
import sys
import llama_cpp.llama_cpp as lib
from llama_cpp import Llama
original = lib.llama_model_default_params
def defaults():
    params = original()
    params.use_extra_bufts = sys.argv[2] == "1"
    return params
lib.llama_model_default_params = defaults
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, n_batch=8, flash_attn=sys.argv[3] == "1", verbose=False)
llm.eval(llm.tokenize(b"The answer is", add_bos=True))
print("ok")
"""


def probe_key(model_path: Path, use_extra_bufts: bool, flash_attn: bool = False) -> str:
    """What a probe result depends on: the native library file, the model file, the CPU and the load settings."""
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    libs = sorted(lib.glob("*.so*")) + sorted(lib.glob("*.dylib")) + sorted(lib.glob("*.dll"))
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in libs]
    st = model_path.stat()
    parts += [f"{model_path.resolve()}:{st.st_size}:{st.st_mtime_ns}", " ".join(sorted(cpu_flags()))]
    parts.append(f"extra_bufts={use_extra_bufts}")
    if flash_attn:  # another kernel; keys of probes made without it stay as they were
        parts.append("flash_attn=True")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def run_probe(command: list[str], timeout: float = 180) -> str | None:
    """Run a probe command; None when it printed "ok", else one line saying what went wrong."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the local model did not evaluate one token within {timeout:g}s"
    if done.returncode == 0 and done.stdout.strip().endswith("ok"):
        return None
    if done.returncode in (-signal.SIGILL, 128 + signal.SIGILL):
        return (
            "the local model's native code uses an instruction this CPU cannot run (the probe died with "
            f"SIGILL, 'Illegal instruction'): {REBUILD_HINT}"
        )
    if done.returncode < 0:
        return f"the local model's probe was killed by signal {signal.Signals(-done.returncode).name}"
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return f"the local model failed its one-token probe (exit {done.returncode}): {tail}"


def probe(
    model_path: Path, use_extra_bufts: bool, cache_dir: Path, force: bool = False, flash_attn: bool = False
) -> None:
    """Evaluate one token in a child process, once per library/model/CPU; raise GeneratorError if it dies.

    The answer is remembered in cache_dir/probes/, so only the first load on a machine pays for it (a few
    seconds: the model is memory-mapped, and the child reads one token).
    """
    stamp = Path(cache_dir) / "probes" / f"{probe_key(model_path, use_extra_bufts, flash_attn)}.json"
    if not force and stamp.is_file():
        result = json.loads(stamp.read_text())
        if result.get("ok"):
            return
    flags = ["1" if use_extra_bufts else "0", "1" if flash_attn else "0"]
    problem = run_probe([sys.executable, "-c", _PROBE, str(model_path), *flags])
    with contextlib.suppress(OSError):  # a read-only cache only means the probe runs again next time
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"ok": problem is None, "problem": problem, "pid": os.getpid()}))
    if problem:
        raise GeneratorError(problem)
