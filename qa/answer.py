"""Answering: the checks that decide what of the model's reply is shown as cited fact (the prompt is qa.prompts).

The model is asked to cite [n] after each sentence, but nothing it writes is trusted as is. Each sentence is
checked against the passage it cites (its content words, and every number and name in it, must occur there).
A wrong marker is moved to a passage that supports the sentence or dropped; a sentence that no passage
supports is removed from the answer and listed in `unsupported`. If nothing supported is left, or retrieval
found nothing relevant, the answer is an explicit decline.

Three further rules (issue 14), each a form rather than a list of phrases:
- attribution ("According to AP, ...", "..., as stated in [1]", "Source [2] says ...") is not a claim: it is
  taken off before checking, and shown only when it names something the cited passage holds;
- a number or name the sentence adds must be bound in the passage to what it is bound to in the sentence: a word
  next to "8" in the answer that the passage puts next to another number ("8 dead and about 100 injured") is a
  swapped fact; and a negation the answer adds ("urged them not to accept") must stand in the sentence it quotes;
- a who / which / when / where / how-many question needs an answer holding a thing of that kind (a name, a date,
  a number, a place) that the question does not already hold ("On what date ...?" a number or a month, not
  "Monday"); a reason that only restates its own sentence ("it turned down the offer because it rejected the
  offer") is no answer either, nor is a sentence pointing back ("This was announced ...") at one that was removed.
"""

from __future__ import annotations

import re

from qa.injection import REMOVED, evidence, instruction_spans, neutralise
from qa.prompts import ANSWER_INSTRUCTION, DECLINE_RULE, JUDGE_INSTRUCTION, SYSTEM_PROMPT, build_messages
from qa.text import (
    CHECK_STOP,
    DECLINE_PHRASE,
    DECLINE_TEXT,
    MARKER,
    content_words,
    marker_numbers,
    numbers,
    split_sentences,
    stem,
    words,
)
from qa.types import Answer, Citation, Evidence, Passage

# Re-exported: these lived here before qa.prompts, qa.injection, qa.text and qa.types.
__all__ = [
    "ANSWER_INSTRUCTION",
    "DECLINE_RULE",
    "DECLINE_TEXT",
    "JUDGE_INSTRUCTION",
    "REMOVED",
    "SYSTEM_PROMPT",
    "Answer",
    "Citation",
    "Evidence",
    "best_quote",
    "build_messages",
    "check_answer",
    "content_words",
    "declined",
    "evidence",
    "instruction_spans",
    "neutralise",
    "split_sentences",
    "support",
]


# ---- checking ------------------------------------------------------------------------------------------

# The checker's thresholds. Changing one changes which answers are kept: re-run the seeds and ClapNQ evaluations.
SUPPORT_MIN = 0.5  # share of a sentence's content words its passage must contain
SHORT_ANSWER_WORDS = 3  # a sentence adding fewer new content words than this is a short answer ("2012.") ...
# ... and its support is at most this times the share of the question's content words the passage holds (with 2,
# a passage must hold a quarter of them to reach SUPPORT_MIN: it must be about what was asked)
SHORT_ANSWER_TOPIC_FACTOR = 2
SKELETON_MIN_LENGTH = 6  # names shorter than this never match another spelling ("Bush" / "Bash")
QUOTE_PAIR_PENALTY = 0.2  # a quote of two sentences must cover this much more of the claim than one sentence
QUOTE_LENGTH_PENALTY = 0.001  # per 100 characters of quote: of two quotes that cover as much, the shorter wins


def _names(sentence: str) -> set[str]:
    """Capitalised words after the first word: the names a fabricated answer tends to invent."""
    return {
        stem(w.lower()) for w in words(sentence)[1:] if w[0].isupper() and len(w) > 1 and w.lower() not in CHECK_STOP
    }


def _skeleton(word: str) -> str:
    """A long name's consonants in order, doubles collapsed: transliterations of one name differ in vowels
    ("Mujahedeen" / "Mujahadin" / "Mojahedin" -> "mjhdn"), while different names differ in consonants
    ("Obama" / "Osama", "Iran" / "Iraq")."""
    if len(word) < SKELETON_MIN_LENGTH:
        return ""  # short words share skeletons by chance ("Bush" / "Bash")
    return re.sub(r"(.)\1+", r"\1", re.sub(r"[aeiouy]", "", word))


# ---- attribution (issue 14.1) -----------------------------------------------------------------------------

# "[1]", "[1, 2]", "[1], [3], and [4]": one or more markers joined by commas / "and". The joint is spaces
# around a separator, or spaces alone; not `\s*(sep)?\s*`, where a space could go to either `\s*` and a failed
# match over a run of markers ("[1] [2] [3] [1] ..." from a looping model) tried 2^n splits: a hang, not a check.
_MARKER = r"\[\d+(?:\s*[,;]\s*\d+)*\]"
_MARKERS = rf"{_MARKER}(?:(?:\s*(?:,\s*and|,|;|and|&)\s*|\s*){_MARKER})*"
# A reference to the sources themselves, not to anything they report: "[2]", "source [2]", "the article",
# "the provided context", "passages 1 and 3".
_SOURCE_REF = (
    r"(?:(?:the |this |that |these |those )?(?:(?:given|provided|above|cited|same|first|second|third) )?"
    r"(?:source|document|passage|text|article|context|excerpt|snippet|reference)s?"
    rf"(?:\s*(?:{_MARKERS}|\d+(?:\s*(?:,|and)\s*\d+)*))?|{_MARKERS})"
)
# Spaces and an optional comma before a phrase, matched only from the start of a run of spaces: a search from
# every position inside a long run (a model's padding) was quadratic. Same matches, as a run's start comes first.
_LEAD = r"(?<!\s)\s*(?:,\s*)?"
_ATTRIBUTING = (
    r"(?:according to|as (?:stated|reported|described|mentioned|noted|indicated|shown|explained|said|seen|written)"
    r" (?:in|by))"
)
_SAYING = (
    r"(?:says?|said|states?|stated|reports?|reported|writes?|wrote|notes?|noted|mentions?|mentioned|indicates?|"
    r"indicated|explains?|explained|shows?|showed|confirms?|confirmed|suggests?|suggested)"
)
_I = re.IGNORECASE
# Attribution to the sources: never a claim, always taken off (the [n] marker already says where it is from).
_SOURCE_ATTRIBUTION = [
    re.compile(rf"^(?:{_ATTRIBUTING}|in|from|per|based on)\s+{_SOURCE_REF}\s*[,:]\s*", _I),
    re.compile(rf"^{_SOURCE_REF}\s+(?:also\s+)?{_SAYING}(?:\s+that)?\s*[,:]?\s*", _I),
    re.compile(rf"^it is {_SAYING} (?:in|by) {_SOURCE_REF}\s*,?\s*(?:that\s+)?", _I),
    re.compile(rf"{_LEAD}\(?{_ATTRIBUTING}\s+{_SOURCE_REF}\)?", _I),
    re.compile(
        rf"(?<!\s)\s+(?:in|from|by)\s+(?:the\s+)?(?:source|document|passage|text|article)s?\s*(?={_MARKERS})", _I
    ),
]
# A sentence that only points at a source ("This is supported by source [1].") carries no claim.
_POINTER = re.compile(
    r"^(?:this|that|it|these|which)(?: \w+){0,2} (?:is|are|was|were|can be) (?:\w+ )?(?:supported|stated|mentioned|"
    rf"found|shown|confirmed|given|described|explained|based|reported|seen)(?: \w+)? (?:by|in|on)\s+{_SOURCE_REF}"
    r"\s*[.!?]?$",
    _I,
)
# An attribution with nothing attributed: "According to AP [1]." closed seed-45's answer, a sentence of its own
# that says nothing (and is true of whatever passage names AP).
_BARE_ATTRIBUTION = re.compile(rf"^{_ATTRIBUTING}\s+[^,;:.!?]{{1,60}}[.!?]?$", _I)
# Attribution to someone ("According to AP, ...", "..., as reported by Reuters.", "AP reports that ..."): the
# claim is checked without it, and it is shown only when the cited passage names the same (see `_attributed`).
_NAMED_ATTRIBUTION = [
    re.compile(rf"^{_ATTRIBUTING}\s+(?P<who>[^,;:]{{1,60}}?)\s*,\s*", _I),
    re.compile(r"^(?P<who>(?:[A-Z][\w.'’&-]*\s+){1,4}?)(?:reports?|reported|writes?|wrote)\s+that\s+"),
    # possessive `\s*+`: three adjacent runs of spaces made a reply with a long one take cubic time
    re.compile(rf"(?<!\s)\s*,\s*{_ATTRIBUTING}\s+(?P<who>[^,;:.]{{1,60}}?)(?=\s*+(?:{_MARKERS})?\s*+[.!?]?\s*+$)", _I),
]
# A reply that opens with a source's number and then its marker ("1 [1] 8 dead and ..."): the model copied the
# prompt's "[1] (title)" layout, and the first-token bar (qa/generators/llama_cpp.py) kept only the bracket off.
# The bare number is the marker's echo, not a claim; left in, the checks decline the sentence for a "1" that no
# passage holds (seed-14 in session 13).
_ECHOED_MARKER = re.compile(r"\A\s*(\d)\s*(?=\[\1\])")
# Left over when a model's attribution lost its object: "as stated in ,, and", "according to ,".
# `_tidy` collapses runs of white space first, so its `\s*` are short; a run of commas is tried from its first comma
# only, also when single spaces part them (", , ,": quadratic before, 0.6 s at 8,000; the same matches).
_DANGLING = re.compile(
    rf"\s*,?\s*{_ATTRIBUTING}\s*(?=[,.;:!?]|$)|(?<!,)(?<!,\s)(?:\s*,)++\s*(?:and\s*)?(?=[.!?]|$)", _I
)


def _attributed(sentence: str) -> tuple[str, str, set[str]]:
    """(the sentence without attribution to the sources, the same also without attribution to someone,
    the content words naming that someone). Markers are kept; only the phrases around them go."""
    full = sentence
    bare = _tidy(MARKER.sub("", full))
    if _POINTER.match(bare) or _POINTER.match(full.strip()) or _BARE_ATTRIBUTION.match(bare):
        return "", "", set()
    for rx in _SOURCE_ATTRIBUTION:
        full = rx.sub(lambda m: " " if m.start() else "", full, count=1)
    core, who = full, set()
    for rx in _NAMED_ATTRIBUTION:
        m = rx.search(core)
        if m:
            who = content_words(m.group("who"))
            core = core[: m.start()] + (" " if m.start() else "") + core[m.end() :]
            break
    full, core = _capitalised(full.strip()), _capitalised(core.strip())
    return full, core, who


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:] if text[:1].islower() else text


# ---- facts and what they are bound to (issue 14.2) ---------------------------------------------------------

BIND_WINDOW = 2  # content words either side of a number or name that the answer binds to it ("8 people injured")
# ... and in the passage, a word right next to another number or name ("about 100 injured") is bound to that one
BOUND_ELSEWHERE = 1
# "U.N." / "U.S." are one word here (the citation check proper ignores single letters)
_TOKEN = re.compile(r"(?:[A-Za-z]\.){2,}|\d[\d,.]*\d[^\W\d_]*|\d[^\W\d_]*|[^\W\d_]+")
_MONTHS = frozenset(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Number words that are quantities; "one" is left out of binding (it is mostly a pronoun: "one of the camps").
_NUMBER_WORDS = frozenset(
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand thousands "
    "million millions billion billions trillion dozen dozens".split()
)
# Capitalised words that open sentences without naming anything; a sentence's first word outside these and
# CHECK_STOP is checked as a name when the passage never writes it in lower case ("Iraq offered ...").
_OPENERS = frozenset(
    "however therefore thus hence additionally moreover furthermore overall yes no also finally first firstly "
    "second secondly third lastly meanwhile instead still yet again here today currently initially later "
    "previously today's many several few most both either neither another every there".split()
)


# What a count of people can be, one class each: a number a passage ties to one outcome ("8 dead", "the deaths of
# 35 civilians") is never another ("8 injured", "35 civilians were injured"). These words are what the claim is,
# not a paraphrase of it, so the binding rule's leniency toward words the passage lacks does not apply to them.
_OUTCOME_WORDS = {
    "dead": "dead death deaths die died dies dying kill killed killing killings kills fatalities fatality",
    "hurt": "injured injuries injury injuring wounded wounding wounds hurt",
    "held": "arrested arrests detained detainees jailed imprisoned captured",
    "missing": "missing disappeared",
}
_OUTCOME = {stem(w): kind for kind, text in _OUTCOME_WORDS.items() for w in text.split()}


def _lower_words(text: str) -> set[str]:
    """The words `text` writes in lower case somewhere: those are not names when they open a sentence."""
    return {w for w in words(text) if w.islower()}


def _opens_with_name(first: str, lower: set[str]) -> bool:
    low = first.lower()
    return (
        first[:1].isupper()
        and len(first) > 1
        and low not in CHECK_STOP
        and low not in _OPENERS
        and low not in lower
        and not low.endswith("ly")
    )


def _tokens(sentence: str, lower: set[str]) -> list[tuple[str, str]]:
    """(stem, kind) for each content word of `sentence`, kind "num" (a number, a month, a number word), "name"
    (capitalised, the first word only when `_opens_with_name`) or "word"."""
    return [(t, k) for t, k, _ in _placed_tokens(sentence, lower)]


def _placed_tokens(sentence: str, lower: set[str]) -> list[tuple[str, str, tuple[int, int]]]:
    """`_tokens` with where each word stands in `sentence` (start, end)."""
    out = []
    for i, m in enumerate(_TOKEN.finditer(sentence)):
        raw = m.group()
        low = raw.lower().replace(",", "").replace(".", "") if "." in raw[:2] else raw.lower().replace(",", "")
        if low in CHECK_STOP or (len(low) == 1 and not low.isdigit()):
            continue
        if raw[0].isdigit() or low in _NUMBER_WORDS or (raw[0].isupper() and low in _MONTHS):
            out.append((low, "num", m.span()))
        elif raw[0].isupper() and (i > 0 or _opens_with_name(raw, lower)):
            out.append((stem(low), "name", m.span()))
        else:
            out.append((stem(low), "word", m.span()))
    return out


def _compounds(text: str, placed: list[tuple[str, str, tuple[int, int]]]) -> list[tuple[str, str]]:
    """Pairs of content words (`placed`, from `_placed_tokens(text, ...)`) written next to each other in `text`,
    nothing but space between ("foreign minister")."""
    return [
        (a, b)
        for (a, _, (_, end)), (b, _, (start, _)) in zip(placed, placed[1:], strict=False)
        if not text[end:start].strip()
    ]


def _asked(question: str) -> set[str]:
    """The question's words in every form `_tokens` gives an answer's: stems, numbers, and months and number words
    as written ("february", not the stem "februari"), so that a fact the question already names is recognised."""
    return content_words(question) | numbers(question) | {t for t, _ in _tokens(question, set())}


def _facts(tokens: list[tuple[str, str]], kind: str) -> list[tuple[int, int, frozenset[str]]]:
    """The facts of `kind` in a sentence as (first, last position, words): a run of them ("February 9",
    "Victoria Nuland") is one fact."""
    groups, i = [], 0
    while i < len(tokens):
        if tokens[i][1] == kind:
            j = i
            while j + 1 < len(tokens) and tokens[j + 1][1] == kind:
                j += 1
            groups.append((i, j, frozenset(t for t, _ in tokens[i : j + 1])))
            i = j + 1
        else:
            i += 1
    return groups


def _bindings(tokens: list[tuple[str, str]], kind: str, window: int) -> list[tuple[str, frozenset[frozenset[str]]]]:
    """Each plain word with the facts of `kind` it is bound to: those nearest to it, at most `window` away."""
    groups = _facts(tokens, kind)
    out = []
    for p, (word, k) in enumerate(tokens):
        if k != "word" or not groups:
            continue
        dist = [(max(a - p, p - b, 0), g) for a, b, g in groups]
        near = min(d for d, _ in dist)
        if near <= window:
            out.append((word, frozenset(g for d, g in dist if d == near)))
    return out


def _same_fact(fact: frozenset[str], others: set[str] | frozenset[str]) -> bool:
    """Does a fact share a word with `others`, allowing a name's other forms: "Hep" / "Hepatitis" (a prefix of
    three letters or more), "Mujahedeen" / "Mujahadin" (see `_skeleton`)?"""
    for a in fact:
        for b in others:
            if a == b or (min(len(a), len(b)) >= 3 and not a.isdigit() and (a.startswith(b) or b.startswith(a))):
                return True
            if _skeleton(a) and _skeleton(a) == _skeleton(b):
                return True
    return False


def swapped_fact(sentence: str, passage_text: str, question: str = "") -> str | None:
    """A number or name the sentence adds whose neighbouring words the passage binds to another number or name
    (and never to it), or None. "8 people were injured" against "left 8 dead and about 100 injured" -> "8".

    Lenient on purpose: a neighbour the passage does not have (a paraphrase, "killed" for "dead") is no evidence
    either way; only a word the passage ties to a different fact is. For names, whose verbs can stand far away
    ("..., said spokeswoman Victoria Nuland"), that tie counts only in passage sentences without the name."""
    lower = _lower_words(passage_text)
    asked = _asked(question)
    # the question's own numbers and names are the user's words: they neither need binding nor bind others
    claim = [(t, "given" if k != "word" and t in asked else k) for t, k in _tokens(sentence, lower)]
    spans = split_sentences(passage_text) or [(0, len(passage_text))]
    passage = [_tokens(passage_text[a:b], lower) for a, b in spans]
    for kind in ("num", "name"):
        bound: dict[frozenset[str], set[str]] = {}
        for word, facts in _bindings(claim, kind, BIND_WINDOW):
            for fact in facts:
                bound.setdefault(fact, set()).add(word)
        # the noun a number counts ("8 people", "210 members") is counted elsewhere too ("three dozen people"):
        # it binds the number for agreement, but is no evidence that the number was swapped
        counted = {b for (_, k), (b, kb) in zip(claim, claim[1:], strict=False) if k == kind == "num" and kb == "word"}
        mentioned = {t for t, k in claim if k != "word"}
        for key, neighbours in bound.items():
            agree = conflict = False
            for tokens in passage:
                at = _same_fact(key, {t for t, _ in tokens})
                for word, facts in _bindings(tokens, kind, BIND_WINDOW):
                    if word in neighbours and any(_same_fact(f, key) for f in facts):
                        agree = True
                for word, facts in _bindings(tokens, kind, BOUND_ELSEWHERE):
                    if (
                        word in neighbours - counted
                        and not any(_same_fact(f, mentioned) for f in facts)  # a fact the answer does not name
                        and (kind == "num" or not at)
                    ):
                        conflict = True
            if conflict and not agree:
                return " ".join(sorted(key))
    return _swapped_outcome(claim, passage)


def _outcomes(tokens: list[tuple[str, str]]) -> dict[frozenset[str], set[str]]:
    """Each number of a sentence with the outcomes it counts: an outcome word is the nearest number's, at most
    BIND_WINDOW away, and between two as near, the one before it ("left 8 dead and about 100 injured": "dead" is
    the 8's)."""
    groups = _facts(tokens, "num")
    found: dict[frozenset[str], set[str]] = {}
    if not groups:
        return found
    for p, (word, kind) in enumerate(tokens):
        if kind != "word" or word not in _OUTCOME:
            continue
        # distance, then 0 for a number before the word (1 after): the nearest, and the earlier of a tie
        d, _, fact = min((max(a - p, p - b, 0), a > p, g) for a, b, g in groups)
        if d <= BIND_WINDOW:
            found.setdefault(fact, set()).add(_OUTCOME[word])
    return found


def _swapped_outcome(claim: list[tuple[str, str]], passage: list[list[tuple[str, str]]]) -> str | None:
    """A number the sentence counts as one outcome ("35 ... injured") that the passage counts only as another
    ("the deaths of 35 civilians"), or None. A number the passage also gives as the sentence's outcome is fine."""
    said = _outcomes(claim)
    if not said:
        return None
    # the passage's counts, read once for all of the sentence's numbers
    counted = [item for tokens in passage for item in _outcomes(tokens).items()]
    for key, outcomes in said.items():
        there = {kind for fact, kinds in counted if _same_fact(fact, key) for kind in kinds}
        if there and not outcomes & there:
            return " ".join(sorted(key))
    return None


def mistitled(sentence: str, passage_text: str, question: str = "") -> str | None:
    """A name the sentence adds that the passage titles as something other than what the question asks for, or
    None. "Albania's foreign minister is Sali Berisha" against "Albanian Prime Minister Sali Berisha" -> "berisha
    sali": the question's "foreign minister" and the passage's title "Prime Minister" end in the same word with
    another word before it, one the question does not have.

    Only a title written in front of the name (a run of capitalised words) counts, and only a differing word right
    before a word the question shares; a title the passage does not give ("Gobadi of the Council") is no evidence
    either way, and a passage that titles the name as asked clears it."""
    lower = _lower_words(passage_text)
    placed_question = _placed_tokens(question, set())
    asked = {t for t, _, _ in placed_question}
    # each of the question's words with the words written right before it ("minister" -> {"foreign"})
    before: dict[str, set[str]] = {}
    for a, b in _compounds(question, placed_question):
        before.setdefault(b, set()).add(a)
    claim = _tokens(sentence, lower)
    names = [g for _, _, g in _facts(claim, "name") if not _same_fact(g, asked)]
    if not before or not names:
        return None
    spans = split_sentences(passage_text) or [(0, len(passage_text))]
    # a title stands right before its name, never across a comma ("... Kobler, Prime Minister Sali Berisha")
    clauses = [c for a, b in spans for c in re.split(r"[,;:()\"“”]", passage_text[a:b])]
    # each run of capitalised words, with the pairs of its clause written side by side: read once for all names
    runs = []
    for clause in clauses:
        placed = _placed_tokens(clause, lower)
        joined = set(_compounds(clause, placed))
        runs += [(run, joined) for run in _runs([(t, k) for t, k, _ in placed])]
    for name in names:
        conflict, agree = set(), set()  # the question's words the passage titles the name with otherwise / as asked
        for run, joined in runs:
            at = [i for i, t in enumerate(run) if _same_fact(name, {t})]
            if not at or not all(_same_fact(frozenset({w}), set(run)) for w in name):
                continue
            title = run[: at[0]]
            for modifier, head in zip(title, title[1:], strict=False):
                if head not in before or head in name or (modifier, head) not in joined:
                    continue
                # "Albanian" for "Albania's": a word's other forms count as the word (`_same_fact`)
                if _same_fact(frozenset({modifier}), before[head]):
                    agree.add(head)
                elif not _same_fact(frozenset({modifier}), asked):
                    conflict.add(head)
        if conflict - agree:
            return " ".join(sorted(name))
    return None


# "Who is the leader of ...?", "who was the first president of ...": the role the answer's name must hold
_ROLE_QUESTION = re.compile(
    r"\bwho (?:is|was|are|were) (?:the|a|an) (?P<role>(?:[a-z]+ ){0,2}?[a-z]+) (?:of|for|at|in|on|to)\b",
    re.IGNORECASE,
)


# Offices and leading roles: a name is said to hold one only where the passage says so. Not "author", "man" or
# "character": who wrote or played something is told by other words ("by Shahriar Kia", "Warren Beatty as ...").
_OFFICES = frozenset(
    "leader leaders head chief chiefs president chairman chairwoman chair director founder ceo minister secretary "
    "governor mayor king queen commander spokesman spokeswoman spokesperson ambassador envoy".split()
)


def unstated_role(question: str, passage_words: set[str]) -> str | None:
    """The office a "who is the ROLE of X?" question asks about, when the passage (`passage_words`: its
    `content_words`) never names that office in any form, or None. A name the passage gives (as "Shahin Gobadi of
    the National Council ... told AP") is then no answer to "who is the leader of the National Council?": the
    words of the question need not be in the passage anywhere else, but this one is the claim itself. Forms count
    ("lead" / "leader", see `_same_fact`)."""
    m = _ROLE_QUESTION.search(question)
    if not m:
        return None
    role = words(m.group("role"))[-1].lower()
    if role not in _OFFICES or _same_fact(frozenset({stem(role)}), passage_words):
        return None
    return role


def _runs(tokens: list[tuple[str, str]]) -> list[list[str]]:
    """The runs of capitalised words of a sentence's tokens, each in order ("albanian prime minister sali berisha")."""
    return [[t for t, _ in tokens[a : b + 1]] for a, b, _ in _facts(tokens, "name")]


# a negation, in any apostrophe ("don't", "don’t"); "no" and "without" are left out: they quantify more than negate
_NEGATION = re.compile(r"\b(?:not|never|nor|neither|cannot)\b|n['’`]t\b", re.IGNORECASE)


def support(sentence: str, passage_text: str, question: str = "") -> float:
    """How well a passage backs a sentence, 0..1. Zero when a number or name the sentence adds is missing.

    Words taken from the question do not need to be in the passage (the user supplied them); what the
    sentence adds does. A terse answer ("2012") is judged together with the question it answers.
    """
    asked = content_words(question)
    claim = content_words(sentence)
    new = claim - asked
    have = content_words(passage_text)
    if not numbers(sentence) - numbers(question) <= numbers(passage_text):
        return 0.0
    names = _names(sentence)
    first = words(sentence)[:1]
    if first and _opens_with_name(first[0], _lower_words(passage_text) | _lower_words(question)):
        names.add(stem(first[0].lower()))  # "Iraq offered ..." names a country as much as "... by Iraq" does
    missing = names - asked - have
    if missing:
        # a name the passage lacks is invented, unless it is the passage's name spelled another way
        spelled = {_skeleton(w) for w in have} - {""}
        if any(_skeleton(name) not in spelled for name in missing):
            return 0.0
    if not new:
        return 0.0  # restating the question answers nothing
    if swapped_fact(sentence, passage_text, question):
        return 0.0  # every word is in the passage, but a number or name is bound to something else there
    if _NEGATION.search(sentence) and not _NEGATION.search(question):
        start, end = best_quote(sentence, passage_text)
        if not _NEGATION.search(passage_text[start:end]):
            return 0.0  # "urged them not to accept" from a passage that urges them to accept
    if mistitled(sentence, passage_text, question):
        return 0.0  # the passage names someone, but as the holder of another office than the one asked about
    if names - asked and unstated_role(question, have):
        return 0.0  # a name given as "the leader of X" from a passage that calls nobody a leader
    if len(new) < SHORT_ANSWER_WORDS:
        # a short answer: the passage must also be about what was asked
        return min(len(new & have) / len(new), SHORT_ANSWER_TOPIC_FACTOR * len(asked & have) / max(1, len(asked)))
    return len(new & have) / len(new)


# ---- non-answers (issue 14.3) ------------------------------------------------------------------------------

# What a question asks for, from its first question word: a number, a date, a place or a name. Questions led by
# what / why / how (other than "how many" ...) ask for no kind of thing: their answers are not held to one.
_QUESTION_WORD = re.compile(r"\b(?:who|whom|whose|what|which|when|where|why|how)\b", re.IGNORECASE)
_ASKS = re.compile(
    r"(?P<number>how (?:many|much|old|long|far|tall)\b|(?:what|which) (?:number|percentage|amount)\b)"
    r"|(?P<date>(?:what|which) (?:calendar )?(?:year|month|day|date|decade|century|season)\b"
    # "when did / was ... ?" asks for a time; "when do you need to ...?" for a condition, which is no date
    r"|when (?:did|was|were|will|had|has|have|would)\b)"
    r"|(?P<place>(?:what|which) (?:country|city|state|town|province|place|region|continent|county|island|location)\b"
    r"|where\b)"
    # "who is / were X?" asks what X is ("who were the Dadaists"), not for a name; "more than whom?" asks for
    # what is compared ("every other country combined"), which need not be a name either
    r"|(?P<name>(?<!than )(?:who\b(?! (?:is|are|was|were)\b)|whom\b|whose\b))"
    r"|(?P<thing>which\b)",
    re.IGNORECASE,
)
# A question for a date or a year, which only a number or a month answers (a weekday, a season, a name do not)
_CALENDAR = re.compile(r"\b(?:what|which) (?:calendar )?(?:date|year)\b", re.IGNORECASE)
_DATE_WORDS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday spring summer autumn fall winter century centuries "
    "decade decades ago era dynasty reign yesterday today tomorrow".split()
)
_PLACE_PREPOSITION = frozenset(
    "in at on near inside within between from into across along off outside throughout beneath behind above below "
    "beside around north south east west".split()
)
# a count can be a quantifier as well as a number ("a unanimous verdict": all twelve)
_HOW_MANY_WORDS = _NUMBER_WORDS | frozenset(
    "one half single once twice all none no both unanimous majority minority".split()
)
# Words that make a sentence a statement rather than a label: auxiliaries, and the endings of verb forms. Loose on
# purpose (plural nouns end in -s too): only a line with none of them is a fragment ("Martin Kobler cartoon").
_AUXILIARIES = frozenset(
    "is are was were be been being am has have had do does did will would can could may might shall should must "
    "became become becomes means meant".split()
) | frozenset(  # irregular past tenses, which no ending shows
    "began bought brought built came caught chose drew drove fell felt flew fought found gave got grew held hid hit "
    "kept knew laid led left lost made met paid put ran read rose said sang sat saw sent set shot sold spent spoke "
    "stood stole struck swam taught thought threw told took won wore wrote".split()
)
FRAGMENT_MAX_WORDS = 3  # a verbless answer adding more content words than this is a caption or heading, no answer
NON_ANSWER_MAX_NEW = 3  # a who / where answer without a name or place adding at most this many words restates
_REASON = re.compile(r"\b(?:because|due to|owing to|as a result of)\b", re.IGNORECASE)


def asked_kind(question: str) -> str | None:
    """What kind of thing the question's first question word asks for: "number", "date", "place", "name",
    "thing" (any content word the question lacks) or None ("Who wrote ...?" -> "name"; "In the AP report, which
    spokesman ...?" -> "thing"; "What happened when ...?" -> None)."""
    lead = _QUESTION_WORD.search(question)
    if not lead:
        return None
    m = _ASKS.match(question, lead.start())
    return m.lastgroup if m else None


def holds_kind(text: str, kind: str, question: str, passages_text: str = "") -> bool:
    """Does `text` hold a thing of `kind` that the question does not already hold?"""
    asked = _asked(question)
    lower = _lower_words(passages_text) | _lower_words(question)
    tokens = [(t, k) for t, k in _tokens(text, lower) if t not in asked]
    names = any(k == "name" for _, k in tokens)
    nums = any(k == "num" for _, k in tokens)
    if kind == "number":
        return nums or any(w.lower() in _HOW_MANY_WORDS for w in words(text) if w.lower() not in asked)
    if kind == "date":
        if _CALENDAR.search(question):
            return nums  # "On what date ...?" is not answered by "Monday", nor "In what year ...?" by a name
        return nums or names or any(t in _DATE_WORDS for t, _ in tokens)
    if kind == "place":
        if names:
            return True
        plain = [w for w in words(text) if w.lower() not in CHECK_STOP or w.lower() in _PLACE_PREPOSITION]
        return any(
            w.lower() in _PLACE_PREPOSITION and any(stem(x.lower()) not in asked for x in plain[i + 1 : i + 4])
            for i, w in enumerate(plain)
        )
    if kind == "thing":  # "which X": whatever X is, the answer must name something the question does not
        return bool(content_words(text) - asked)
    return names


OUTMATCHED_BY = 2  # question words a sentence with another number must hold beyond the answer's own sentence


def outmatched_number(answer_text: str, question: str, passage_texts: list[str]) -> str | None:
    """For a "how many" question (`asked_kind` "number": the caller asks only for those), a number the answer
    gives whose sentence in the passages holds fewer of the question's words than a sentence giving another
    number, or None. "How many died when forces raided the camp twice?" answered with the 35 of "an army operation
    in May at Camp Ashraf ... the deaths of 35 civilians" while another passage says "It was twice raided by Iraqi
    security forces, leaving more than three dozen people dead": that sentence holds every question word the 35's
    does and more, so it, not the 35, is about what was asked.

    A sentence is read with the one before it ("... known as Camp Ashraf. It was twice raided ..."). Only a strict
    superset of the question's words, by at least OUTMATCHED_BY, outmatches: two figures for the same thing (the
    sources disagree) are both as well matched, and neither is dropped."""
    asked = _asked(question)
    wanted = content_words(question)
    lower = _lower_words("\n".join(passage_texts))
    given = {t for t, k in _tokens(answer_text, lower) if k == "num" and t not in asked}
    if not given:
        return None
    holding: list[set[str]] = []
    others: list[set[str]] = []
    for text in passage_texts:
        spans = split_sentences(text) or [(0, len(text))]
        for i, (a, b) in enumerate(spans):
            counts = {t for t, k in _tokens(text[a:b], lower) if k == "num" and t not in asked}
            if not counts:
                continue
            with_before = text[spans[i - 1][0] if i else a : b]
            matched = content_words(with_before) & wanted
            (holding if counts & given else others).append(matched)
    if not holding:
        return None
    best = max(holding, key=len)
    if any(best < other and len(other - best) >= OUTMATCHED_BY for other in others):
        return " ".join(sorted(given))
    return None


def restates_itself(sentence: str, question: str) -> bool:
    """A reason that gives nothing beyond its own sentence and the question: "X turned down the offer because
    it rejected the offer" (the reason adds one past-tense verb and repeats the rest), "rejected it because it
    rejected it"."""
    m = _REASON.search(sentence)
    if not m:
        return False
    main, reason = content_words(sentence[: m.start()]), content_words(sentence[m.end() :])
    if not reason:
        return True
    added = reason - main - content_words(question)
    if not added:
        return True
    verbs = [w for w in words(sentence[m.end() :]) if stem(w.lower()) in added]
    return len(added) == 1 and bool(reason & main) and all(w.lower().endswith("ed") for w in verbs)


def is_fragment(sentence: str, question: str) -> bool:
    """A line without a verb that adds more than a few words: a caption, a heading, a credit, not an answer.
    A short one ("Feb. 9.", "Victoria Nuland.") is an answer, and so is one that holds what was asked for."""
    kind = asked_kind(question)
    if kind and holds_kind(sentence, kind, question):
        return False
    ws = words(sentence)
    if any(w.lower() in _AUXILIARIES or (w.islower() and w.endswith(("ed", "ing", "s", "en"))) for w in ws):
        return False
    return len(content_words(sentence) - content_words(question)) > FRAGMENT_MAX_WORDS


def best_quote(sentence: str, passage_text: str) -> tuple[int, int]:
    """The span of the passage sentence (or adjacent pair) that best covers `sentence`."""
    claim = content_words(sentence)
    spans = split_sentences(passage_text) or [(0, len(passage_text))]
    best, best_score = spans[0], -1.0
    candidates = spans + [(a[0], b[1]) for a, b in zip(spans, spans[1:], strict=False)]
    for start, end in candidates:
        covered = content_words(passage_text[start:end])
        # favour coverage, then shortness: a pair of sentences must cover clearly more than one sentence
        pair = (start, end) not in spans
        score = (
            len(claim & covered) / max(1, len(claim))
            - (QUOTE_PAIR_PENALTY if pair else 0.0)
            - QUOTE_LENGTH_PENALTY * (end - start) / 100
        )
        if score > best_score:
            best, best_score = (start, end), score
    start, end = best
    while start < end and passage_text[start].isspace():
        start += 1
    return start, end


# A sentence opening with a word that points back at the sentence before ("This was announced ...", "It ...")
_ANAPHOR = re.compile(r"(?:this|that|these|those|it|its|they|their|he|his|she|her|such)\b", re.IGNORECASE)


def check_answer(question: str, raw: str, passages: list[Passage]) -> Answer:
    """Turn the model's raw reply into an Answer whose every citation has been verified."""
    answer = Answer(question=question, text="", abstained=False, retrieved=passages, raw=raw)
    reply = _ECHOED_MARKER.sub("", raw.strip())
    if not reply or DECLINE_PHRASE.search(reply):
        return declined(answer, "model")
    kept_sentences: list[str] = []
    citation_index: dict[tuple[str, int, int], int] = {}
    # what each passage may support: its text without instruction-like lines (see `evidence`)
    texts = [evidence(p.chunk.text) for p in passages]
    asked = content_words(question)
    orphaned = False  # the last claim was removed
    for start, end in split_sentences(reply):
        sentence = reply[start:end].strip()
        # attribution is not a claim: "According to [1], X" is checked as "X" (see `_attributed`)
        full, core, who = _attributed(sentence)
        with_who, without_who = _tidy(re.sub(_MARKERS, "", full)), _tidy(re.sub(_MARKERS, "", core))
        claim_text = without_who
        if not with_who or DECLINE_PHRASE.search(with_who):
            continue
        if not content_words(with_who) - asked and not numbers(with_who):
            # connective text ("In short:") carries no claim to check; keep it only between claims
            if claim_text and kept_sentences:
                kept_sentences.append(claim_text)
            continue
        if restates_itself(claim_text, question) or is_fragment(claim_text, question):
            answer.unsupported.append(claim_text)
            orphaned = True
            continue
        if orphaned and _ANAPHOR.match(claim_text):
            # "This was announced after ..." speaks of the sentence before, which was removed: shown alone, it
            # would say something else ("this" becomes whatever the shown sentence before it was)
            answer.unsupported.append(claim_text)
            continue
        # "According to AP, ..." is shown, and checked, only with a passage that names AP
        named = [bool(who) and who <= content_words(text) | asked for text in texts]
        scores = [support(with_who if n else without_who, text, question) for n, text in zip(named, texts, strict=True)]
        cited = marker_numbers(sentence)
        scored = {n: scores[n - 1] for n in cited if 1 <= n <= len(passages)}
        valid = [n for n, s in scored.items() if s >= SUPPORT_MIN]
        if not valid:
            # the marker pointed at nothing or at a passage that does not back the sentence:
            # attribute it to the best supporting passage, if there is one
            ranked = sorted(((score, i) for i, score in enumerate(scores, 1)), reverse=True)
            if ranked and ranked[0][0] >= SUPPORT_MIN:
                valid, scored = [ranked[0][1]], {ranked[0][1]: ranked[0][0]}
        if not valid:
            answer.unsupported.append(claim_text)
            orphaned = True
            continue
        orphaned = False
        if all(named[n - 1] for n in valid):
            claim_text = with_who
        markers = []
        for n in dict.fromkeys(valid):
            chunk = passages[n - 1].chunk
            q_start, q_end = best_quote(claim_text, texts[n - 1])  # offsets into chunk.text: same length
            key = (chunk.id, q_start, q_end)
            if key not in citation_index:
                citation_index[key] = len(answer.citations) + 1
                first = chunk.start_line + chunk.text.count("\n", 0, q_start)
                last = chunk.start_line + chunk.text.count("\n", 0, max(q_start, q_end - 1))
                answer.citations.append(
                    Citation(
                        n=citation_index[key],
                        source=chunk.source,
                        start_line=min(first, chunk.end_line),
                        end_line=min(last, chunk.end_line),
                        page=chunk.page,
                        quote=chunk.text[q_start:q_end].strip(),
                        score=round(scored[n], 3),
                        chunk_id=chunk.id,
                    )
                )
            markers.append(f"[{citation_index[key]}]")
        claim_text = _as_written(claim_text, " ".join(texts[n - 1] for n in valid))
        body, stop = (claim_text[:-1], claim_text[-1]) if claim_text[-1] in ".!?" else (claim_text, ".")
        sentence_out = f"{body.rstrip()} {''.join(markers)}{stop}"
        if sentence_out not in kept_sentences:  # small models sometimes repeat themselves verbatim
            kept_sentences.append(sentence_out)
    while kept_sentences and not MARKER.search(kept_sentences[-1]):
        kept_sentences.pop()  # a trailing connective with nothing after it
    if not answer.citations:
        return declined(answer, "checks")
    answer.text = " ".join(kept_sentences)
    kind = asked_kind(question)
    shown = MARKER.sub("", answer.text)
    if kind == "number" and outmatched_number(shown, question, texts):
        return declined(answer, "checks")  # the count of something other than what was asked
    if kind and not holds_kind(shown, kind, question, "\n".join(texts)):
        # "Who told them to disband?" answered without naming anyone restates the question: no answer. Who and
        # where are also answered by a description ("the group that bears the burden"): only a short one goes.
        if kind not in ("name", "place") or len(content_words(shown) - asked) <= NON_ANSWER_MAX_NEW:
            return declined(answer, "checks")
    return answer


# An initialism with spaces, as the 1.5B model writes "U.S." ("the U. S. Embassy"); `_as_written` closes it up
# where the cited passage writes it so.
_SPACED_INITIALISM = re.compile(r"\b(?:[A-Z]\. ){1,4}[A-Z]\.")


def _as_written(sentence: str, passage_text: str) -> str:
    """`sentence` with each spaced initialism written as the passage writes it ("U. S." -> "U.S.")."""

    def close(m: re.Match) -> str:
        tight = m.group().replace(" ", "")
        return tight if tight in passage_text else m.group()

    return _SPACED_INITIALISM.sub(close, sentence)


def _tidy(text: str) -> str:
    """Mend the punctuation that removing markers leaves behind ("Nuland, ." -> "Nuland.")."""
    # Runs of white space become one space first, as they do last: the same result, and no pattern below spends
    # time proportional to the square of a run a looping model wrote.
    text = re.sub(r"\s{2,}", " ", text.strip())
    text = _DANGLING.sub("", text)  # "as stated in ,, and" once its markers are gone
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"(?<![,;:])[,;:]+([.!?])", r"\1", text)  # from a run's first mark only: linear, same result
    return re.sub(r"\s{2,}", " ", text)


def declined(answer: Answer, by: str) -> Answer:
    """Make `answer` the explicit decline; `by` names the stage that declined (see qa.stages)."""
    answer.declined_by = by
    answer.abstained = True
    answer.text = DECLINE_TEXT
    answer.citations = []
    return answer
