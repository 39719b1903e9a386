"""Where answers and declines come from, and where an answer's time goes, in `qa eval` / `qa eval-clapnq`
result files.

    python -m qa.breakdown eval/results/clapnq-full.json [--threshold 0.6]
    python -m qa.breakdown BEFORE.json AFTER.json --time-chart time.png

For each half (answerable, unanswerable) it counts the questions answered and the declines by the stage that
made them: the relevance gate (no passage close enough; the model never ran), the judge (the model's P(yes)
that the passages state the answer was below the threshold) and the citation checks (a draft was written but
no sentence of it was supported by the passage it cited). It also shows how well the judge's P(yes) separates
the two halves (AUROC), which says whether a different threshold could help at all. It reads the result file
only: it does not choose a threshold (that is done on held-apart questions, eval/calibrate_judge.py).

With --time-chart it splits each answer's time into stages (see `time_stages`) and draws every answer as a
stacked bar, and the median of each stage per file, with all the files (before and after) in one picture.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def stage(item: dict, threshold: float) -> str:
    if not item["abstained"]:
        return "answered"
    named = item.get("declined_by")  # every answer object names its stage (qa.stages); older files did not
    if named:
        return {"relevance": "declined by the gate", "judge": "declined by the judge"}.get(
            named,
            "declined by the checks",  # "model" (the draft itself declined) and "checks"
        )
    if "generate" in item["timings"]:
        return "declined by the checks"
    if item.get("judge") is not None and item["judge"] < threshold:
        return "declined by the judge"
    return "declined by the gate"


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a random answerable question's P(yes) > a random unanswerable one's), ties count half."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def breakdown(items: list[dict], threshold: float) -> dict:
    out: dict[str, Any] = {}
    for half, answerable in (("answerable", True), ("unanswerable", False)):
        group = [i for i in items if i["expected"]["answerable"] == answerable]
        counts = {s: 0 for s in ("answered", "declined by the gate", "declined by the judge", "declined by the checks")}
        for i in group:
            counts[stage(i, threshold)] += 1
        judged = [i["judge"] for i in group if i.get("judge") is not None]
        out[half] = {
            "questions": len(group),
            **counts,
            "judge_p_yes_median": round(statistics.median(judged), 3) if judged else None,
        }
    yes = [i["judge"] for i in items if i["expected"]["answerable"] and i.get("judge") is not None]
    no = [i["judge"] for i in items if not i["expected"]["answerable"] and i.get("judge") is not None]
    score = auroc(yes, no)
    out["judge_auroc"] = None if score is None else round(score, 3)
    return out


# ---- where an answer's time goes ---------------------------------------------------------------------------

TIME_STAGES = ("retrieve", "context", "prefill", "first token", "generate", "check", "other")
_COLOURS = ("#7f7f7f", "#9467bd", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#dddddd")


class TimingsError(ValueError):
    """A result file whose items cannot be split into stages (names the file and the item)."""


def time_stages(timings: dict[str, float]) -> dict[str, float]:
    """One answer's seconds per stage, from the `timings` qa.api records; the stages add up to `total`.

    retrieve: up to the passages being shown (a conversation's question rewrite included), less context: the
    choice of sentence windows from the retrieved chunks (qa/context.py; 0 in older files); prefill: the judge,
    which is almost all prompt evaluation (it writes one token); first token: from the draft's start to its
    first token (the draft's own prompt evaluation, short when the judge's prompt is reused); generate: the rest
    of the draft; check: the citation checks; other: what is left of `total` (the gate, handing over)."""
    evidence = timings.get("evidence", timings.get("retrieve", 0.0))
    context = timings.get("context", 0.0)
    prefill = timings.get("judge", 0.0)
    first = max(0.0, timings["first_token"] - evidence - prefill) if "first_token" in timings else 0.0
    parts = {
        "retrieve": max(0.0, evidence - context),
        "context": context,
        "prefill": prefill,
        "first token": first,
        "generate": max(0.0, timings.get("generate", 0.0) - first),
        "check": timings.get("verify", 0.0),
    }
    parts["other"] = max(0.0, timings["total"] - sum(parts.values()))
    return parts


def load_time_stages(path: Path) -> list[dict[str, float]]:
    """Every item's stages; a file that is not a result, or an item without `timings`, is a TimingsError."""
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))["items"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TimingsError(f"{path}: not a qa eval result file ({type(exc).__name__}: {exc})") from None
    if not isinstance(items, list) or not items:
        raise TimingsError(f"{path}: no items to draw")
    rows = []
    for n, item in enumerate(items, start=1):
        timings = item.get("timings") if isinstance(item, dict) else None
        name = item.get("id", "no id") if isinstance(item, dict) else "not an object"
        if not isinstance(timings, dict) or not isinstance(timings.get("total"), int | float):
            missing = "'timings'" if not isinstance(timings, dict) else "'timings.total'"
            raise TimingsError(f"{path}: item {n} ({name}) has no {missing}: written by a qa without timings?")
        rows.append(time_stages(timings))
    return rows


def stage_medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {stage: round(statistics.median(r[stage] for r in rows), 3) for stage in TIME_STAGES}


def write_time_chart(runs: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Left: every answer of every run as a stacked bar (each run sorted by total, runs side by side, one shared
    seconds axis). Right: each run's median per stage, stacked, with the median total above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = sum(len(rows) for rows in runs.values())
    fig, (each, medians) = plt.subplots(
        1,
        2,
        figsize=(min(18, 6 + 0.06 * count + 1.6 * len(runs)), 5.5),
        sharey=True,
        gridspec_kw={"width_ratios": [max(3, count / 25), max(1, 0.8 * len(runs))]},
    )
    x, ticks = 0, []
    for label, rows in runs.items():
        ordered = sorted(rows, key=lambda r: sum(r.values()))
        xs = list(range(x, x + len(ordered)))
        bottom = [0.0] * len(ordered)
        for stage, colour in zip(TIME_STAGES, _COLOURS, strict=True):
            heights = [r[stage] for r in ordered]
            each.bar(xs, heights, 1.0, bottom=bottom, color=colour, linewidth=0)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ticks.append((x + (len(ordered) - 1) / 2, f"{label}\n({len(ordered)} answers)"))
        x += len(ordered) + max(2, count // 30)
    each.set_xticks([t for t, _ in ticks], [name for _, name in ticks], fontsize=8)
    each.set(ylabel="seconds", title="Each answer, shortest to longest")
    for i, rows in enumerate(runs.values()):
        med = stage_medians(rows)
        base = 0.0
        for stage, colour in zip(TIME_STAGES, _COLOURS, strict=True):
            medians.bar(i, med[stage], 0.6, bottom=base, color=colour, label=stage if i == 0 else None)
            base += med[stage]
        total = statistics.median(sum(r.values()) for r in rows)
        medians.annotate(f"{total:.1f} s", (i, base), ha="center", va="bottom", fontsize=8)
    medians.set_xticks(range(len(runs)), list(runs), fontsize=8)
    medians.set_title("Median per stage\n(label: median total)", fontsize=10)
    medians.legend(fontsize=8, loc="upper right")
    fig.suptitle("Where an answer's time goes (prefill = the judge's prompt evaluation)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def labels_for(paths: list[Path], names: list[str] | None = None) -> list[str]:
    """A name per result file for a chart: `names` if given, else the file names, else (before/seeds.json and
    after/seeds.json would merge) the paths. ValueError when they are not one per file, each its own."""
    if names and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} files")
    labels = names or [p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = names or [str(p) for p in paths]
    if len(set(labels)) < len(labels):
        raise ValueError("each file needs its own name")
    return labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qa.breakdown", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "results", type=Path, nargs="+", help="JSON files written by qa eval --json or qa eval-clapnq --json"
    )
    ap.add_argument("--threshold", type=float, default=0.6, help="the judge threshold the run used (default 0.6)")
    ap.add_argument("--time-chart", type=Path, metavar="PNG", help="draw where each answer's time goes, all files")
    ap.add_argument("--labels", nargs="+", help="a name per file for the chart (default: the file names)")
    args = ap.parse_args(argv)
    try:
        labels = labels_for(args.results, args.labels)
    except ValueError as exc:
        print(f"error: --labels: {exc}", file=sys.stderr)
        return 2
    for path in args.results:
        try:
            items = json.loads(path.read_text())["items"]
            result = breakdown(items, args.threshold)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: {path}: not a qa eval result file ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 2
        if len(args.results) > 1:
            print(f"# {path}")
        for half in ("answerable", "unanswerable"):
            print(f"{half}: " + ", ".join(f"{k} {v}" for k, v in result[half].items()))
        print(f"judge AUROC (answerable vs unanswerable): {result['judge_auroc']}")
    if args.time_chart:
        try:
            runs = {label: load_time_stages(path) for label, path in zip(labels, args.results, strict=True)}
        except TimingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for label, rows in runs.items():
            print(f"{label}: median seconds " + ", ".join(f"{k} {v}" for k, v in stage_medians(rows).items()))
        write_time_chart(runs, args.time_chart)
        print(f"wrote {args.time_chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
