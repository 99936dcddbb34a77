"""Paired per-example significance of one run against its unchanged model, task by task, from
`predictions/<task>.jsonl` (the run's last evaluation) and `predictions/baseline/<task>.jsonl`."""
from pathlib import Path

from gap.data.jsonl import iter_jsonl
from gap.data.tasks import DIALOGUE
from gap.errors import DataError
from gap.report.stats import mcnemar_exact, paired_bootstrap

COLUMNS = ("task", "n", "baseline", "gap", "diff", "p_value", "test")


def _read(path: Path) -> dict:
    """A predictions file's records by example index."""
    records = {}
    for line, record in iter_jsonl(path):
        if "index" not in record:
            raise DataError(f"{path}:{line}: not a predictions record (no 'index')")
        records[record["index"]] = record
    return records


def significance(run_dir, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """McNemar's exact test (classification: correct = pred == label) and a paired bootstrap of the mean F1
    difference (dialogue) per task present in both prediction folders."""
    run_dir = Path(run_dir)
    folder = run_dir / "predictions"
    if not (folder / "baseline").is_dir():
        raise DataError(f"run={run_dir}: no predictions/baseline/ folder; expected a job directory of "
                        "`gap.train` that evaluated the unchanged model")
    rows = []
    for base_file in sorted((folder / "baseline").glob("*.jsonl")):
        gap_file = folder / base_file.name
        if not gap_file.is_file():
            continue
        base, gap = _read(base_file), _read(gap_file)
        if set(base) != set(gap):
            raise DataError(f"{gap_file}: its examples differ from {base_file}; cannot pair them")
        keys = sorted(base)
        task = base_file.stem
        if task in DIALOGUE:
            b = [float(base[k]["f1"]) for k in keys]
            g = [float(gap[k]["f1"]) for k in keys]
            p = paired_bootstrap([y - x for x, y in zip(b, g)], resamples, seed)
            test = f"paired bootstrap ({resamples} resamples, seed {seed})"
        else:
            b = [base[k]["pred"] == base[k]["label"] for k in keys]
            g = [gap[k]["pred"] == gap[k]["label"] for k in keys]
            p = mcnemar_exact(sum(x and not y for x, y in zip(b, g)), sum(y and not x for x, y in zip(b, g)))
            test = "McNemar exact"
        n = len(keys)
        base_score, gap_score = (sum(b) / n, sum(g) / n) if n else (None, None)
        rows.append({"task": task, "n": n, "baseline": base_score, "gap": gap_score,
                     "diff": gap_score - base_score if n else None, "p_value": p, "test": test})
    if not rows:
        raise DataError(f"run={run_dir}: no task has predictions both in predictions/ and predictions/baseline/")
    return rows
