"""Metrics from per-example records, with torchmetrics: accuracy, and SQuAD's unigram F1 (the paper's
dialogue metric). Computed from records gathered in example order, so N processes equal one.

torchmetrics computes in float32; its values are kept to 6 decimals (k/320 accuracies are exact there),
not to the float32 rounding noise below them."""
import torch
from torchmetrics.functional import accuracy
from torchmetrics.functional.text import squad

from gap.data.tasks import CATEGORIES, LM_EVAL_CATEGORY, LM_EVAL_PREFIX, TASKS, task_of

DECIMALS = 6


def unigram_f1(prediction: str, reference: str) -> float:
    """SQuAD F1 of one reply: unigram overlap after lower-casing and dropping punctuation and articles
    (an empty reply against an empty reference scores 1, as in SQuAD 2.0's script)."""
    scores = squad([{"prediction_text": prediction, "id": "0"}],
                   [{"answers": {"answer_start": [0], "text": [reference]}, "id": "0"}])
    return round(scores["f1"].item() / 100, DECIMALS)


def _accuracy(preds: list[int], labels: list[int]) -> float:
    if not preds:
        return float("nan")
    classes = 1 + max(*preds, *labels)
    return round(accuracy(torch.tensor(preds), torch.tensor(labels), task="multiclass", num_classes=classes,
                          average="micro").item(), DECIMALS)


def task_metrics(task: str, records: list[dict], harness: bool = False) -> dict[str, float]:
    """A task's metrics from its per-example records: `acc` (and with `harness`, `acc_norm`) for
    classification; for dialogue the mean unigram F1 and the token-weighted mean target NLL (`loss`)."""
    if TASKS[task].scored:
        labels = [r["label"] for r in records]
        metrics = {f"{task}/acc": _accuracy([r["pred"] for r in records], labels)}
        if harness:
            metrics[f"{task}/acc_norm"] = _accuracy([r["pred_norm"] for r in records], labels)
        return metrics
    tokens = sum(r["tokens"] for r in records)
    return {f"{task}/f1": sum(r["f1"] for r in records) / len(records) if records else float("nan"),
            f"{task}/loss": sum(r["nll"] for r in records) / tokens if tokens else float("nan")}


def with_averages(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` and, per category with a task among them, the mean of its tasks' headline metric (the
    harness units' in the order they come)."""
    out = dict(metrics)
    units = list(dict.fromkeys(task_of(k) for k in metrics if k.startswith(LM_EVAL_PREFIX)))
    for category in CATEGORIES.values():
        tasks = units if category == LM_EVAL_CATEGORY else category.tasks
        values = [metrics[f"{t}/{category.metric}"] for t in tasks if f"{t}/{category.metric}" in metrics]
        if values:
            out[category.average] = sum(values) / len(values)
    return out


def evaluation_metrics(predictions: dict[str, list[dict]], harness: bool = False,
                       more: dict[str, float] | None = None) -> dict[str, float]:
    """Every task's metrics (and `more`: those of harness units) and the category averages, from per-example
    records by task."""
    metrics = dict(more or {})
    for task, records in predictions.items():
        metrics |= task_metrics(task, records, harness)
    return with_averages(metrics)
