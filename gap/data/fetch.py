"""`python -m gap.data fetch [model=NAME | models=[A,B]]`: evaluation tasks, the paper's corpora and models
into the local caches, on a machine with network (a cluster's login node) for nodes that have none.

Tasks come from the hub datasets lm-evaluation-harness uses (needs the `datasets` package:
`pip install 'gap[fetch]'`), written as `tasks/<task>/<split>.jsonl` with the hub field names; pubmed_qa,
the dialogue tasks and the corpora come from the GAP authors' released files (`sources.gap_files`),
converted to the same layout. Models go to the Hugging Face cache, and the datasets of the harness tasks
`lm_eval.tasks=[...]` (`gap.harness`) to the datasets cache. With no network it stops at once.
"""
import csv
import io
import json
import os
import urllib.request
from pathlib import Path

from gap.data.tasks import DIALOGUE
from gap.errors import ConfigError
from gap.files import write_atomic
from gap.hub import hub_endpoint, reachable

HUB_TASKS = {  # ours: (hub dataset, config, our split -> hub split), as lm-evaluation-harness 0.4 reads them
    "piqa": ("baber/piqa", None, {"validation": "validation"}),
    "hellaswag": ("Rowan/hellaswag", None, {"validation": "validation"}),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", {"validation": "validation", "test": "test"}),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", {"validation": "validation", "test": "test"}),
    "copa": ("aps/super_glue", "copa", {"train": "train", "validation": "validation", "test": "test"}),
    "winogrande": ("allenai/winogrande", "winogrande_xl", {"validation": "validation"}),
    "math_qa": ("regisss/math_qa", None, {"validation": "validation", "test": "test"}),
}
CORPORA = {"github": "train_data/github.csv", "pile_cc": "train_data/pile-cc.csv",
           "tdec": "train_data/lm_extraction.csv"}


def _read(base: str, path: str) -> str:
    """A file's text with universal newlines (`\r\n` and `\r` read as `\n`), as Python reads a local file."""
    with urllib.request.urlopen(f"{base.rstrip('/')}/{path}", timeout=60) as response:
        return response.read().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _write_jsonl(path: Path, rows) -> int:
    rows = list(rows)
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


def fetch_gap_files(base: str, data_dir: Path) -> dict[str, int]:
    """The authors' corpora (CSV: doc_id, text), pubmed_qa (CSV) and dialogue sets (JSON: `text` = turns)."""
    counts = {}
    for name, path in CORPORA.items():
        rows = csv.DictReader(io.StringIO(_read(base, path)), lineterminator="\n")
        counts[f"corpora/{name}"] = _write_jsonl(data_dir / "corpora" / f"{name}.jsonl",
                                                 ({"doc_id": int(r["doc_id"]), "text": r["text"]} for r in rows))
    rows = csv.DictReader(io.StringIO(_read(base, "validation_data/pubmed_qa.csv")), lineterminator="\n")
    fields = ("pubid", "question", "abstract", "long_answer", "final_decision")
    counts["tasks/pubmed_qa/validation"] = _write_jsonl(data_dir / "tasks" / "pubmed_qa" / "validation.jsonl",
                                                       ({f: r[f] for f in fields} for r in rows))
    for task in DIALOGUE:
        for split, folder in (("validation", "validation_data"), ("test", "test_data")):
            turns = json.loads(_read(base, f"{folder}/{task}.json"))["text"]
            counts[f"tasks/{task}/{split}"] = _write_jsonl(
                data_dir / "tasks" / task / f"{split}.jsonl",
                ({"id": int(i), "turns": t} for i, t in sorted(turns.items(), key=lambda kv: int(kv[0]))))
    return counts


def fetch_hub_tasks(data_dir: Path) -> dict[str, int]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise ConfigError("fetching the hub tasks needs the `datasets` package: pip install 'gap[fetch]'") from None
    counts = {}
    for task, (name, config, splits) in HUB_TASKS.items():
        for ours, theirs in splits.items():
            rows = load_dataset(name, config, split=theirs)
            counts[f"tasks/{task}/{ours}"] = _write_jsonl(data_dir / "tasks" / task / f"{ours}.jsonl", rows)
    return counts


def fetch(cfg) -> dict[str, int]:
    """Everything `cfg.fetch` asks for; refuses at once when a source cannot be reached."""
    models = list(cfg.fetch.models)
    if cfg.get("model") and cfg.model.get("path") and not Path(cfg.model.path).exists():
        models.append(cfg.model.path)  # `model=opt-350m`: its hub id
    harness = list(cfg.lm_eval.tasks)
    needs = {"the Hugging Face hub": hub_endpoint()} if cfg.fetch.hub_tasks or models or harness else {}
    if cfg.fetch.gap_files:
        needs["the GAP authors' files"] = cfg.sources.gap_files
    down = [f"{what} ({url})" for what, url in needs.items() if not reachable(url)]
    if down:
        command = "python -m gap.data fetch" + (f" lm_eval.tasks=[{','.join(harness)}]" if harness else "")
        raise ConfigError(f"cannot reach {' and '.join(down)}: run `{command}` on a machine with "
                          f"network (a login node), then point GAP_DATA_DIR / HF_HOME at what it wrote")
    data_dir = Path(cfg.paths.data_dir)
    counts = fetch_gap_files(cfg.sources.gap_files, data_dir) if cfg.fetch.gap_files else {}
    if cfg.fetch.hub_tasks:
        counts |= fetch_hub_tasks(data_dir)
    for model in models:
        from huggingface_hub import snapshot_download

        counts[f"model {model}"] = len(os.listdir(snapshot_download(model)))
    if harness:
        from gap.harness.tasks import fetch_datasets

        counts |= fetch_datasets(harness, cfg.lm_eval.include_path)
    return counts
