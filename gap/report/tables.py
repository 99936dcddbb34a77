"""`summary.csv`/`summary.md` (per method x model x corpus x category, plus an `all` corpus row per method and
model) and `tasks.csv`."""
import csv
import math
from pathlib import Path
from statistics import mean, median

from gap.data.tasks import CATEGORIES
from gap.report.runs import Results, method_order, model_order, next_larger
from gap.report.stats import wilson

SUMMARY_COLUMNS = ("method", "model", "corpus", "category", "runs", "mean", "median", "best", "baseline",
                   "beat_baseline", "beat_baseline_lo", "beat_baseline_hi", "beat_next_larger")
TASK_COLUMNS = ("method", "model", "corpus", "category", "task", "runs", "mean", "baseline")


def groups(results: Results):
    """(method, model, corpus or 'all', category, runs) per group, in report order: by category, then method
    (`gap` first), then model size. Every method is compared with the same unchanged models."""
    for category in CATEGORIES:
        for method in method_order(results):
            for model in model_order(r.model for r in results.runs if r.method == method):
                runs = [r for r in results.runs if (r.method, r.model, r.category) == (method, model, category)]
                if not runs:
                    continue
                for corpus in [*sorted({r.corpus for r in runs}), "all"]:
                    chosen = runs if corpus == "all" else [r for r in runs if r.corpus == corpus]
                    yield method, model, corpus, category, chosen


def _share(flags: list) -> float | None:
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known and len(known) == len(flags) else None


def summary_rows(results: Results) -> list[dict]:
    models = {r.model for r in results.runs} | {m for m, _, _ in results.baselines}
    rows = []
    for method, model, corpus, category, runs in groups(results):
        larger = next_larger(model, models)
        own = [results.baseline(model, r.corpus, category) for r in runs]
        above = [results.baseline(larger, r.corpus, category) if larger else None for r in runs]
        beat = [r.average > b.average if b else None for r, b in zip(runs, own)]
        beat_next = [r.average > b.average if b else None for r, b in zip(runs, above)]
        shown = results.baseline(model, None if corpus == "all" else corpus, category)
        share = _share(beat)
        lo, hi = wilson(sum(beat), len(beat)) if share is not None else (None, None)
        averages = [r.average for r in runs]
        rows.append({"method": method, "model": model, "corpus": corpus, "category": category, "runs": len(runs),
                     "mean": mean(averages), "median": median(averages), "best": max(averages),
                     "baseline": shown.average if shown else None, "beat_baseline": share,
                     "beat_baseline_lo": lo, "beat_baseline_hi": hi, "beat_next_larger": _share(beat_next)})
    return rows


def task_rows(results: Results) -> list[dict]:
    rows = []
    for method, model, corpus, category, runs in groups(results):
        baseline = results.baseline(model, None if corpus == "all" else corpus, category)
        for task in sorted({t for r in runs for t in r.tasks}):
            values = [r.tasks[task] for r in runs if task in r.tasks]
            rows.append({"method": method, "model": model, "corpus": corpus, "category": category, "task": task,
                         "runs": len(values), "mean": mean(values),
                         "baseline": baseline.tasks.get(task) if baseline else None})
    return rows


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_csv(path: Path, rows: list[dict], columns) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_cell(row[c]) for c in columns] for row in rows)


def markdown(rows: list[dict], notes: list[str], sources: list[str]) -> str:
    """The summary as a Markdown table, with the sources and every assumption the numbers rest on."""
    def fmt(row, column):
        value = row[column]
        if value is None:
            return ""
        if column == "beat_baseline":
            return f"{value:.2f} [{row['beat_baseline_lo']:.2f}, {row['beat_baseline_hi']:.2f}]"
        if column == "beat_next_larger":
            return f"{value:.2f}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    columns = ("method", "model", "corpus", "category", "runs", "mean", "median", "best", "baseline", "beat_baseline",
               "beat_next_larger")
    lines = ["# GAP report", "", "Sources: " + ", ".join(f"`{s}`" for s in sources), "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row, c) for c in columns) + " |" for row in rows]
    lines += ["", "- Each run counts with its selected evaluation: the best epoch of that category's average "
              "(the authors' selection), so `best` and `mean` are optimistic by construction.",
              "- `beat_baseline`: share of runs whose selected average is above the unchanged model's, with a "
              "95% Wilson score interval in brackets; `beat_next_larger`: share above the next larger model's "
              "baseline (empty when that model is not in the report).",
              "- Runs are compared with the baseline of their own corpus group; an `all` row shows the model's "
              "most common baseline."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
