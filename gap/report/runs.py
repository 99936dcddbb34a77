"""What a report reads: runs (one selected average per category) and the unchanged models' baselines,
from a sweep directory or a folder of the paper's `full_results` CSVs."""
import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, mode

from gap.data.jsonl import read_text
from gap.data.tasks import CATEGORIES, LM_EVAL_CATEGORY, LM_EVAL_PREFIX
from gap.errors import DataError
from gap.files import read_results
from gap.results import selected_metrics
from gap.schema import NULL_ARM

PAPER_FILES = {"classification": ("classification.csv",), "dialog": ("dialog.csv", "dialogue.csv")}
PAPER_TASKS = {"ai2_arc_ARC-Challenge": "arc_challenge", "ai2_arc_ARC-Easy": "arc_easy",
               "super_glue_copa": "copa", "winogrande_winogrande_s": "winogrande"}
PAPER_COLUMNS = {"corpora", "index", "epoch", "average", "model"}


@dataclass
class Run:
    model: str
    corpus: str
    category: str
    average: float                   # the selected evaluation's category average
    tasks: dict = field(default_factory=dict)   # each task's metric at that evaluation
    epoch: int | None = None
    method: str = "gap"              # `method_label` of the run's method
    index: int | None = None         # the corpus sample (`corpus.index`) of a sweep's job
    first: float | None = None       # the category average at fixed epochs (no selection): after step 1
    last: float | None = None        # and after the last step; None from the paper's CSVs
    heldout_delta: float | None = None  # with `eval.heldout`: the selected weights' gain on held-out examples
    optimism: float | None = None       # and the selected delta minus that (both against the run's own baseline)


@dataclass
class Baseline:
    average: float
    tasks: dict = field(default_factory=dict)


@dataclass
class Results:
    runs: list = field(default_factory=list)
    baselines: dict = field(default_factory=lambda: defaultdict(list))  # (model, corpus, category) -> [Baseline]
    notes: list = field(default_factory=list)

    def extend(self, other: "Results") -> None:
        self.runs += other.runs
        for key, records in other.baselines.items():
            self.baselines[key] += records
        self.notes += other.notes

    def baseline(self, model: str, corpus: str | None, category: str) -> Baseline | None:
        """A group's baseline (the mean of its records), else the model's most common one (corpus None: that)."""
        own = self.baselines.get((model, corpus, category)) if corpus is not None else None
        if own:
            return Baseline(mean(b.average for b in own),
                            {t: mean(b.tasks[t] for b in own) for t in own[0].tasks if all(t in b.tasks for b in own)})
        records = [b for (m, _, c), bs in self.baselines.items() if m == model and c == category for b in bs]
        if not records:
            return None
        value = mode(b.average for b in records)
        return next(b for b in records if b.average == value)

    def delta(self, run: Run, value: float | None) -> float | None:
        """`value` (one of the run's averages) minus its corpus group's baseline; None without either."""
        baseline = self.baseline(run.model, run.corpus, run.category)
        return value - baseline.average if baseline and value is not None else None


def method_label(name: str | None, lora: bool = False) -> str:
    """A run's method as the report groups it: `method.name`, with `+lora` when it trained a LoRA adapter."""
    return (name or "gap") + ("+lora" if lora else "")


def null_arm_of(method: str) -> str:
    """The null arm a method is compared with: `random_direction`, through LoRA for a LoRA method."""
    return method_label(NULL_ARM, method.endswith("+lora"))


def method_order(results: "Results") -> list[str]:
    """The methods of a report: `gap` first, then the others by name."""
    return sorted({r.method for r in results.runs}, key=lambda m: (m != "gap", m))


def model_size(name: str) -> float | None:
    """Parameters from a model name (`opt-1.3b`, `350M`, `SmolLM2-135M-Instruct`), else None."""
    found = re.findall(r"(\d+(?:\.\d+)?)\s*([kmbt])(?![a-z])", name.lower())
    if not found:
        return None
    number, unit = found[-1]
    return float(number) * {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[unit]


def model_order(models) -> list[str]:
    """Models by size (unsized ones last, by name)."""
    return sorted(set(models), key=lambda m: (model_size(m) is None, model_size(m) or 0, m))


def next_larger(model: str, models) -> str | None:
    """The smallest model of the report that is larger than `model` (None when unknown)."""
    size = model_size(model)
    if size is None:
        return None
    larger = [m for m in model_order(models) if (model_size(m) or 0) > size]
    return larger[0] if larger else None


def category_metrics(metrics: dict, category: str) -> dict:
    """A category's per-task metrics: accuracies, F1s, or every metric of the harness tasks."""
    if category == LM_EVAL_CATEGORY.name:
        return {k: v for k, v in metrics.items() if k.startswith(LM_EVAL_PREFIX)}
    suffixes = ("/acc", "/acc_norm") if category == "classification" else ("/f1",)
    return {k: v for k, v in metrics.items() if not k.startswith("avg/") and k.endswith(suffixes)}


def _job_runs(results: dict) -> tuple[list[Run], list[tuple[tuple, Baseline]]]:
    """A finished job's runs (one per category) and its baseline records."""
    config = results.get("config", {})
    model, corpus = config["model"]["name"], config["corpus"]["name"]
    method_cfg = config.get("method") or {}
    method = method_label(method_cfg.get("name"), (method_cfg.get("lora") or {}).get("enabled", False))
    selected, history = selected_metrics(results), results["history"]
    runs, baselines = [], []
    for category, best in results["best"].items():
        key = CATEGORIES[category].average
        runs.append(Run(model, corpus, category, float(best[key]), category_metrics(selected[category], category),
                        best["epoch"], method, config["corpus"].get("index"), history[0]["metrics"].get(key),
                        history[-1]["metrics"].get(key), *_heldout(results, category)))
        if base := results.get("baseline"):
            baselines.append(((model, corpus, category), Baseline(float(base[key]), category_metrics(base, category))))
    return runs, baselines


def load_sweep(path: Path) -> Results:
    """Every job's `results.json` under a sweep directory (a single job directory works too). A file that cannot
    be read, or says ok but lacks what a report needs, is skipped and listed in the notes."""
    out, status, damaged = Results(), Counter(), []
    for file in sorted(path.rglob("results.json")):
        results = read_results(file)
        if results is None:
            status["unreadable"] += 1
            damaged.append(f"{file} (cannot be read)")
            continue
        if results.get("status") != "ok" or not results.get("best"):
            status[str(results.get("status", "unknown"))] += 1
            continue
        try:
            runs, baselines = _job_runs(results)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            status["malformed"] += 1
            damaged.append(f"{file} ({type(err).__name__}: {err})")
            continue
        status["ok"] += 1
        out.runs += runs
        for key, baseline in baselines:
            out.baselines[key].append(baseline)
    if not status:
        raise DataError(f"{path}: no results.json below it; expected a sweep directory "
                        f"(outputs/train/multiruns/<name>/) or a folder of the paper's CSVs")
    bad = {s: n for s, n in status.items() if s != "ok"}
    if bad:
        out.notes.append(f"{path}: left out {sum(bad.values())} of {sum(status.values())} jobs that are not ok ("
                         + ", ".join(f"{s}: {n}" for s, n in sorted(bad.items())) + ")")
    if damaged:
        out.notes.append("results files skipped as damaged: " + "; ".join(damaged))
    if not out.runs:
        raise DataError(f"{path}: no finished runs ({', '.join(f'{s}: {n}' for s, n in sorted(status.items()))})")
    return out


def _heldout(results: dict, category: str) -> tuple[float | None, float | None]:
    """(held-out delta, optimism): the selected weights' gain over the unchanged model on held-out examples,
    and how much more they gained on the examples they were selected on: (selected - baseline) - (held-out
    selected - held-out baseline). Nones without a held-out evaluation."""
    key, heldout = CATEGORIES[category].average, results.get("heldout") or {}
    values = (results["best"][category][key], (results.get("baseline") or {}).get(key),
              (heldout.get("selected") or {}).get(key), (heldout.get("baseline") or {}).get(key))
    if any(v is None for v in values):
        return None, None
    selected, base, heldout_selected, heldout_base = values
    return heldout_selected - heldout_base, (selected - base) - (heldout_selected - heldout_base)


def load_paper_csvs(path: Path) -> Results:
    """The paper's `full_results` CSVs: one row per GAP run. The unchanged model is not in them, so a model ×
    corpus group's baseline is the average of its runs whose selected evaluation is the first one (epoch 0)."""
    out = Results()
    for category, names in PAPER_FILES.items():
        file = next((path / n for n in names if (path / n).is_file()), None)
        if file is None:
            continue
        reader = csv.DictReader(io.StringIO(read_text(file), newline=""))
        if not PAPER_COLUMNS <= set(reader.fieldnames or ()):
            raise DataError(f"{file}: expected the columns {', '.join(sorted(PAPER_COLUMNS))} and one per task")
        tasks = [c for c in reader.fieldnames if c not in PAPER_COLUMNS]
        for line, row in enumerate(reader, start=2):
            try:
                values = {_paper_task(t): float(row[t]) for t in tasks}
                run = Run(row["model"], row["corpora"], category, float(row["average"]), values,
                          int(row["epoch"]))
            except (TypeError, ValueError) as err:
                raise DataError(f"{file}:{line}: {err}") from None
            out.runs.append(run)
            if run.epoch == 0:
                out.baselines[(run.model, run.corpus, category)].append(Baseline(run.average, values))
    if not out.runs:
        raise DataError(f"{path}: no runs in its CSVs")
    without = sorted({(r.category, r.model, r.corpus) for r in out.runs}
                     - {(k, m, c) for m, c, k in out.baselines})
    out.notes.append(f"{path}: the paper's CSVs hold no baseline; a model x corpus group's baseline is the average "
                     "of its runs whose selected evaluation is the first one (epoch 0, the unchanged model); a group "
                     "with no such run takes the model's most common such value"
                     + (" (here: " + ", ".join(f"{m} {c} {k}" for k, m, c in without) + ")" if without else ""))
    return out


def _paper_task(column: str) -> str:
    task, _, metric = column.partition("/")
    return f"{PAPER_TASKS.get(task, task)}/{metric}" if metric else PAPER_TASKS.get(task, task)


def is_paper_folder(path) -> bool:
    return any((Path(path) / n).is_file() for names in PAPER_FILES.values() for n in names)


def load_path(path) -> Results:
    """A sweep directory or a folder of the paper's CSVs; anything else is a `DataError` naming the path."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory; expected a sweep directory or a folder of the paper's CSVs "
                        "(classification.csv, dialog.csv)")
    if is_paper_folder(path):
        return load_paper_csvs(path)
    return load_sweep(path)
