"""What the selection adds: per method x model x corpus x category, the share of runs above the unchanged model
at the selected epoch beside the same share at fixed epochs (after the first step, after the last: no
selection), and the selection's optimism (selected minus held-out delta, where `eval.heldout` ran) with the
interval of a sign-flip permutation test. Sweeps only: the paper's CSVs hold the selected epoch alone."""
from statistics import mean

from gap.report.runs import Results
from gap.report.stats import mean_test
from gap.report.tables import GROUP, beats, groups, markdown_table, share

EPOCHS = {"": lambda r: r.average, "_first": lambda r: r.first, "_last": lambda r: r.last}  # column suffix -> value
SHARES = [f"beat_baseline{suffix}{end}" for suffix in EPOCHS for end in ("", "_lo", "_hi")]
COLUMNS = (*GROUP, "runs", *SHARES, "heldout_runs", "selected_delta", "heldout_delta", "optimism", "optimism_lo",
           "optimism_hi", "optimism_p_value")
MARKDOWN = {**GROUP, "runs": "", **{f"beat_baseline{suffix}": ".2f" for suffix in EPOCHS}, "heldout_runs": "",
            "selected_delta": ".4f", "heldout_delta": ".4f", "optimism": ".4f", "optimism_p_value": ".3g"}


def selection_rows(results: Results, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per group; none when no run holds fixed-epoch values (the paper's CSVs)."""
    if all(r.first is None for r in results.runs):
        return []
    rows = []
    for method, model, corpus, category, runs in groups(results):
        row = {"method": method, "model": model, "corpus": corpus, "category": category, "runs": len(runs)}
        for suffix, value in EPOCHS.items():
            shares = share(beats(results, runs, value))
            row.update(zip((f"beat_baseline{suffix}{end}" for end in ("", "_lo", "_hi")), shares))
        held = [r for r in runs if r.optimism is not None]
        optimism = mean_test([r.optimism for r in held], resamples, seed) if held else (None,) * 4
        row.update(heldout_runs=len(held),
                   selected_delta=mean(r.heldout_delta + r.optimism for r in held) if held else None,
                   heldout_delta=mean(r.heldout_delta for r in held) if held else None,
                   **dict(zip(("optimism", "optimism_lo", "optimism_hi", "optimism_p_value"), optimism)))
        rows.append(row)
    return rows


def selection_markdown(rows: list[dict]) -> str:
    lines = ["## Without the selection, and on held-out examples", "", *markdown_table(rows, MARKDOWN), "",
             "- `beat_baseline`: share of runs above the unchanged model at the selected epoch (as above); "
             "`beat_baseline_first`: after the first step; `beat_baseline_last`: after the last step. Fixed epochs "
             "involve no selection. 95% Wilson intervals in brackets.",
             "- Over the runs with a held-out evaluation (`heldout_runs`): `selected_delta`, the selected average "
             "minus the unchanged model's on the examples the epoch was selected on; `heldout_delta`, the same "
             "weights' gain on held-out examples; `optimism`, their difference (the selection's optimism), with the "
             "95% interval of a sign-flip permutation test inverted (unbounded when the runs are too few for any "
             "shift to be rejected: fewer than 6) and its p-value against no optimism."]
    return "\n".join(lines) + "\n"
