"""What a run leaves behind: `results.json` and `predictions/<task>.jsonl`, written atomically."""
import json
import time
from pathlib import Path

from gap.data.tasks import CATEGORIES, LM_EVAL_CATEGORY, category_name, task_of
from gap.files import write_atomic


def write_predictions(directory: Path, predictions: dict[str, list[dict]]) -> None:
    for task, records in predictions.items():
        write_atomic(Path(directory) / f"{task}.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def selecting(metrics: dict, select_lm_eval: bool = False) -> list[str]:
    """The categories an evaluation's metrics select on: every one whose average they hold, but lm_eval only
    with `select_lm_eval` (`lm_eval.select`) or where it is the only one."""
    present = [name for name, category in CATEGORIES.items() if category.average in metrics]
    ours = [name for name in present if name != LM_EVAL_CATEGORY.name]
    return present if select_lm_eval or not ours else ours


def best_epochs(history: list[dict], select_lm_eval: bool = False) -> dict:
    """The authors' selection: per category, the evaluation with the highest average (first on ties). A
    category not selected on (lm_eval, see `selecting`) is reported at the epoch the run's first selecting
    category chose (`selected_by`)."""
    best = {}
    chooses = selecting(history[0]["metrics"], select_lm_eval) if history else []
    for name, category in CATEGORIES.items():
        key = category.average
        scored = [h for h in history if key in h["metrics"]]
        if not scored:
            continue
        by = None if name in chooses else chooses[0]
        top = max(scored, key=lambda h: h["metrics"][key]) if by is None else \
            next(h for h in scored if h["epoch"] == best[by]["epoch"])
        best[name] = {"epoch": top["epoch"], "step": top["step"], key: top["metrics"][key]}
        if by is not None:
            best[name]["selected_by"] = by
    return best


def category_of(key: str) -> str:
    """The category a metric key belongs to: `copa/acc` -> classification, `avg/dialog_f1` -> dialog,
    `lm_eval/wikitext/word_perplexity` -> lm_eval."""
    for name, category in CATEGORIES.items():
        if key == category.average:
            return name
    return category_name(task_of(key))


def selected_metrics(results: dict) -> dict[str, dict]:
    """Per category, the metrics of the evaluation the authors' selection chose (`results["best"]`)."""
    by_epoch = {h["epoch"]: h["metrics"] for h in results.get("history", [])}
    return {category: by_epoch[best["epoch"]] for category, best in results.get("best", {}).items()}


def run_results(status: str, config: dict, evaluations: list[dict], error: str | None = None) -> dict:
    """The `results.json` document. `evaluations` start with the baseline (epoch None) when it ran."""
    baseline = next((e for e in evaluations if e["epoch"] is None), None)
    history = [{k: e.get(k) for k in ("epoch", "step", "train_nll", "step_taken", "metrics", "seconds")}
               for e in evaluations if e["epoch"] is not None]
    results = {"status": status}
    if error is not None:
        results["error"] = error
    results["config"] = config
    results["metrics"] = evaluations[-1]["metrics"] if evaluations else {}
    results["seconds"] = evaluations[-1]["seconds"] if evaluations else {}  # wall time per task
    if baseline and "cached" in baseline:
        results["baseline_cache"] = baseline["cached"]
    if evaluations and evaluations[-1].get("lm_eval"):  # the harness's own results of the last evaluation
        results["lm_eval"] = evaluations[-1]["lm_eval"]
    if history:
        results["baseline"] = baseline["metrics"] if baseline else None
        results["history"] = history
        results["best"] = best_epochs(history, bool((config.get("lm_eval") or {}).get("select")))
    return results


def metric_table(results: dict) -> str:
    """Each task's metric: baseline against the best epoch of its category (plain text)."""
    metrics, baseline = results["metrics"], results.get("baseline")
    history = results.get("history", [])
    best, selected = results.get("best", {}), selected_metrics(results)
    width = max([34, *(len(k) + 2 for k in metrics)])  # harness metric keys run long
    lines = [f"{'metric':<{width}}{'baseline':>10}{'best':>10}  epoch"] if history else \
        [f"{'metric':<{width}}{'value':>10}"]
    for key in sorted(metrics, key=lambda k: (k.startswith("avg/"), k)):
        if not history:
            lines.append(f"{key:<{width}}{_cell(metrics[key])}")
            continue
        category = category_of(key)
        chosen = best.get(category)
        value = selected[category][key] if chosen else float("nan")
        base = baseline.get(key, float("nan")) if baseline else float("nan")
        lines.append(f"{key:<{width}}{_cell(base)}{_cell(value)}  {chosen['epoch'] if chosen else '-'}")
    return "\n".join(lines)


def _cell(value: float) -> str:
    """A value in 10 columns: 4 decimals, or 3 significant digits where that would not fit (perplexities)."""
    return f"{value:>10.4f}" if not abs(value) >= 1e5 else f"{value:>10.3g}"


def resources(started: float) -> dict:
    """Wall time since `started` (a `time.perf_counter()`) and peak memory: the accelerator's (what
    PyTorch allocated) when one was used, and this process's resident memory."""
    import resource

    import torch

    used = {"seconds": round(time.perf_counter() - started, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        used["device"] = torch.cuda.get_device_name()
        used["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return used


class ResultsWriter:
    """Keeps `results.json` and the predictions of a run directory current after every evaluation.
    In a multi-process run only global rank 0 writes (every rank holds the gathered results)."""

    def __init__(self, out_dir: Path, config: dict):
        self.out_dir, self.config = Path(out_dir), config

    def write(self, status: str, evaluations: list[dict], error: str | None = None, heldout: dict | None = None,
              used: dict | None = None) -> dict:
        """`heldout`: {"baseline": evaluation, "selected": evaluation + "epochs"} (see `gap.train`);
        `used`: the run's `resources`."""
        results = run_results(status, self.config, evaluations, error)
        if used:
            results["resources"] = used
        from lightning.fabric.utilities.rank_zero import rank_zero_only  # gap.report reads results without torch

        if rank_zero_only.rank != 0:
            return results
        if heldout:
            results["heldout"] = {"epochs": heldout["selected"]["epochs"], "baseline": heldout["baseline"]["metrics"],
                                  "selected": heldout["selected"]["metrics"]}
            write_predictions(self.out_dir / "predictions" / "heldout", heldout["selected"]["predictions"])
            write_predictions(self.out_dir / "predictions" / "heldout" / "baseline", heldout["baseline"]["predictions"])
        if evaluations:
            write_predictions(self.out_dir / "predictions", evaluations[-1]["predictions"])
            if evaluations[0]["epoch"] is None and len(evaluations) > 1:
                write_predictions(self.out_dir / "predictions" / "baseline", evaluations[0]["predictions"])
        write_atomic(self.out_dir / "results.json", json.dumps(results, indent=2) + "\n")
        return results
