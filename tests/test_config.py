"""Settings: one place, a documented precedence, and a one-line error for any bad value."""

from __future__ import annotations

import dataclasses
import re

import pytest

from qa.config import Settings, load_settings
from qa.errors import ConfigError
from tests.conftest import ROOT, run_qa


def test_defaults_then_config_file_then_environment_then_flags(tmp_path):
    toml = tmp_path / "my.toml"
    toml.write_text('top_k = 5\ncandidates = 40\nllm = "openai"\n')
    env = {"QA_CONFIG": str(toml), "QA_CANDIDATES": "50", "QA_LLM_TIMEOUT": "7"}

    s = load_settings({"llm_timeout": 9, "chunk_size": None}, env=env)
    assert s.top_k == 5 and s.llm == "openai"  # from the file
    assert s.candidates == 50  # the environment beats the file
    assert s.llm_timeout == 9.0  # a flag beats the environment
    assert s.chunk_size == Settings().chunk_size  # a flag that was not given changes nothing


@pytest.mark.parametrize(
    "env, message",
    [
        ({"QA_TOP_K": "0"}, "setting 'top_k': must be at least 1, got 0"),
        ({"QA_TOP_K": "four"}, "setting 'top_k': expected int, got 'four'"),
        ({"QA_CHUNK_OVERLAP": "700"}, "'chunk_overlap' (700) must be smaller than 'chunk_size' (600)"),
        ({"QA_JUDGE_THRESHOLD": "2"}, "setting 'judge_threshold': must be between 0 and 1, got 2"),
        ({"QA_LLM_TIMEOUT": "0"}, "setting 'llm_timeout': must be more than 0, got 0"),
        ({"QA_EMBED_BATCH": "-3"}, "setting 'embed_batch': must be at least 1, got -3"),
        # choices are checked at start-up, not when the model is first needed
        ({"QA_LLM": "ollama"}, "setting 'llm': must be one of local, openai, got 'ollama'"),
        ({"QA_EMBED_BACKEND": "int4"}, "setting 'embed_backend': must be one of torch, onnx, onnx-int8, got 'int4'"),
        ({"QA_CONFIG": "nowhere.toml"}, "QA_CONFIG names nowhere.toml, which is not a file"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, env, message):
    """Before these checks, top_k 0 printed an empty answer and chunk_overlap 700 a LangChain traceback."""
    result = run_qa("status", "--vectorstore", str(tmp_path / "index"), env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "index").exists(), "nothing may be created from a bad configuration"


def test_a_config_file_with_an_unknown_or_broken_entry_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # qa.toml is looked up in the working directory
    (tmp_path / "qa.toml").write_text("top_k = 3\ntopk = 4\n")
    with pytest.raises(ConfigError, match=r"config file qa.toml: unknown setting 'topk'"):
        load_settings(env={})
    (tmp_path / "qa.toml").write_text("top_k = \n")
    with pytest.raises(ConfigError, match=r"config file qa.toml: "):
        load_settings(env={})


def test_the_readme_documents_every_setting_with_its_variable_and_flag():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| setting | env / flag |") :]
    table = table[: table.index("\n\n")]
    for f in dataclasses.fields(Settings):
        row = next((line for line in table.splitlines() if re.search(rf"\b{f.name}\b", line.split("|")[1])), None)
        assert row, f"README configuration table has no row for '{f.name}'"
        assert f"`QA_{f.name.upper()}`" in row and f"`--{f.name.replace('_', '-')}`" in row, row


@pytest.mark.parametrize(
    "toml, message",
    [
        ("top_k = 3.9", "setting 'top_k': expected int, got 3.9 (a whole number)"),
        ("top_k = true", "setting 'top_k': expected int, got True"),
        ("min_relevance = nan", "setting 'min_relevance': expected float, got nan (a finite number)"),
        ("store_timeout = inf", "setting 'store_timeout': expected float, got inf (a finite number)"),
        ('corpus = ["a"]', "setting 'corpus': expected Path, got ['a']"),
        ('corpus = ""', "setting 'corpus': expected Path, got '' (a folder or file path, as a string)"),
        ("llm = 5", "setting 'llm': expected str, got 5 (text, in quotes in a config file)"),
        ("collection = { name = 'x' }", "setting 'collection': expected str, got {'name': 'x'}"),
    ],
)
def test_a_config_value_of_the_wrong_kind_is_refused_not_coerced(tmp_path, toml, message):
    """Before: 3.9 became 3, true became 1, a list became a folder named "['a']", and nan turned the gate off."""
    (tmp_path / "qa.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"QA_CONFIG": str(tmp_path / "qa.toml")})
    assert str(caught.value) == f"{message} (from config file {tmp_path / 'qa.toml'})"


@pytest.mark.parametrize(
    "env, flags, message",
    [
        ({"QA_MIN_RELEVANCE": "nan"}, {}, "setting 'min_relevance': expected float, got 'nan' (a finite number)"),
        ({"QA_JUDGE_THRESHOLD": "-inf"}, {}, "setting 'judge_threshold': expected float, got '-inf' (a finite number)"),
        ({}, {"top_k": "3.9"}, "setting 'top_k': expected int, got '3.9' (from --top-k)"),
        ({}, {"min_relevance": float("nan")}, "setting 'min_relevance': expected float, got nan (a finite number)"),
    ],
)
def test_environment_and_flags_are_as_strict_as_the_config_file(env, flags, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(flags, env=env)
    with pytest.raises(ConfigError, match="setting 'min_relevance': must be between -1 and 1, got nan"):
        Settings(min_relevance=float("nan"))  # the Python API (Assistant(min_relevance=...)) too


def test_a_bad_config_value_is_one_line_on_the_cli(tmp_path):
    (tmp_path / "qa.toml").write_text("top_k = 3.9\n")
    result = run_qa("status", "--vectorstore", str(tmp_path / "index"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = "error: setting 'top_k': expected int, got 3.9 (a whole number) (from config file qa.toml)\n"
    assert result.stderr == expected
