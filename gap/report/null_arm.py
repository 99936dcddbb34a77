"""Each method against the null arm (`random_direction`: the same steps along a random direction of the same
size, selected the same way), per model x corpus x category: the difference in the share of runs above the
unchanged model (Fisher's exact test, Newcombe's interval) and in the mean delta (a permutation test, and the
interval it gives inverted). Both arms are selected alike, so the selection's optimism cancels."""
from statistics import mean

from gap.report.runs import NULL_ARM, Results, null_arm_of
from gap.report.stats import fisher_exact, mean_difference_test, newcombe
from gap.report.tables import GROUP, groups, markdown_table

COLUMNS = (*GROUP, "null_arm", "runs", "null_runs", "beat_baseline", "null_beat_baseline", "share_diff",
           "share_diff_lo", "share_diff_hi", "share_p_value", "mean_delta", "null_mean_delta", "delta_diff",
           "delta_diff_lo", "delta_diff_hi", "delta_p_value")
MARKDOWN = {**GROUP, "runs": "", "null_runs": "", "beat_baseline": ".2f", "null_beat_baseline": ".2f",
            "share_diff": ".2f", "share_p_value": ".3g", "mean_delta": ".4f", "null_mean_delta": ".4f",
            "delta_diff": ".4f", "delta_p_value": ".3g"}


def null_rows(results: Results, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """A row per group of a method whose null arm has runs in the same model x corpus x category (runs
    without a baseline are left out of both arms)."""
    found = {(method, model, corpus, category): runs for method, model, corpus, category, runs in groups(results)}
    rows = []
    for (method, model, corpus, category), runs in found.items():
        null = null_arm_of(method)
        if method == null or (null, model, corpus, category) not in found:
            continue
        deltas, null_deltas = (_deltas(results, arm) for arm in (runs, found[null, model, corpus, category]))
        if not (deltas and null_deltas):
            continue
        n, m = len(deltas), len(null_deltas)
        a, c = sum(d > 0 for d in deltas), sum(d > 0 for d in null_deltas)
        diff, lo, hi, p = mean_difference_test(deltas, null_deltas, resamples, seed)
        rows.append({"method": method, "model": model, "corpus": corpus, "category": category, "null_arm": null,
                     "runs": n, "null_runs": m, "beat_baseline": a / n, "null_beat_baseline": c / m,
                     "share_diff": a / n - c / m, **dict(zip(("share_diff_lo", "share_diff_hi"), newcombe(a, n, c, m))),
                     "share_p_value": fisher_exact(a, n, c, m), "mean_delta": mean(deltas),
                     "null_mean_delta": mean(null_deltas), "delta_diff": diff, "delta_diff_lo": lo,
                     "delta_diff_hi": hi, "delta_p_value": p})
    return rows


def _deltas(results: Results, runs: list) -> list[float]:
    return [d for r in runs if (d := results.delta(r, r.average)) is not None]


def null_markdown(rows: list[dict]) -> str:
    lines = [f"## Against the null arm ({NULL_ARM})", "", *markdown_table(rows, MARKDOWN), "",
             f"- Each method against `{NULL_ARM}` (through LoRA for a LoRA method): the same steps with each "
             "tensor's gradient replaced by a random direction of its norm, every run selected alike.",
             "- `beat_baseline`, `null_beat_baseline`: shares of runs above the unchanged model at the selected "
             "epoch; `share_diff`: their difference with Newcombe's 95% hybrid score interval; `share_p_value`: "
             "Fisher's exact test (two-sided).",
             "- `mean_delta`, `null_mean_delta`: mean selected average minus the unchanged model's; `delta_diff`: "
             "their difference with the 95% interval of the permutation test inverted (the shifts it does not "
             "reject; unbounded when the runs are too few for any shift to be rejected, as with 3 against 3); "
             "`delta_p_value`: the permutation test (two-sided; every relabeling of the pooled runs, or random "
             "ones where there are too many)."]
    return "\n".join(lines) + "\n"
