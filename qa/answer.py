"""Answering: the checks that decide what of the model's reply is shown as cited fact (the prompt is qa.prompts).

The model is asked to cite [n] after each sentence, but nothing it writes is trusted as is. Each sentence is
checked against the passage it cites (its content words, and every number and name in it, must occur there).
A wrong marker is moved to a passage that supports the sentence or dropped; a sentence that no passage
supports is removed from the answer and listed in `unsupported`. If nothing supported is left, or retrieval
found nothing relevant, the answer is an explicit decline.
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
    missing = _names(sentence) - asked - have
    if missing:
        # a name the passage lacks is invented, unless it is the passage's name spelled another way
        spelled = {_skeleton(w) for w in have} - {""}
        if any(_skeleton(name) not in spelled for name in missing):
            return 0.0
    if not new:
        return 0.0  # restating the question answers nothing
    if len(new) < SHORT_ANSWER_WORDS:
        # a short answer: the passage must also be about what was asked
        return min(len(new & have) / len(new), SHORT_ANSWER_TOPIC_FACTOR * len(asked & have) / max(1, len(asked)))
    return len(new & have) / len(new)


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


def check_answer(question: str, raw: str, passages: list[Passage]) -> Answer:
    """Turn the model's raw reply into an Answer whose every citation has been verified."""
    answer = Answer(question=question, text="", abstained=False, retrieved=passages, raw=raw)
    reply = raw.strip()
    if not reply or DECLINE_PHRASE.search(reply):
        return declined(answer, "model")
    kept_sentences: list[str] = []
    citation_index: dict[tuple[str, int, int], int] = {}
    # what each passage may support: its text without instruction-like lines (see `evidence`)
    texts = [evidence(p.chunk.text) for p in passages]
    for start, end in split_sentences(reply):
        sentence = reply[start:end].strip()
        claim_text = _tidy(MARKER.sub("", sentence))
        if DECLINE_PHRASE.search(claim_text):
            continue
        if not content_words(claim_text) - content_words(question) and not numbers(claim_text):
            # connective text ("In short:") carries no claim to check; keep it only between claims
            if claim_text and kept_sentences:
                kept_sentences.append(claim_text)
            continue
        cited = marker_numbers(sentence)
        scored = {n: support(claim_text, texts[n - 1], question) for n in cited if 1 <= n <= len(passages)}
        valid = [n for n, s in scored.items() if s >= SUPPORT_MIN]
        if not valid:
            # the marker pointed at nothing or at a passage that does not back the sentence:
            # attribute it to the best supporting passage, if there is one
            ranked = sorted(((support(claim_text, text, question), i) for i, text in enumerate(texts, 1)), reverse=True)
            if ranked and ranked[0][0] >= SUPPORT_MIN:
                valid, scored = [ranked[0][1]], {ranked[0][1]: ranked[0][0]}
        if not valid:
            answer.unsupported.append(claim_text)
            continue
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
        body, stop = (claim_text[:-1], claim_text[-1]) if claim_text[-1] in ".!?" else (claim_text, ".")
        sentence_out = f"{body.rstrip()} {''.join(markers)}{stop}"
        if sentence_out not in kept_sentences:  # small models sometimes repeat themselves verbatim
            kept_sentences.append(sentence_out)
    while kept_sentences and not MARKER.search(kept_sentences[-1]):
        kept_sentences.pop()  # a trailing connective with nothing after it
    if not answer.citations:
        return declined(answer, "checks")
    answer.text = " ".join(kept_sentences)
    return answer


def _tidy(text: str) -> str:
    """Mend the punctuation that removing markers leaves behind ("Nuland, ." -> "Nuland.")."""
    text = re.sub(r"\s+([,.;:!?])", r"\1", text.strip())
    text = re.sub(r"[,;:]+([.!?])", r"\1", text)
    return re.sub(r"\s{2,}", " ", text)


def declined(answer: Answer, by: str) -> Answer:
    """Make `answer` the explicit decline; `by` names the stage that declined (see qa.stages)."""
    answer.declined_by = by
    answer.abstained = True
    answer.text = DECLINE_TEXT
    answer.citations = []
    return answer
