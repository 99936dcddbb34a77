"""Tables at the end of a run, as W&B renders them: one row per metric (`tasks`) and, per task, the first
examples with the unchanged model's and the selected weights' predictions (`samples/<task>`)."""
import json

from gap.data.tasks import category_name, task_of
from gap.results import category_of, selected_metrics

TASK_COLUMNS = ("task", "kind", "metric", "baseline", "selected_epoch", "selected", "last", "delta",
                "heldout_baseline", "heldout_selected")
SAMPLE_COLUMNS = ("index", "input", "target", "baseline", "baseline_score", "selected", "selected_score")
MAX_CHARS = 1000  # a cell's text, so a table of long dialogue contexts stays small


def metric_rows(results: dict) -> list[list]:
    """Per metric of the last evaluation: the baseline, the selected evaluation (its category's), the last
    value, selected minus baseline and the held-out values where the run has them. An evaluation-only run
    (no history) is its own baseline."""
    metrics = results.get("metrics", {})
    baseline = results.get("baseline") if "history" in results else metrics
    selected, best = selected_metrics(results), results.get("best", {})
    heldout = results.get("heldout", {})
    rows = []
    for key in sorted(metrics, key=lambda k: (k.startswith("avg/"), k)):
        task = task_of(key)
        metric = key[len(task) + 1:]
        category = category_of(key)
        base = (baseline or {}).get(key)
        chosen = selected.get(category, {}).get(key)
        delta = chosen - base if chosen is not None and base is not None else None
        rows.append([task, category if task != "avg" else "average", metric, base,
                     best.get(category, {}).get("epoch"), chosen, metrics[key], delta,
                     heldout.get("baseline", {}).get(key), heldout.get("selected", {}).get(key)])
    return rows


def _clip(text) -> str:
    text = str(text)
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "…"


def _prediction(example, record) -> list:
    """[prediction, score] of one record: the chosen choice's text and 1/0 (classification), the reply
    and its F1 (dialogue), or a harness sample's filtered responses and its first metric."""
    if "filtered_resps" in record:
        score = record[record["metrics"][0]]  # a rolling task's: (log-likelihood, words)
        return [_clip(json.dumps(record["filtered_resps"])), score if isinstance(score, (int, float)) else
                json.dumps(score)]
    if "f1" in record:
        return [_clip(record["pred"]), record["f1"]]
    return [_clip(example.choices[record["pred"]]), float(record["pred"] == record["label"])]


def _identity(record) -> tuple:
    """What a record answers: its example (a harness sample: of which task, under which filter)."""
    return record.get("task"), record["index"], record.get("filter")


def _input_and_target(example, record) -> list:
    if "arguments" in record:  # a harness sample: its first request's context, the document's target
        return [_clip(record["arguments"][0][0]), _clip(record["target"])]
    context = example.context if hasattr(example, "context") else example.requests[0][0]  # harness style: requests
    return [_clip(context), _clip(record["target"] if "f1" in record else example.choices[record["label"]])]


def sample_rows(examples: list, baseline: list[dict], selected: list[dict] | None, n: int) -> list[list]:
    """The first `n` records of a task: input, target or label, the unchanged model's prediction and
    score, and the selected weights' (None without a selection)."""
    by_index = {e.index: e for e in examples}
    chosen = {_identity(r): r for r in selected or []}
    rows = []
    for record in baseline[:n]:
        example = by_index.get(record["index"])
        after = chosen.get(_identity(record))
        rows.append([record["index"], *_input_and_target(example, record), *_prediction(example, record),
                     *(_prediction(example, after) if after else [None, None])])
    return rows


def log_tables(run, results: dict, evaluations: list[dict], examples: dict, samples: int) -> None:
    """Log the `tasks` table and, with `samples` > 0, a `samples/<task>` table per task."""
    import wandb

    tables = {"tasks": wandb.Table(columns=list(TASK_COLUMNS), data=metric_rows(results))}
    if samples > 0 and evaluations:
        by_epoch = {e["epoch"]: e for e in evaluations}
        picked = {c: by_epoch[b["epoch"]]["predictions"] for c, b in results.get("best", {}).items()}
        for task, records in evaluations[0]["predictions"].items():
            selected = picked.get(category_name(task))
            rows = sample_rows(examples[task], records, selected and selected.get(task), samples)
            tables[f"samples/{task}"] = wandb.Table(columns=list(SAMPLE_COLUMNS), data=rows)
    run.log(tables)
