"""Keyword search (SQLite FTS5 BM25) on an index large enough for the cap on common words to apply
(qa.store.sqlite.COMMON_SHARE / COMMON_MIN): what a user gets back for words found everywhere, and for a search
limited to some files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from qa.store import sqlite as side_index
from qa.store.sqlite import FileUpdate, SideIndex
from qa.types import Chunk

FILES = 50
PER_FILE = 50  # 2,500 chunks: more than COMMON_MIN hold "harbour"


def chunk(source: str, i: int, text: str) -> Chunk:
    return Chunk(
        f"{source}#{i}", text, source, 0, len(text), i + 1, i + 1, None, "", hashlib.sha256(text.encode()).hexdigest()
    )


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> SideIndex:
    side = SideIndex(tmp_path_factory.mktemp("kw"))
    files = []
    for f in range(FILES):
        source = f"log-{f:02d}.txt"
        chunks = [
            chunk(
                source,
                i,
                f"Harbour log {f}-{i}: the harbour master noted ships in the harbour, entry {f * PER_FILE + i}.",
            )
            for i in range(PER_FILE)
        ]
        files.append(FileUpdate(source, source, 1, 1, chunks, np.zeros((len(chunks), 2), dtype=np.float32)))
    rare = "Harbour log: the lighthouse keeper reported a broken lamp in the harbour."
    files[7].chunks[3] = chunk("log-07.txt", 3, rare)
    side.mark_pending(files)
    side.swap_chunks(files)
    yield side
    side.close()


def test_the_index_is_large_enough_for_the_cap(index):
    assert index.chunk_count() > side_index.COMMON_MIN
    assert index.chunk_count() * side_index.COMMON_SHARE < FILES * PER_FILE  # "harbour" is in more than the share


def test_a_word_found_everywhere_does_not_bury_the_rare_one(index):
    hits = index.search_keyword("lighthouse in the harbour", 5)
    assert hits[0].chunk.text.startswith("Harbour log: the lighthouse keeper")
    # "harbour" (in every chunk) is left out of the keyword query: only the lighthouse chunk matches
    assert [h.chunk.id for h in hits] == ["log-07.txt#3"]


def test_a_question_of_common_words_only_still_finds_chunks(index):
    hits = index.search_keyword("harbour master ships", 5)
    assert len(hits) == 5 and all("harbour" in h.chunk.text.lower() for h in hits)


def test_a_search_limited_to_files_returns_only_their_chunks_best_first(index):
    hits = index.search_keyword("lighthouse harbour", 10, sources=["log-07.txt", "log-08.txt"])
    assert hits[0].chunk.id == "log-07.txt#3"
    assert {h.chunk.source for h in hits} == {"log-07.txt"}  # only the rarest word's chunk matches at all
    hits = index.search_keyword("entry harbour master", 10, sources=["log-03.txt"])
    assert len(hits) == 10 and {h.chunk.source for h in hits} == {"log-03.txt"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
