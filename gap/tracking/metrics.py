"""Metric definitions and deltas, so that W&B's charts and runs table read at a glance: every key we log is
defined against `trainer/global_step` with the summaries a reader sorts by (first/max/last for accuracy
and F1, first/min/last for losses); each evaluation also logs `delta/<key>` (value minus the unchanged
model's), and the summary holds `baseline/<key>`, `selected/<category>/...` and the run's `status`."""
from gap.results import selected_metrics

STEP = "trainer/global_step"
PREFIXES = ("val/", "delta/", "train/", "heldout/")  # what we define; Lightning's `epoch` keeps its default
# the last part of a key (lm-evaluation-harness's metric names among them, `,<filter>` dropped)
HIGHER_IS_BETTER = ("acc", "acc_norm", "f1", "score", "exact_match", "mcc", "bleu")
LOWER_IS_BETTER = ("loss", "nll", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


def summary_of(key: str) -> str:
    """The summaries of a key, from its last part (`val/copa/acc`: acc; `val/avg/dialog_f1`: f1;
    `val/lm_eval/gsm8k/exact_match,strict-match`: exact_match)."""
    name = key.rsplit("/", 1)[-1].split(",")[0]
    if name in HIGHER_IS_BETTER or name.endswith(tuple(f"_{n}" for n in HIGHER_IS_BETTER)):
        return "first,max,last"
    if name in LOWER_IS_BETTER:
        return "first,min,last"
    return "last"


def define_metrics(run, keys, defined: set) -> None:
    """Define each of `keys` not in `defined` (then added) before its first value is logged."""
    for key in keys:
        if key.startswith(PREFIXES) and key not in defined:
            run.define_metric(key, step_metric=STEP, summary=summary_of(key))
            defined.add(key)


def with_deltas(metrics: dict, baseline: dict | None) -> dict:
    """`metrics` and, for each `val/<key>` the baseline holds, `delta/<key>`."""
    if not baseline:
        return dict(metrics)
    deltas = {f"delta/{key[4:]}": value - baseline[key[4:]] for key, value in metrics.items()
              if key.startswith("val/") and key[4:] in baseline}
    return {**metrics, **deltas}


def baseline_summary(baseline: dict) -> dict:
    """The unchanged model's evaluation, as `baseline/<key>` summary columns."""
    return {f"baseline/{key}": value for key, value in baseline.items()}


def selected_summary(results: dict) -> dict:
    """The evaluation each category selected, as `selected/<category>/<key>` (and `.../epoch`)."""
    summary = {}
    for category, metrics in selected_metrics(results).items():
        summary[f"selected/{category}/epoch"] = results["best"][category]["epoch"]
        summary.update({f"selected/{category}/{key}": value for key, value in metrics.items()})
    return summary

