"""Text handling in one place: words and stop words, sentences, numbers, citation markers, how a place in a file
is written, and the decline sentence.

Two stop-word sets, on purpose: keyword search drops only the words that would match everything
(`KEYWORD_STOP`); the citation check also ignores words any answer uses about its sources ("according",
"documents", "said"), so they never count as support (`CHECK_STOP`, a superset). Changing either changes
retrieval or which answers are kept.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import lru_cache

import snowballstemmer

# What qa says, everywhere, when the documents do not answer a question.
DECLINE_TEXT = "The documents don't say."
# How a model's reply says the same in its own words; a reply (or a sentence of it) saying so is a decline.
DECLINE_PHRASE = re.compile(
    r"documents? (don'?t|do not|does not|doesn'?t) (say|mention|contain|provide|specify|state)|"
    r"(no|not enough) information|not (mentioned|stated|specified|provided|given) in|"
    r"sources? (don'?t|do not|does not) (say|mention|contain|provide|specify|state)|"
    r"not in (the )?sources|cannot (be )?(answer|determine)|unable to (answer|determine)",
    re.IGNORECASE,
)

# ---- words -------------------------------------------------------------------------------------------------

# Words that carry no topic; dropped from keyword queries so "what is the ..." does not match everything.
KEYWORD_STOP = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her his how i if in into "
    "is it its me my no not of on or our she so than that the their them then there these they this those to "
    "was we were what when where which who whom whose why will with would you your about after before did".split()
)
# Words the citation check ignores in a sentence and its passage: KEYWORD_STOP and the words of talking about
# sources, quantities and time that any answer may use.
CHECK_STOP = KEYWORD_STOP | frozenset(
    "hers him also said says say according source sources document documents over under more most some any all "
    "other such only both each up out just very being because while during per".split()
)

_WORD = re.compile(r"[^\W_]+")  # letters and digits; "_" and punctuation separate words
_QUERY_TERM = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words of `text`, as written (case kept)."""
    return _WORD.findall(text)


def query_terms(query: str) -> list[str]:
    """A keyword query's terms: lower-cased, without KEYWORD_STOP words and single letters (digits stay)."""
    return [t for t in _QUERY_TERM.findall(query.lower()) if t not in KEYWORD_STOP and (len(t) > 1 or t.isdigit())]


def stem(word: str) -> str:
    """A crude suffix strip ("rejected" -> "reject", "offers" -> "offer") for comparing words, not for showing.

    The citation checks and the decline decision's overlap use it. The English Snowball stemmer (`root`) was
    measured in them too (session 11) and left out: it also joins "detection" with "detects", and in the checks
    that looser match let 3 more of the 270 unanswerable ClapNQ questions through (eval/recheck.py)."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# A Snowball stemmer keeps the word it works on in itself: one shared by two threads (two questions at once in the
# UI) returns wrong stems or raises IndexError. One per thread.
_stemmers = threading.local()


@lru_cache(maxsize=65536)
def root(word: str) -> str:
    """The English Snowball (Porter 2) stem of a lower-case word: "described" and "describe" -> "describ",
    "living" and "lives" -> "live", "countries" -> "countri". For finding the sentences about a question
    (qa.context), where `stem` left "describe" and "described" (or "renounce" and "renounced") apart, so a
    sentence saying the answer with another form of the question's word lost its overlap. Cached: about 28 us a
    word uncached, and questions and passages repeat their words."""
    english = getattr(_stemmers, "english", None)
    if english is None:
        english = _stemmers.english = snowballstemmer.stemmer("english")
    return english.stemWord(word)


def content_words(text: str, stemmer: Callable[[str], str] = stem) -> set[str]:
    """The stemmed words of `text` that carry content: no CHECK_STOP words, no single letters (digits stay)."""
    return {stemmer(w) for w in words(text.lower()) if w not in CHECK_STOP and (len(w) > 1 or w.isdigit())}


_NUMBER = re.compile(r"\d[\d,.]*\d[a-z]*|\d[a-z]*", re.IGNORECASE)  # "1980s" is not "1980"


def numbers(text: str) -> set[str]:
    """The numbers in `text` as compared: thousands separators and a trailing period dropped, lower case."""
    return {n.replace(",", "").rstrip(".").lower() for n in _NUMBER.findall(text)}


# ---- citation markers --------------------------------------------------------------------------------------

# A marker as the model writes it: [1], or several numbers in one: [1, 2] / [1; 3].
MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# One or more markers, each possibly after white space: those trailing a sentence end (". [1][2]").
_MARKERS_RUN = re.compile(r"(\s*\[\d+(?:\s*[,;]\s*\d+)*\])+")
_MARKER_SEPARATOR = re.compile(r"\s*[,;]\s*")
# A marker in a checked answer, which always has one number per bracket: [1][2].
CHECKED_MARKER = re.compile(r"\[(\d+)\]")


def marker_numbers(text: str) -> list[int]:
    """The source numbers the markers in `text` cite, in order, repeats kept ("a [1]. b [2, 1]" -> [1, 2, 1])."""
    return [int(n) for m in MARKER.finditer(text) for n in _MARKER_SEPARATOR.split(m.group(1))]


# ---- sentences ---------------------------------------------------------------------------------------------

# A sentence ends at . ! ? (plus closing quotes/brackets) before a space, unless the word before the period
# is an abbreviation ("U.S.", "Rep.", "Feb.", "et al.") or a single letter (initials). Plural titles count:
# "Republican Reps. Ted Poe of Texas, ... and Democratic Rep. Jim Costa" was two sentences, and the second,
# which names the congressman asked for, was read without the "delegation" that made it match.
ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr drs prof profs rep reps sen sens gen gens col lt sgt capt maj adm gov govs st jr sr "
    "inc co corp ltd dept vs etc approx cf al fig figs eq eqs vol vols pp natl acad proc "
    "jan feb mar apr jun jul aug sep sept oct nov dec calif mo tex fla ariz mass wash ill pa ny dc".split()
)
# Abbreviations that are also words ending a sentence ("They said no."): one only before a number ("No. 16",
# "Sec. 3").
NUMBER_ABBREVIATIONS = frozenset("no nos art ch sec ref refs tab".split())
_END = re.compile(r"(?<![.!?])[.!?]+[\"'”’)\]]*(?=\s|$)|\n+")  # from a run's first mark only: linear
_TAIL_WORD = re.compile(r"[^\W\d_][\w.]*")
_DIGIT_NEXT = re.compile(r"\s*\d")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences in `text`; markers like [1] stay with their sentence."""
    spans, start = [], 0
    for m in _END.finditer(text):
        end = m.end()
        if m.group().startswith((".", "!", "?")) and m.group()[0] == ".":
            # the word before the period: walk back over [\w.] (a search of the text since the last sentence
            # was quadratic in a long word, or after many skipped abbreviations)
            j = m.start()
            while j > start and (text[j - 1].isalnum() or text[j - 1] in "._"):
                j -= 1
            word = _TAIL_WORD.search(text, j, m.start())
            token = word.group().lower() if word else ""
            bare = token.rstrip(".")
            if token and (bare in ABBREVIATIONS or len(bare) == 1 or "." in token):
                continue  # "U.S." / "Rep." / "J." is not the end of a sentence
            if bare in NUMBER_ABBREVIATIONS and _DIGIT_NEXT.match(text, end):
                continue  # "No. 16"
        tail = _MARKERS_RUN.match(text, end)
        if tail:  # pull trailing citation markers (". [1][2]") into the sentence they follow
            end = tail.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    # trim surrounding white space so a span is exactly the sentence
    trimmed = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if text[a:b] and not MARKER.fullmatch(text[a:b]):
            trimmed.append((a, b))
    return trimmed


# ---- places in files ---------------------------------------------------------------------------------------


def source_page(source: str, page: int | None) -> str:
    """A file and its page, as the prompt names a source: "report.pdf, page 3", or the file name alone."""
    return f"{source}, page {page}" if page else source


def short_location(source: str, start_line: int, end_line: int, page: int | None) -> str:
    """A place as the terminal and the logs write it: "a.txt lines 3-5", "b.pdf p.2 line 7"."""
    lines = f"line {start_line}" if start_line == end_line else f"lines {start_line}-{end_line}"
    return f"{source} p.{page} {lines}" if page else f"{source} {lines}"


def long_location(source: str, start_line: int, end_line: int, page: int | None) -> str:
    """A place as the web UI writes it: "a.txt, lines 3–5", "b.pdf, page 2, line 7" (an en dash)."""
    lines = f"line {start_line}" if start_line == end_line else f"lines {start_line}–{end_line}"
    return f"{source_page(source, page)}, {lines}"
