"""What a report reads: runs (one selected average per category) and the unchanged models' baselines,
from a sweep directory or a folder of the paper's `full_results` CSVs."""
import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, mode

from gap.data.tasks import CATEGORIES, LM_EVAL_CATEGORY, LM_EVAL_PREFIX
from gap.errors import DataError
from gap.files import read_results
from gap.results import selected_metrics

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


def method_label(name: str | None, lora: bool = False) -> str:
    """A run's method as the report groups it: `method.name`, with `+lora` when it trained a LoRA adapter."""
    return (name or "gap") + ("+lora" if lora else "")


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


def load_sweep(path: Path) -> Results:
    """Every job's `results.json` under a sweep directory (a single job directory works too)."""
    out, status = Results(), Counter()
    for file in sorted(path.rglob("results.json")):
        results = read_results(file) or {"status": "unreadable"}
        status[results.get("status", "unknown")] += 1
        if results.get("status") != "ok" or not results.get("best"):
            continue
        config = results.get("config", {})
        model, corpus = config["model"]["name"], config["corpus"]["name"]
        method_cfg = config.get("method") or {}
        method = method_label(method_cfg.get("name"), (method_cfg.get("lora") or {}).get("enabled", False))
        selected = selected_metrics(results)
        for category, best in results["best"].items():
            key = CATEGORIES[category].average
            out.runs.append(Run(model, corpus, category, best[key], category_metrics(selected[category], category),
                                best["epoch"], method, config["corpus"].get("index")))
            if results.get("baseline"):
                out.baselines[(model, corpus, category)].append(
                    Baseline(results["baseline"][key], category_metrics(results["baseline"], category)))
    if not status:
        raise DataError(f"{path}: no results.json below it; expected a sweep directory "
                        f"(outputs/train/multiruns/<name>/) or a folder of the paper's CSVs")
    bad = {s: n for s, n in status.items() if s != "ok"}
    if bad:
        out.notes.append(f"{path}: left out {sum(bad.values())} of {sum(status.values())} jobs that are not ok ("
                         + ", ".join(f"{s}: {n}" for s, n in sorted(bad.items())) + ")")
    if not out.runs:
        raise DataError(f"{path}: no finished runs ({', '.join(f'{s}: {n}' for s, n in sorted(status.items()))})")
    return out


def load_paper_csvs(path: Path) -> Results:
    """The paper's `full_results` CSVs: one row per GAP run. The unchanged model is not in them, so a model ×
    corpus group's baseline is the average of its runs whose selected evaluation is the first one (epoch 0)."""
    out = Results()
    for category, names in PAPER_FILES.items():
        file = next((path / n for n in names if (path / n).is_file()), None)
        if file is None:
            continue
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
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
