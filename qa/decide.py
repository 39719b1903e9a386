"""The decline decision after the relevance gate: do the passages the model read state the answer?

Three signals, each cheap once the judge has run, combined by a small logistic model:

- the judge's log-odds: log(P(yes) / P(no)) of the model asked "Does any source above state the answer?";
- the best dense cosine between the question and a passage (the gate's number);
- the IDF-weighted share of the question's content words that the best passage contains (a question whose rare
  words are nowhere in the passages is seldom answered by them; IDF from the index's keyword table, so a word
  common in *these* documents counts little).

P(answer) = sigmoid(bias + w . features); below `threshold` qa declines. The weights and the threshold are fitted
per model (a smaller model's P(yes) means something else) on the held-apart ClapNQ calibration questions only
(`python eval/fit_decline.py`), and live in qa/data/decline_calibration.json, keyed by the model file's
SHA-256 (a builtin name stands for its known SHA-256). A user's own fits go to `<cache_dir>/decline_calibration.json`,
read after the shipped file. A model with no entry falls back to the judge alone at DEFAULT_JUDGE_THRESHOLD
(`qa doctor` says so); an explicit `judge_threshold` setting always means "the judge alone at this threshold".

The inputs are read from the passages the judge saw (their `dense` and text), so the decision does not care how
they were chosen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from qa.errors import ConfigError
from qa.text import CHECK_STOP, content_words, stem, words
from qa.types import Passage

FEATURES = ("judge_logit", "best_dense", "overlap")
CALIBRATION_FILE = "decline_calibration.json"
# The judge alone at 0.6: what the 1.5B model used before per-model fits (eval/calibrate_judge.py, 40 ClapNQ
# questions). A model without a fit gets this, and `qa doctor` says its declines are uncalibrated.
DEFAULT_JUDGE_THRESHOLD = 0.6
_P_CLIP = 1e-4  # P(yes) of exactly 0 or 1 would give infinite log-odds

# (total chunks, {term: chunks containing it}) for a list of terms: the index's keyword table (Store.term_counts)
TermCounts = Callable[[list[str]], tuple[int, dict[str, int]]]


@dataclass(frozen=True)
class Features:
    judge_logit: float
    best_dense: float
    overlap: float

    def vector(self) -> list[float]:
        return [getattr(self, name) for name in FEATURES]


@dataclass(frozen=True)
class Decision:
    """How the judge stage decides. `kind` "fitted": the logistic model; "judge": P(yes) >= threshold alone
    (a threshold of 0 turns the judge off)."""

    kind: str
    threshold: float
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    model: str = ""
    calibrated: bool = False
    source: str = ""  # where the numbers came from, for `qa doctor`
    fitted: dict[str, Any] = field(default_factory=dict, compare=False)  # what the fit measured, for people

    @classmethod
    def judge_only(cls, threshold: float, source: str = "judge_threshold setting") -> Decision:
        return cls("judge", threshold, calibrated=True, source=source)

    @property
    def off(self) -> bool:
        return self.kind == "judge" and self.threshold <= 0

    def probability(self, f: Features) -> float:
        """P(the passages state the answer) under this decision's model (for "judge": P(yes) itself)."""
        if self.kind == "judge":
            return 1.0 / (1.0 + math.exp(-f.judge_logit))
        z = self.bias + sum(w * x for w, x in zip(self.weights, f.vector(), strict=True))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def answers(self, f: Features) -> bool:
        return self.off or self.probability(f) >= self.threshold

    def describe(self) -> str:
        if self.kind == "judge":
            if self.off:
                return "the judge is off (judge_threshold 0)"
            return f"the judge alone: decline below P(yes) {self.threshold:g} ({self.source})"
        return (
            f"fitted for {self.model}: judge log-odds, best dense cosine and IDF-weighted word overlap; "
            f"decline below P(answer) {self.threshold:.3f} ({self.source})"
        )


# ---- the three signals ----------------------------------------------------------------------------------


def judge_logit(p_yes: float) -> float:
    p = min(1 - _P_CLIP, max(_P_CLIP, p_yes))
    return math.log(p / (1 - p))


def best_dense(passages: Sequence[Passage]) -> float:
    """The gate's number: the best cosine of a passage the dense search saw (0 when none did)."""
    return max((p.dense for p in passages if p.dense is not None), default=0.0)


def question_terms(question: str) -> list[str]:
    """The question's content words, lower-cased as written (the keyword index stems them itself)."""
    seen: dict[str, None] = {}
    for w in words(question.lower()):
        if w not in CHECK_STOP and (len(w) > 1 or w.isdigit()):
            seen.setdefault(w, None)
    return list(seen)


def overlap(question: str, texts: Sequence[str], counts: TermCounts | None) -> float:
    """The largest IDF-weighted share of the question's content words that one passage contains, 0..1.

    IDF is BM25's, log(1 + (N - n + 0.5) / (n + 0.5)), from the index's keyword table; without one (`counts`
    None) every word weighs the same."""
    terms = question_terms(question)
    if not terms or not texts:
        return 0.0
    if counts is None:
        idf = dict.fromkeys(terms, 1.0)
    else:
        total, found = counts(terms)
        idf = {t: math.log(1 + (total - found.get(t, 0) + 0.5) / (found.get(t, 0) + 0.5)) for t in terms}
    weight = sum(idf.values()) or 1.0
    best = 0.0
    for text in texts:
        have = content_words(text)
        best = max(best, sum(idf[t] for t in terms if stem(t) in have) / weight)
    return best


def features(question: str, passages: Sequence[Passage], p_yes: float, counts: TermCounts | None) -> Features:
    return Features(
        judge_logit(p_yes), best_dense(passages), overlap(question, [p.chunk.text for p in passages], counts)
    )


# ---- fitting (eval/fit_decline.py) ----------------------------------------------------------------------


def fit_logistic(rows: Sequence[Sequence[float]], labels: Sequence[bool], l2: float = 1.0) -> tuple[list[float], float]:
    """Weights and bias of an L2-regularised logistic regression (Newton's method; the bias is not penalised).

    The features are standardised for the penalty and the weights returned on the original scale, so
    `probability` needs no scaler. With ~60 calibration questions the penalty keeps three weights sane."""
    import numpy as np

    x = np.asarray(rows, dtype=float)
    y = np.asarray(labels, dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = w[1:] / scale
    bias = w[0] - float((w[1:] * mean / scale).sum())
    return [float(v) for v in weights], float(bias)


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random answerable question scores above a random unanswerable one), ties count half."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


# ---- which decision a model gets ------------------------------------------------------------------------

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def model_identity(llm: str, llm_model: str) -> tuple[str, str]:
    """(name, SHA-256 or "") of the answering model: a builtin's known SHA-256, a .gguf file's own (hashed once
    per process, ~1 s per GB), "" for a hub repo or an API model (matched by name)."""
    if llm != "local":
        return llm_model, ""
    from qa.generators.llama_cpp import SHIPPED, file_sha256

    if llm_model in SHIPPED:
        return llm_model, SHIPPED[llm_model].sha256
    path = Path(llm_model).expanduser()
    if not path.is_file():
        return llm_model, ""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return path.name, _SHA_CACHE[key]


def shipped_file() -> Path:
    return Path(str(resources.files("qa") / "data" / CALIBRATION_FILE))


def user_file(cache_dir: Path) -> Path:
    return Path(cache_dir) / CALIBRATION_FILE


def read_calibrations(path: Path) -> list[dict]:
    """The entries of one calibration file ([] when it does not exist). ConfigError naming the file and the
    entry when it is not what eval/fit_decline.py writes."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"decline calibration file {path}: not valid JSON ({exc})") from None
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"decline calibration file {path}: expected an object with a 'models' list")
    for n, entry in enumerate(entries, 1):
        problem = _entry_problem(entry)
        if problem:
            raise ConfigError(f"decline calibration file {path}: model entry {n}: {problem}")
    return entries


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _entry_problem(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "expected an object"
    if not isinstance(entry.get("model"), str) or not entry["model"]:
        return "'model' must be the model's name"
    if not isinstance(entry.get("sha256", ""), str):
        return "'sha256' must be text"
    weights = entry.get("weights")
    if not isinstance(weights, dict) or set(weights) != set(FEATURES) or not all(map(_number, weights.values())):
        return f"'weights' must give a number for each of {', '.join(FEATURES)}"
    if not _number(entry.get("bias")):
        return "'bias' must be a number"
    if not _number(entry.get("threshold")) or not 0 <= entry["threshold"] <= 1:
        return "'threshold' must be a number between 0 and 1"
    return ""


def _from_entry(entry: dict, path: Path) -> Decision:
    return Decision(
        "fitted",
        float(entry["threshold"]),
        tuple(float(entry["weights"][name]) for name in FEATURES),
        float(entry["bias"]),
        model=entry["model"],
        calibrated=True,
        source=f"{path.name}, {entry.get('fitted_on', 'fitted')}",
        fitted=entry,
    )


def find_entry(entries: list[dict], name: str, sha256: str) -> dict | None:
    """The last entry for this model: by SHA-256 when both sides know it, else by name."""
    found = None
    for entry in entries:
        theirs = entry.get("sha256", "")
        both = bool(sha256 and theirs)
        if (both and theirs == sha256) or (not both and entry["model"] == name):
            found = entry
    return found


def decision_for(
    llm: str, llm_model: str, judge_threshold: float | None, cache_dir: Path, files: Sequence[Path] | None = None
) -> Decision:
    """The decision this configuration gets: an explicit judge_threshold; else this model's fit (the user's
    file, then the shipped one); else the judge alone at DEFAULT_JUDGE_THRESHOLD, marked uncalibrated."""
    if judge_threshold is not None:
        return Decision.judge_only(judge_threshold)
    name, sha = model_identity(llm, llm_model)
    for path in files if files is not None else (user_file(cache_dir), shipped_file()):
        entry = find_entry(read_calibrations(path), name, sha)
        if entry is not None:
            return _from_entry(entry, path)
    return Decision(
        "judge",
        DEFAULT_JUDGE_THRESHOLD,
        model=name,
        calibrated=False,
        source=f"no decline calibration for {name}; the default",
    )


def settings_decision(settings) -> Decision:
    """The decision for the model the settings name (what `qa doctor` reports)."""
    s = settings
    return decision_for(s.llm, s.llm_model, s.judge_threshold, s.cache_dir)


def generator_decision(settings, generator_name: str) -> Decision:
    """The decision for the model that actually judges, by its generator's name: llama.cpp's is
    "local:<llm_model>", the settings' own model; any other generator (a test's fake, an object passed to
    Assistant) is looked up by its name, so it never borrows another model's fit."""
    llm, _, model = generator_name.partition(":")
    if llm == settings.llm == "local" and model == settings.llm_model:
        return settings_decision(settings)
    return decision_for("other", generator_name, settings.judge_threshold, settings.cache_dir)
