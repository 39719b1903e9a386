"""The local model on machines that differ by CPU: the decision, the probe, and `qa doctor`.

The two CPU flag sets are the two machine kinds this project has run on: an AMD EPYC with AVX2 only, and an
Intel Xeon with AVX-512 and AMX, where a natively built llama.cpp died with SIGILL (../shared/FACTS.md).
"""

from __future__ import annotations

import json
import sys

import pytest

from qa.generators import native
from tests.conftest import run_qa

AMD_AVX2 = set(
    "fpu sse sse2 pni ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand bmi1 avx2 bmi2 "
    "sha_ni clzero xsaveopt".split()
)
INTEL_AMX = AMD_AVX2 | set(
    "avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx512vbmi avx_vnni "
    "amx_tile amx_int8 amx_bf16".split()
)

# llama.cpp's system info line for three builds of the same version
PORTABLE = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "  # noqa: E501
NATIVE_AVX512 = PORTABLE.replace("BMI2 = 1 |", "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 |")
NATIVE_AMX = NATIVE_AVX512.replace("AVX512_VNNI = 1 |", "AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 |")


@pytest.mark.parametrize("flags", [AMD_AVX2, INTEL_AMX], ids=["amd-avx2", "intel-amx"])
def test_the_portable_build_runs_on_both_machine_kinds_with_its_fast_repacked_weights(flags):
    cpu = native.plan(PORTABLE, flags)
    assert cpu.ok and cpu.missing == []
    assert cpu.use_extra_bufts and cpu.buffer_types == ["CPU_REPACK", "CPU"]


@pytest.mark.parametrize("build", [NATIVE_AVX512, NATIVE_AMX], ids=["avx512-build", "amx-build"])
def test_an_avx512_or_amx_build_on_the_amx_machine_keeps_the_weights_out_of_the_amx_buffer(build):
    cpu = native.plan(build, INTEL_AMX)
    assert cpu.ok
    assert cpu.use_extra_bufts is False and cpu.buffer_types == ["CPU"]


@pytest.mark.parametrize("build", [NATIVE_AVX512, NATIVE_AMX], ids=["avx512-build", "amx-build"])
def test_a_build_for_a_newer_cpu_is_refused_on_the_avx2_machine_with_the_fix(build):
    cpu = native.plan(build, AMD_AVX2)
    assert not cpu.ok and "AVX512" in cpu.missing
    assert "Illegal instruction" in cpu.problem() and "make install" in cpu.problem()


def test_cpu_flags_are_read_from_cpuinfo_and_an_unknown_cpu_refuses_nothing():
    assert native.cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 amx_int8\n") == {"fpu", "avx2", "amx_int8"}
    assert native.plan(NATIVE_AMX, set()).ok  # no /proc/cpuinfo (macOS): the probe still guards


def test_this_machine_runs_the_installed_build_which_uses_every_instruction_set_it_has_but_amx():
    cpu = native.current_plan()
    assert cpu.ok, cpu.problem()
    assert "AMX_INT8" not in cpu.built  # the Makefile's build leaves AMX out
    flags = native.cpu_flags()
    # built for what the CPU has (the Makefile reads /proc/cpuinfo): AVX-512 where there is AVX-512
    assert ("AVX512" in cpu.built) == ("avx512f" in flags and "avx512bw" in flags)
    assert "AVX2" in cpu.built or "avx2" not in flags


def test_a_probe_that_dies_of_an_illegal_instruction_is_one_line_with_the_fix():
    suicide = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
    problem = native.run_probe(suicide)
    assert "Illegal instruction" in problem and "make install" in problem
    assert native.run_probe([sys.executable, "-c", "print('ok')"]) is None
    assert "exit 3" in native.run_probe([sys.executable, "-c", "import sys; sys.exit(3)"])


def test_loading_the_model_on_a_cpu_the_build_cannot_run_is_a_clear_error_not_a_crash(settings, monkeypatch):
    from qa.errors import GeneratorError
    from qa.generators.llama_cpp import LlamaCppGenerator

    monkeypatch.setattr(native, "system_info", lambda: NATIVE_AVX512)
    monkeypatch.setattr(native, "cpu_flags", lambda cpuinfo=None: AMD_AVX2)
    with pytest.raises(GeneratorError, match="Illegal instruction"):
        LlamaCppGenerator(settings.replace(llm_model="qwen2.5-coder-0.5b"))


def test_model_params_switch_extra_buffer_types_off_for_one_load_only():
    import llama_cpp.llama_cpp as lib

    with native.model_params(use_extra_bufts=False):
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params().use_extra_bufts is True


@pytest.mark.slow
def test_the_probe_evaluates_a_token_of_the_real_model_and_remembers_it(settings, tmp_path):
    from qa.generators.llama_cpp import assemble

    gguf = assemble("qwen2.5-coder-0.5b", settings.cache_dir)
    native.probe(gguf, True, tmp_path, force=True)
    stamps = list((tmp_path / "probes").glob("*.json"))
    assert len(stamps) == 1 and json.loads(stamps[0].read_text())["ok"] is True


@pytest.mark.slow
def test_doctor_on_this_machine_says_ok_to_every_check(settings):
    index, cache = str(settings.vectorstore), str(settings.cache_dir)
    done = run_qa("doctor", "--json", "--vectorstore", index, "--cache-dir", cache)
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {c["name"] for c in report["checks"]} >= {"llama.cpp", "model", "model runs", "embeddings", "index"}
    assert all(c["status"] == "ok" for c in report["checks"]), report


def test_doctor_names_a_missing_model_file_and_an_unreachable_chroma_server_with_fixes(tmp_path):
    done = run_qa(
        "doctor",
        "--llm-model",
        str(tmp_path / "missing.gguf"),
        "--chroma-url",
        "http://127.0.0.1:9",
        "--store-timeout",
        "2",
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    fail_model = next(i for i, line in enumerate(lines) if line.startswith("fail") and "model" in line)
    assert "missing.gguf" in lines[fail_model] and lines[fail_model + 1].strip().startswith("fix:")
    fail_index = next(i for i, line in enumerate(lines) if line.startswith("fail") and "Chroma server" in line)
    assert "127.0.0.1:9" in lines[fail_index] and "chroma run" in lines[fail_index + 1]
