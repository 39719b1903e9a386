"""The results qa hands out, in one place: a Chunk of a document, a retrieved Passage, and the checked Answer with
its Citations (and the Evidence event that comes before it). They are re-exported where they used to live
(qa.chunking, qa.retrieve, qa.answer), so either import works."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qa.text import short_location


@dataclass(frozen=True)
class Chunk:
    """A piece of one document with its exact place in it. The unit we embed, retrieve and cite."""

    id: str  # deterministic: same file, place and text -> same id
    text: str
    source: str  # path relative to the corpus root
    start_char: int  # offsets into the cleaned document text
    end_char: int
    start_line: int  # 1-based, inclusive, lines of the original file (of the page for PDFs)
    end_line: int
    page: int | None  # 1-based page for PDFs, else None
    title: str
    hash: str  # sha256 of `text`

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def location(self) -> str:
        """Where the chunk is, as the terminal writes it: "a.txt lines 3-5", "b.pdf p.2 line 7"."""
        return short_location(self.source, self.start_line, self.end_line, self.page)


@dataclass
class Passage:
    chunk: Chunk
    # the mode's score: cosine (dense), BM25 (bm25), fused RRF (hybrid); for hybrid+rerank what the last reranker
    # set (a cross-encoder's score for the best `depth` passages, which come first, then the rest in fused order)
    score: float
    dense: float | None = None  # cosine similarity to the question, when the dense search saw it
    keyword: float | None = None  # BM25 score, when the keyword search saw it


@dataclass
class Citation:
    n: int
    source: str
    start_line: int
    end_line: int
    page: int | None
    quote: str  # verbatim sentence(s) from the cited passage that support the claim
    score: float  # how much of the claim's wording the quote covers, 0..1
    chunk_id: str = ""


@dataclass
class Answer:
    """What every edge shows: the checked answer, its citations, the passages it came from, and timings."""

    question: str
    text: str
    abstained: bool
    citations: list[Citation] = field(default_factory=list)
    retrieved: list[Passage] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)  # sentences removed because no passage backs them
    standalone_question: str = ""  # the follow-up rewritten for retrieval, when there was history
    judge: float | None = None  # the model's P(yes) that the sources state the answer, when it can judge
    model: str = ""
    raw: str = ""  # the model's reply before checking
    redraft: str = ""  # the second reply, from the best window alone, when the checks declined the first
    # which stage declined: "relevance" | "judge" | "model" | "checks" (qa.stages); None when answered
    declined_by: str | None = None
    # tokens the model read and wrote, per call ("judge", "draft", "redraft", "rewrite"), in OpenAI's names
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "citations": [{k: v for k, v in asdict(c).items() if k != "chunk_id"} for c in self.citations],
            "retrieved": [
                {
                    "source": p.chunk.source,
                    "start_line": p.chunk.start_line,
                    "end_line": p.chunk.end_line,
                    "page": p.chunk.page,
                    "score": round(p.score, 6),
                    "dense": None if p.dense is None else round(p.dense, 4),
                    "text": p.chunk.text,
                }
                for p in self.retrieved
            ],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "unsupported": self.unsupported,
            "standalone_question": self.standalone_question,
            "judge": None if self.judge is None else round(self.judge, 4),
            "model": self.model,
            "declined_by": self.declined_by,
            "redraft": self.redraft,
            "usage": self.usage,
        }


@dataclass
class Evidence:
    """The first event of `Assistant.stream`: the passages the model will read, as soon as retrieval is done."""

    passages: list[Passage]
    seconds: float  # from the question to the passages being ready
