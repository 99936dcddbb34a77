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


def share(flags: list) -> tuple[float | None, float | None, float | None]:
    """(share of True, its 95% Wilson interval); Nones when a flag is unknown (no baseline or no value)."""
    if not flags or any(f is None for f in flags):
        return None, None, None
    return sum(flags) / len(flags), *wilson(sum(flags), len(flags))


def beats(results: Results, runs: list, value=lambda run: run.average) -> list:
    """Per run, whether `value(run)` is above its corpus group's baseline (None when either is unknown)."""
    deltas = [results.delta(r, value(r)) for r in runs]
    return [d > 0 if d is not None else None for d in deltas]


def summary_rows(results: Results) -> list[dict]:
    models = {r.model for r in results.runs} | {m for m, _, _ in results.baselines}
    rows = []
    for method, model, corpus, category, runs in groups(results):
        larger = next_larger(model, models)
        above = [results.baseline(larger, r.corpus, category) if larger else None for r in runs]
        beat_next = [r.average > b.average if b else None for r, b in zip(runs, above)]
        shown = results.baseline(model, None if corpus == "all" else corpus, category)
        beat, lo, hi = share(beats(results, runs))
        averages = [r.average for r in runs]
        rows.append({"method": method, "model": model, "corpus": corpus, "category": category, "runs": len(runs),
                     "mean": mean(averages), "median": median(averages), "best": max(averages),
                     "baseline": shown.average if shown else None, "beat_baseline": beat,
                     "beat_baseline_lo": lo, "beat_baseline_hi": hi, "beat_next_larger": share(beat_next)[0]})
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


GROUP = {"method": "", "model": "", "corpus": "", "category": ""}  # a group's columns, as text
SUMMARY_MARKDOWN = {**GROUP, "runs": "", "mean": ".4f", "median": ".4f", "best": ".4f", "baseline": ".4f",
                    "beat_baseline": ".2f", "beat_next_larger": ".2f"}


def markdown_table(rows: list[dict], columns: dict[str, str]) -> list[str]:
    """The lines of a Markdown table. `columns` maps each column to its number format (`.2f`, `.3g`; "" for
    text); a column whose row also holds `<column>_lo` and `<column>_hi` shows `value [lo, hi]`."""
    def cell(row, column):
        value, spec = row[column], columns[column]
        if value is None:
            return ""
        text = format(value, spec) if spec else str(value)
        if row.get(f"{column}_lo") is not None:
            text += f" [{row[f'{column}_lo']:{spec}}, {row[f'{column}_hi']:{spec}}]"
        return text

    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(cell(row, c) for c in columns) + " |" for row in rows)]


def markdown(rows: list[dict], notes: list[str], sources: list[str], sections=()) -> str:
    """The summary as a Markdown table, with the sources and every assumption the numbers rest on, then
    `sections` (Markdown text: the tables of `gap.report.selection` and `gap.report.null_arm`)."""
    lines = ["# GAP report", "", "Sources: " + ", ".join(f"`{s}`" for s in sources), "",
             *markdown_table(rows, SUMMARY_MARKDOWN)]
    lines += ["", "- Each run counts with its selected evaluation: the best epoch of that category's average "
              "(the authors' selection), so `best` and `mean` are optimistic by construction.",
              "- `beat_baseline`: share of runs whose selected average is above the unchanged model's, with a "
              "95% Wilson score interval in brackets; `beat_next_larger`: share above the next larger model's "
              "baseline (empty when that model is not in the report).",
              "- Runs are compared with the baseline of their own corpus group; an `all` row shows the model's "
              "most common baseline."]
    lines += [f"- {note}" for note in notes]
    lines += [part for section in sections for part in ("", section.rstrip("\n"))]
    return "\n".join(lines) + "\n"
