"""`qa bench` end to end at toy size: it proves the harness measures both pipelines and writes its report.

Nothing here asserts a wall-clock figure (those live in eval/results/bench/ and the README); the assertions are
about what the harness reports and what our ingest did, which do not depend on the machine's speed.
"""

from __future__ import annotations

import json
import sys

import pytest

from qa import bench
from qa.errors import QAError
from tests.conftest import ROOT, run_qa

SCIFACT = ROOT.parent / "shared" / "bench" / "scifact"


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/bench/scifact beside the checkout")
def test_a_tiny_benchmark_compares_with_the_langchain_recipe(tmp_path):
    out = tmp_path / "bench"
    result = run_qa(
        "bench",
        "--only", "ingest", "scale",
        "--docs", "40", "--queries", "8", "--runs", "2",
        "--sizes", "150", "400", "--unique-cap", "200",
        "--out", str(out), "--work", str(tmp_path / "work"),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    fresh = [r for r in data["ingest"]["rows"] if "kind" not in r]
    assert {r["system"] for r in fresh} == {"baseline (LangChain recipe)", "qa (onnx-int8)"}
    ours = {r["corpus"]: r for r in fresh if r["system"] == "qa (onnx-int8)"}
    assert set(ours) == {"seeds", "scifact-40"} and all(r["speedup_vs_baseline"] > 0 for r in ours.values())
    assert all(len(r["runs"]) == 2 and r["chunks"] > 0 for r in fresh)
    # The summary quotes both pipelines' medians and their ratio, per corpus.
    summary = {r["corpus"]: r for r in data["ingest"]["summary"]}
    base = {r["corpus"]: r["mb_per_s"] for r in fresh if r["system"].startswith("baseline")}
    for corpus, r in summary.items():
        assert r["median_of"] == 2 and r["baseline_mb_per_s"] == base[corpus]
        assert r["ratio"] == round(ours[corpus]["mb_per_s"] / base[corpus], 2) == ours[corpus]["speedup_vs_baseline"]
    assert set(summary) == {"seeds", "scifact-40"} and "ratio=" in result.stdout
    again = {(r["corpus"], r["kind"]): r for r in data["ingest"]["rows"] if "kind" in r}
    # Changing one file re-embeds only that file's changed chunk, not the corpus.
    assert again[("scifact-40", "re-ingest, one file changed")]["chunks_embedded"] <= 2
    quality = {(r["system"], r["mode"]): r["ndcg@10"] for r in data["ingest"]["quality"]}
    assert set(quality) == {
        ("baseline (LangChain recipe)", "dense"),
        ("qa (onnx-int8)", "dense"),
        ("qa (onnx-int8)", "hybrid"),
    }
    assert all(0 < v <= 1 for v in quality.values())
    scale = data["scale"]["rows"]
    assert [r["target_chunks"] for r in scale] == [150, 400]
    # Above --unique-cap the corpus repeats: those chunks come from the index, not the model.
    assert scale[0]["reused"] == 0 and scale[1]["reused"] > 0 and scale[1]["chunks"] >= 400
    assert (out / "scaling.png").stat().st_size > 5000 and (out / "ingest.png").stat().st_size > 5000
    assert "## ingest" in result.stdout and "speedup_vs_baseline" in result.stdout


def test_a_missing_dev_extra_is_an_error_that_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_chroma", None)  # as if not installed
    with pytest.raises(QAError, match="qa bench needs langchain-chroma .*pip install langchain-chroma"):
        bench.dev_import("langchain_chroma")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(QAError, match=r"qa bench needs matplotlib: pip install matplotlib \(or pip install -e"):
        bench.check_extras(["scale", "memory"])
    bench.check_extras(["query", "memory"])  # these sections need no extra


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="qa bench checks for ../shared/bench/scifact beside the checkout")
def test_ingest_speed_is_reported_for_every_document_type(tmp_path):
    """`qa bench --only doctypes` makes files of every type with the same text, ingests each type alone and reports
    files/s, pages/s (PDF pages, slides, chapters, scanned pages through OCR), MB/s and chunks/s."""
    out = tmp_path / "bench"
    result = run_qa(
        "bench", "--only", "doctypes",
        "--type-files", "2", "--type-pages", "2", "--ocr-pages", "2", "--runs", "2",
        "--out", str(out), "--work", str(tmp_path / "work"),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["type"]: r for r in json.loads((out / "bench.json").read_text())["doctypes"]["rows"]}
    assert list(rows) == list(bench.DOCTYPES)
    assert all(len(r["runs"]) == 2 and r["files_per_s"] > 0 and "skipped" not in r for r in rows.values())
    assert rows["scanned pdf"]["files"] == 1 and rows["scanned pdf"]["pages"] == 2
    assert [rows[t]["pages"] for t in ("pdf", "pptx", "epub")] == [4, 4, 4] and rows["docx"]["pages"] is None
    # the same text in every type: each reader finds about as many chunks as the plain text has (OCR: half the
    # files, so about half)
    for kind, row in rows.items():
        expected = rows["txt"]["chunks"] / (2 if kind == "scanned pdf" else 1)
        assert 0.7 * expected <= row["chunks"] <= 1.3 * expected, (kind, row["chunks"], expected)
    assert "## doctypes" in result.stdout


@pytest.mark.slow
def test_a_bench_of_one_section_keeps_the_others_and_needs_no_scifact_for_doctypes(tmp_path):
    """`qa bench --only doctypes` runs without the SciFact benchmark, and the sections an earlier run wrote to
    bench.json stay there, each with the machine it was measured on."""
    out = tmp_path / "bench"
    out.mkdir()
    earlier = {
        "machine": {"cpu": "an earlier CPU", "cores": 2},
        "ingest": {"rows": [{"system": "qa (onnx-int8)", "corpus": "seeds", "mb_per_s": 0.04}], "summary": []},
    }
    (out / "bench.json").write_text(json.dumps(earlier))
    result = run_qa(
        "bench", "--only", "doctypes", "--types", "txt", "--type-files", "1", "--type-pages", "1", "--runs", "1",
        "--scifact", str(tmp_path / "no-scifact-here"), "--out", str(out), "--work", str(tmp_path / "work"),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    assert data["ingest"]["rows"] == earlier["ingest"]["rows"]
    assert data["ingest"]["machine"]["cpu"] == "an earlier CPU"
    assert [r["type"] for r in data["doctypes"]["rows"]] == ["txt"]
    assert data["doctypes"]["machine"] == data["machine"] and data["doctypes"]["measured_at"]
    assert "kept from the earlier run: ingest" in result.stdout
    # a section that needs SciFact still says so, naming the folder
    again = run_qa("bench", "--only", "query", "--scifact", str(tmp_path / "no-scifact-here"), "--out", str(out))
    assert again.returncode == 2 and "no-scifact-here" in again.stderr and "Traceback" not in again.stderr


def test_the_time_picture_shows_before_and_after_from_saved_results(tmp_path):
    """`qa bench --only time` draws where each answer's time goes, before and after, from `qa eval` results; by
    default issue 15's pair (e139e14 and today's pipeline on the seeds, one machine, one hour)."""
    from qa.breakdown import load_time_stages, stage_medians

    out = tmp_path / "bench"
    result = run_qa("bench", "--only", "time", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "bench.json").read_text())
    rows = data["time"]["rows"]
    assert [r["results"] for r in rows] == [p.stem for p in bench.TIME_RESULTS]
    assert data["plots"] == ["time.png"] and all(r["answers"] == 69 for r in rows)
    before, after = (stage_medians(load_time_stages(p)) for p in bench.TIME_RESULTS)
    assert rows[1]["prefill"] == after["prefill"] < before["prefill"]
    # a file that is no result is named, without a traceback, and nothing is drawn
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    bad = run_qa("bench", "--only", "time", "--results", str(broken), "--out", str(tmp_path / "other"))
    assert bad.returncode != 0 and "broken.json" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "other" / "time.png").exists()


def test_the_time_picture_tells_two_files_of_one_name_apart_by_their_folders(tmp_path):
    """before/seeds.json against after/seeds.json (the way `qa eval --json` is often run in two checkouts) is
    drawn with each file under its path, as `python -m qa.breakdown --time-chart` does; one file given twice is
    refused by name."""
    pair = []
    for side, source in zip(("before", "after"), bench.TIME_RESULTS, strict=True):
        (tmp_path / side).mkdir()
        pair.append(tmp_path / side / "seeds.json")
        pair[-1].write_bytes(source.read_bytes())
    out = tmp_path / "bench"
    result = run_qa("bench", "--only", "time", "--results", *map(str, pair), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "bench.json").read_text())["time"]["rows"]
    assert [r["results"] for r in rows] == [str(p) for p in pair]
    twice = run_qa("bench", "--only", "time", "--results", str(pair[0]), str(pair[0]), "--out", str(tmp_path / "x"))
    assert twice.returncode != 0 and "its own name" in twice.stderr and "Traceback" not in twice.stderr
