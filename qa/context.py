"""The context stage, between retrieval and the judge: what the model reads. Fewer, better tokens.

Retrieval ranks whole chunks (600 characters), but the answer to a question is usually one sentence, and often
it sits next to the sentence that matches the question best (the official's name in the sentence before, a date
in the next one), sometimes across a chunk boundary. So, instead of the `top_k` best chunks:

1. take the best `context_chunks` retrieved chunks (more than `top_k`: a wider net, since less of each is read);
2. split them into sentences and score each against the question: cosine of the question's and the sentence's
   embeddings (the retrieval model, already loaded), plus IDF-weighted overlap of their words (optionally plus a
   prior from the retrieval rank of the chunk the sentence lies in: off, see RANK_WEIGHT);
3. take the best sentences with `context_window` neighbouring sentences on each side, reaching into the adjacent
   chunk of the same file (`Store.chunks_of`) when the neighbour lies there; windows of one file that touch are
   merged;
4. add windows best first until `context_tokens` (estimated) is reached.

Each window becomes a Passage whose Chunk is an exact span of the cleaned document text with its own start and
end lines and page, so citations, verbatim quotes and the UI's "open at that place" point where the text is.
`context_tokens = 0` turns the stage off: the model reads the `top_k` whole chunks, as before.

Measured without a model by eval/context_sweep.py (eval/results/context-sweep.json), chosen on the 30 answerable
ClapNQ calibration questions only: see RANK_WEIGHT for the rank prior, measured with the model too and left off.
Also measured and left off, as they did not win on the calibration set: penalising a sentence like one already
read (`redundancy`, MMR), capping one window's share of the budget (`window_share`), a bonus for holding a thing
of the kind asked (`kind_weight`: in prose nearly every sentence holds a number or a name).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from qa.answer import asked_kind, holds_kind
from qa.prompts import TITLE_CHARS
from qa.text import content_words, root, split_sentences
from qa.types import Chunk, Passage

# How much an IDF-weighted share of the question's words adds to a sentence's cosine. Chosen on the ClapNQ
# calibration ids (eval/HISTORY.md, session 6), not on the seeds.
LEXICAL_WEIGHT = 0.5
# A prior from retrieval rank: a sentence in the best retrieved chunk may get `rank_weight` added to its score, one
# in the last of the `context_chunks` 1/n of it (linear in rank). Off by default. Without a model
# (eval/context_sweep.py) 0.7 was the best on the ClapNQ calibration questions (0.6-0.8 tie at answer-word recall
# 0.833 against 0.798 without it) and raised the recall of what is read on 100 other ClapNQ questions, 0.776 ->
# 0.825. With the model (eval/HISTORY.md, session 7), it did not make better answers: seeds the same (0.821) once
# the decline decision was refitted, ClapNQ 20+20 correct / false declines 0.80 / 0.20 -> 0.70 / 0.25, token F1
# 0.375 -> 0.413. Declining is the target that is missed, so the prior stays off; the sweep can turn it on.
RANK_WEIGHT = 0.0
# At most this many windows: each costs a header, and past a few the model's attention, not the budget, is short.
MAX_WINDOWS = 6
# Tokens a window's header ("[2] file.txt p.3") and the blank line before it cost in the prompt.
HEADER_TOKENS = 8
_TOKEN = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def estimate_tokens(text: str) -> int:
    """Roughly the tokens a BPE model (Qwen, Llama) spends on `text`: a word, a digit (Qwen splits numbers into
    digits) or a punctuation mark each count one, plus 8 % for long words (Qwen 2.5's tokenizer on the seeds:
    1.08 tokens per such unit). The model's own tokenizer is not used: an OpenAI endpoint has none here."""
    return math.ceil(1.08 * len(_TOKEN.findall(text)))


class SentenceEmbedder(Protocol):
    """What the context stage needs of an embedder (qa.embeddings.Embedder has it)."""

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


# Sentence vectors kept per embedder, as many as this (1.5 KB each for MiniLM: 30 MB at most).
CACHED_SENTENCES = 20_000
_vectors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_vectors_lock = threading.Lock()


def sentence_vectors(embedder: SentenceEmbedder, texts: list[str]) -> np.ndarray:
    """Each text's vector, embedded alone and remembered.

    Alone, because int8 ONNX vectors depend on the other texts of their batch (one activation scale per batch):
    a sentence scored with other neighbours came out differently, and with it the windows of 12 to 17 of the 69
    seed questions (batches of 16, 8, 4 or 1 against one batch of all). Alone, a sentence's vector depends on
    its text only, so it can be remembered: questions about the same documents read the same chunks again, and
    their sentences cost nothing the second time. Alone is also faster than one padded batch of sentences of
    very different lengths: 0.064 against 0.098 s for the median seed question (24 sentences), before any reuse.
    """
    try:
        with _vectors_lock:
            memo = _vectors.setdefault(embedder, OrderedDict())
    except TypeError:  # an embedder that cannot be weakly referenced: nothing remembered
        memo = OrderedDict()
    out: list[np.ndarray | None] = []
    with _vectors_lock:
        for text in texts:
            vector = memo.get(text)
            if vector is not None:
                memo.move_to_end(text)
            out.append(vector)
    for i, text in enumerate(texts):
        if out[i] is None:
            out[i] = np.asarray(embedder.embed_documents([text]), dtype=np.float32)[0]
            with _vectors_lock:
                memo[text] = out[i]
                while len(memo) > CACHED_SENTENCES:
                    memo.popitem(last=False)
    # every None was filled above; the cast only tells mypy so
    return np.stack(cast("list[np.ndarray]", out)) if out else np.zeros((0, 0), dtype=np.float32)


@dataclass
class _Run:
    """Consecutive chunks of one file (same page), joined into one exact span of the cleaned text."""

    source: str
    page: int | None
    title: str
    start: int  # offset of text[0] in the cleaned document text
    text: str
    chunks: list[Chunk]  # in document order; text offsets are start_char - start

    def line_at(self, offset: int) -> int:
        """The file line of document offset `offset`, counted from the chunk holding it (as the chunker does)."""
        holder = next((c for c in self.chunks if c.start_char <= offset < c.end_char), None)
        if holder is None:  # in the whitespace between two chunks: count from the chunk before
            holder = max((c for c in self.chunks if c.start_char <= offset), key=lambda c: c.start_char)
        return holder.start_line + self.text.count("\n", holder.start_char - self.start, offset - self.start)


def _join(chunks: list[Chunk]) -> str:
    """The cleaned text from the first chunk's start to the last one's end.

    Consecutive chunks overlap (chunk_overlap) or are separated only by the white space the chunker stripped. A
    gap is filled with as many line breaks as the lines on either side say it holds, then spaces: the same
    length and lines as the document, so offsets and line numbers stay exact; only which white space it was is
    not known (and no quote check looks at it)."""
    text = chunks[0].text
    end = chunks[0].end_char
    for prev, c in zip(chunks, chunks[1:], strict=False):
        if c.start_char <= end:
            text += c.text[end - c.start_char :]
        else:
            gap = c.start_char - end
            last_line = prev.start_line + prev.text.count("\n")
            breaks = min(gap, max(0, c.start_line - last_line))
            text += "\n" * breaks + " " * (gap - breaks) + c.text
        end = max(end, c.end_char)
    return text


def _runs(wanted: list[Chunk], chunks_of: Callable[[str], list[Chunk]]) -> list[_Run]:
    """Runs of consecutive chunks (one file, one page) holding every wanted chunk and its neighbour on each side."""
    by_source: dict[str, list[Chunk]] = {}
    for c in wanted:
        by_source.setdefault(c.source, []).append(c)
    runs: list[_Run] = []
    for source, mine in by_source.items():
        every = sorted(chunks_of(source), key=lambda c: c.start_char)
        index = {c.id: i for i, c in enumerate(every)}
        keep: set[int] = set()
        for c in mine:
            if c.id not in index:  # re-indexed since it was retrieved: read it alone
                runs.append(_Run(source, c.page, c.title, c.start_char, c.text, [c]))
                continue
            i = index[c.id]
            keep.update(j for j in (i - 1, i, i + 1) if 0 <= j < len(every) and every[j].page == c.page)
        groups: list[list[int]] = []
        for i in sorted(keep):
            if groups and groups[-1][-1] == i - 1 and every[i - 1].page == every[i].page:
                groups[-1].append(i)
            else:
                groups.append([i])
        for group in groups:
            chunks = [every[i] for i in group]
            first = chunks[0]
            runs.append(_Run(source, first.page, first.title, first.start_char, _join(chunks), chunks))
    return runs


@dataclass
class _Sentence:
    run: _Run
    index: int  # in its run's sentence list
    start: int  # offsets into run.text
    end: int
    text: str
    dense: float | None  # the best dense score of the retrieved chunks it lies in
    keyword: float | None
    rank: int = 0  # the best retrieval rank of the retrieved chunks it lies in
    score: float = 0.0


def _shown_in_header(sentence: str, title: str) -> bool:
    title = title.strip()
    return bool(title) and len(title) <= TITLE_CHARS and sentence.strip() == title


def _is_title(sentence: str, title: str) -> bool:
    return bool(title.strip()) and sentence.strip() == title.strip()


def _idf_overlap(question: str, sentences: list[str]) -> list[float]:
    """The IDF-weighted share of the question's content words each sentence holds (IDF over these sentences:
    a word in every sentence tells them apart no more than a stop word). Words compare by their Snowball root
    (qa.text.root): "described" answers "describe"."""
    asked = content_words(question, root)
    if not asked or not sentences:
        return [0.0] * len(sentences)
    bags = [content_words(s, root) for s in sentences]
    df = Counter(w for bag in bags for w in bag & asked)
    n = len(sentences)
    idf = {w: math.log(1 + n / (1 + df[w])) for w in asked}
    total = sum(idf.values())
    return [sum(idf[w] for w in bag & asked) / total for bag in bags]


def select_context(
    question: str,
    passages: list[Passage],
    chunks_of: Callable[[str], list[Chunk]],
    embedder: SentenceEmbedder | None,
    budget: int,
    window: int = 1,
    lexical_weight: float = LEXICAL_WEIGHT,
    max_windows: int = MAX_WINDOWS,
    *,
    rank_weight: float = RANK_WEIGHT,
    redundancy: float = 0.0,
    window_share: float = 1.0,
    kind_weight: float = 0.0,
    score_titles: bool = False,
    window_after: int | None = None,
    cut_titles: bool = False,
) -> list[Passage]:
    """The windows of text the model reads for `question`, best first, within `budget` estimated tokens.

    `passages` are the retrieved chunks, best first (all of them are searched for sentences). Returns the
    passages unchanged when they hold no sentence. The best sentence is always read, whole, even when it alone
    is over the budget (an answer is never cut); a later one that does not fit is read without its neighbours,
    or skipped. `rank_weight` is the prior for the best-ranked chunk (above); the rest are off by default (they
    did not win on the calibration questions; eval/context_sweep.py measures them): `redundancy` (an already-read
    sentence's cosine times this is taken off a sentence like it), `window_share` (a window with neighbours may
    cost at most this share of the budget, else the sentence is read alone), `kind_weight` (added when the
    sentence holds a thing of the kind asked, qa.answer.holds_kind); `score_titles` makes the title line a
    candidate sentence again, as before session 11, and `cut_titles` a title too long for the header, as before
    session 21; `window_after` reads at most that many neighbours after the sentence (`window` before it)."""
    if not passages:
        return []
    retrieved = {p.chunk.id: p for p in passages}
    rank: dict[str, int] = {}
    for i, p in enumerate(passages):
        rank.setdefault(p.chunk.id, i)
    runs = _runs([p.chunk for p in passages], chunks_of)
    sentences: list[_Sentence] = []
    by_run: dict[int, list[_Sentence]] = {}
    for run in runs:
        sentence_spans = split_sentences(run.text)
        listed = []
        for i, (a, b) in enumerate(sentence_spans):
            # which retrieved chunks hold this sentence (neighbour chunks are read, not scored)
            holders = [
                retrieved[c.id]
                for c in run.chunks
                if c.id in retrieved and c.start_char - run.start < b and a < c.end_char - run.start
            ]
            s_rank = min((rank[h.chunk.id] for h in holders), default=len(passages))
            dense = max((h.dense for h in holders if h.dense is not None), default=None)
            keyword = max((h.keyword for h in holders if h.keyword is not None), default=None)
            s = _Sentence(run, i, a, b, run.text[a:b], dense, keyword, s_rank)
            listed.append(s)
            # The title line is not a candidate: a title restates what a question is about without answering
            # it, so it outscored the sentences that do ("Albania offer for asylum to Iranian group rejected" for
            # "On what grounds was the Albanian asylum offer described?"). The model reads it in the file's
            # header anyway (qa.prompts), or, when too long for the header, as a neighbour of a sentence read.
            # Before session 21 a title too long for the header was a candidate (`cut_titles`): seed 004's took
            # a window and the tokens of the answer to seed-44.
            title_line = _shown_in_header(s.text, run.title) if cut_titles else _is_title(s.text, run.title)
            if holders and (score_titles or not title_line):
                sentences.append(s)
        by_run[id(run)] = listed
    if not sentences:
        return passages
    lexical = _idf_overlap(question, [s.text for s in sentences])
    if embedder is not None:
        vectors = sentence_vectors(embedder, [s.text for s in sentences])
        query = np.asarray(embedder.embed_query(question), dtype=np.float32)
        cosines = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(query), 1e-9)
    else:
        cosines = np.zeros(len(sentences), dtype=np.float32)
    kind = asked_kind(question) if kind_weight else None
    context_text = " ".join(r.text for r in runs) if kind else ""
    for s, cos, lex in zip(sentences, cosines.tolist(), lexical, strict=True):
        s.score = cos + lexical_weight * lex
        s.score += rank_weight * (1 - s.rank / len(passages))
        if kind and kind != "thing" and holds_kind(s.text, kind, question, context_text):
            s.score += kind_weight
    if embedder is not None and redundancy:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        similar = unit @ unit.T
    else:
        similar = None
    position = {id(s): i for i, s in enumerate(sentences)}

    # Greedy, best sentence first: its window (the sentence and `window` neighbours each side), merged with a
    # window of the same run it touches, while the estimated tokens of all windows fit the budget.
    chosen: dict[int, list[list]] = {}  # id(run) -> [[first sentence index, last index, best score], ...]
    used = 0

    def cost(run: _Run, first: int, last: int) -> int:
        listed = by_run[id(run)]
        return estimate_tokens(run.text[listed[first].start : listed[last].end]) + HEADER_TOKENS

    def total_after(run: _Run, first: int, last: int, score: float) -> tuple[int, list[list]]:
        spans = [*chosen.get(id(run), []), [first, last, score]]
        spans.sort()
        merged: list[list] = []
        for f, la, sc in spans:
            if merged and f <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], la)
                merged[-1][2] = max(merged[-1][2], sc)
            else:
                merged.append([f, la, sc])
        before = sum(cost(run, f, la) for f, la, _ in chosen.get(id(run), []))
        after = sum(cost(run, f, la) for f, la, _ in merged)
        return used - before + after, merged

    def is_read(x: _Sentence) -> bool:
        return any(f <= x.index <= la for f, la, _ in chosen.get(id(x.run), []))

    remaining = sorted(sentences, key=lambda s: s.score, reverse=True)
    while remaining and used < budget:
        if similar is not None:
            read = [position[id(x)] for x in sentences if is_read(x)]
            overlap = similar[:, read].max(axis=1) if read else np.zeros(len(sentences))
            s = max(remaining, key=lambda x: x.score - redundancy * max(0.0, float(overlap[position[id(x)]])))
        else:
            s = remaining[0]
        remaining.remove(s)
        listed = by_run[id(s.run)]
        if is_read(s):
            continue  # already read as a neighbour
        windows = sum(len(v) for v in chosen.values())
        for reach in (window, 0) if window else (0,):
            after = reach if window_after is None else min(reach, window_after)
            first, last = max(0, s.index - reach), min(len(listed) - 1, s.index + after)
            if first < s.index and _shown_in_header(listed[first].text, s.run.title):
                first += 1  # the header shows the title line already: its tokens go to another sentence
            total, merged = total_after(s.run, first, last, s.score)
            grows = len(merged) > len(chosen.get(id(s.run), []))
            if reach and window_share < 1 and total - used > window_share * budget:
                continue  # too long with its neighbours: the sentence alone
            if (total <= budget or not chosen) and not (grows and windows >= max_windows):
                chosen[id(s.run)] = merged
                used = total
                break

    runs_by_id = {id(r): r for r in runs}
    out: list[Passage] = []
    for run_id, spans in chosen.items():
        run = runs_by_id[run_id]
        listed = by_run[run_id]
        for first, last, score in spans:
            a, b = listed[first].start, listed[last].end
            members = listed[first : last + 1]
            dense = max((m.dense for m in members if m.dense is not None), default=None)
            keyword = max((m.keyword for m in members if m.keyword is not None), default=None)
            out.append(Passage(_window_chunk(run, a, b), score, dense=dense, keyword=keyword))
    out.sort(key=lambda p: p.score, reverse=True)
    return out


def _window_chunk(run: _Run, a: int, b: int) -> Chunk:
    """The Chunk of run.text[a:b]: its exact offsets, lines and page in the document."""
    text = run.text[a:b]
    start, end = run.start + a, run.start + b
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Chunk(
        id=hashlib.sha1(f"{run.source}\0{start}\0{digest}".encode()).hexdigest()[:20],
        text=text,
        source=run.source,
        start_char=start,
        end_char=end,
        start_line=run.line_at(start),
        end_line=run.line_at(end - 1),
        page=run.page,
        title=run.title,
        hash=digest,
    )
