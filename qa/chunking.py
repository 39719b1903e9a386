"""Documents -> Chunks: sentence-aware pieces of a few hundred tokens that remember where they came from."""

from __future__ import annotations

import bisect
import hashlib

from langchain_text_splitters import RecursiveCharacterTextSplitter

from qa.documents import Document
from qa.types import Chunk  # defined there, importable from here as before

# Paragraphs first, then sentences, then clauses and words: a chunk ends at a sentence end when it can.
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_document(doc: Document, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """Split a document within its sections (PDF pages) and attach positions, lines and ids."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        separators=SEPARATORS,
        keep_separator="end",
        strip_whitespace=True,
    )
    newlines = [i for i, ch in enumerate(doc.text) if ch == "\n"]
    chunks: list[Chunk] = []
    for sec_start, sec_end, page in doc.sections:
        section = doc.text[sec_start:sec_end]
        cursor = 0
        for piece in splitter.split_text(section):
            # The splitter returns strings; find each one from just after the previous start, so an
            # overlapping or repeated sentence maps to its own place.
            at = section.find(piece, cursor)
            if at < 0:  # cannot happen with strip_whitespace pieces, but never cite a wrong place
                at = section.find(piece)
            start = sec_start + at
            end = start + len(piece)
            cursor = at + 1
            first_line = bisect.bisect_right(newlines, start - 1)  # index of the line holding `start`
            last_line = bisect.bisect_right(newlines, end - 2) if end > start else first_line
            digest = content_hash(piece)
            chunk_id = hashlib.sha1(f"{doc.source}\0{start}\0{digest}".encode()).hexdigest()[:20]
            chunks.append(
                Chunk(
                    id=chunk_id,
                    text=piece,
                    source=doc.source,
                    start_char=start,
                    end_char=end,
                    start_line=doc.line_map[first_line],
                    end_line=doc.line_map[last_line],
                    page=page,
                    title=doc.title,
                    hash=digest,
                )
            )
    return chunks
