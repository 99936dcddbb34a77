"""lm-evaluation-harness 0.4 task definitions pointed at our local data, for comparisons with the harness
itself (the opt-in `pytest -m harness` test and `make bench-harness`). Needs `pip install lm-eval`."""
import json
import tempfile
from pathlib import Path

HARNESS_YAMLS = {  # ours: (the harness's task YAML, what our data needs changed)
    "piqa": ("piqa/piqa.yaml", ""),
    # our hellaswag has `ctx` but no ctx_a/ctx_b: the harness's preprocess on activity_label + ": " + ctx
    "hellaswag": ("hellaswag/hellaswag.yaml", "process_docs: !function gap_utils.hellaswag_process_docs\n"),
    "arc_easy": ("arc/arc_easy.yaml", ""),
    "arc_challenge": ("arc/arc_challenge.yaml", ""),
    "copa": ("super_glue/copa/default.yaml", ""),
    "winogrande": ("winogrande/default.yaml", ""),
    "math_qa": ("mathqa/mathqa.yaml", ""),
    # our pubmed_qa has one `abstract` string, not the hub's CONTEXTS list
    "pubmed_qa": ("pubmedqa/pubmedqa.yaml",
                  'doc_to_text: "Abstract: {{abstract}}\\nQuestion: {{question}}\\nAnswer:"\n'),
}
GAP_UTILS = '''
from lm_eval.tasks.hellaswag.utils import preprocess


def hellaswag_process_docs(dataset):
    def _process_doc(doc):
        return {"query": preprocess(doc["activity_label"] + ": " + doc["ctx"]),
                "choices": [preprocess(ending) for ending in doc["endings"]], "gold": int(doc["label"])}
    return dataset.map(_process_doc)
'''


def harness_gold(task, doc, choices):
    """The gold index as the harness's `process_results` finds it."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    return choices.index(gold) if isinstance(gold, str) else gold


def write_harness_tasks(root: Path, data_dir: Path, limit: int) -> list[str]:
    """Task YAMLs (named `gap_<task>`) that include the harness's own and read local copies of our first
    `limit` rows; returns the task names."""
    import lm_eval

    harness_tasks = Path(lm_eval.__file__).parent / "tasks"
    (root / "gap_utils.py").write_text(GAP_UTILS)
    for task, (yaml_path, extra) in HARNESS_YAMLS.items():
        lines = (data_dir / "tasks" / task / "validation.jsonl").read_text(encoding="utf-8").splitlines(True)
        copy = root / "data" / f"{task}.jsonl"
        copy.parent.mkdir(exist_ok=True)
        copy.write_text("".join(lines[:limit]), encoding="utf-8")
        (root / f"gap_{task}.yaml").write_text(
            f"include: {harness_tasks / yaml_path}\n"
            f"task: gap_{task}\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {copy}\n  cache_dir: {root / 'hf_cache'}\n"
            "training_split: null\nvalidation_split: validation\ntest_split: null\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n" + extra)
    return [f"gap_{task}" for task in HARNESS_YAMLS]


# few-shot multiple choice, as the harness is most often run (MMLU's count of examples): task -> shots
FEWSHOT = {"arc_challenge": 5, "hellaswag": 5}
# the harness's own tasks of the other request types, on local text: (its YAML, our rows -> its documents)
TEXT_TASKS = {
    # one Pile-CC text a document: the context all but its last word, which is scored (and is_greedy)
    "lambada_openai": ("lambada/lambada_openai.yaml", "test", "corpora/pile_cc.jsonl",
                       lambda rows, n: [{"text": r["text"].strip()} for r in rows[:n]]),
    # four Pile-CC texts a page (~900 tokens): two rolling windows of 512
    "wikitext": ("wikitext/wikitext.yaml", "test", "corpora/pile_cc.jsonl",
                 lambda rows, n: [{"page": "\n\n".join(r["text"] for r in rows[4 * i:4 * i + 4])} for i in range(n)]),
    # ARC-Challenge questions, a reply generated until "\n\n" or "." (at most 100 tokens), a filter
    "arc_challenge_chat": ("arc/arc_challenge_chat.yaml", "validation", "tasks/arc_challenge/validation.jsonl",
                           lambda rows, n: rows[:n]),
}


def write_text_tasks(root: Path, data_dir: Path, limit: int) -> list[str]:
    """Task YAMLs (named `gap_<task>`) that include the harness's own of `TEXT_TASKS` and read `limit`
    documents made from our data; returns the task names."""
    import lm_eval

    harness_tasks = Path(lm_eval.__file__).parent / "tasks"
    (root / "data").mkdir(parents=True, exist_ok=True)
    for task, (yaml_path, split, source, documents) in TEXT_TASKS.items():
        rows = [json.loads(line) for line in (data_dir / source).read_text(encoding="utf-8").splitlines()]
        copy = root / "data" / f"{task}.jsonl"
        copy.write_text("".join(json.dumps(d) + "\n" for d in documents(rows, limit)), encoding="utf-8")
        splits = {"test": "null", "validation": "null", split: split}
        (root / f"gap_{task}.yaml").write_text(
            f"include: {harness_tasks / yaml_path}\n"
            f"task: gap_{task}\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    {split}: {copy}\n  cache_dir: {root / 'hf_cache'}\n"
            f"training_split: null\nfewshot_split: null\nvalidation_split: {splits['validation']}\n"
            f"test_split: {splits['test']}\n")
    return [f"gap_{task}" for task in TEXT_TASKS]


def write_fewshot_tasks(root: Path, data_dir: Path) -> list[str]:
    """`FEWSHOT` variants (`gap_<task>_<n>shot`) of the tasks `write_harness_tasks` wrote into `root`, over the
    whole of our split, their examples drawn from it (the harness leaves out the document itself)."""
    for task, shots in FEWSHOT.items():
        (root / f"gap_{task}_{shots}shot.yaml").write_text(
            f"include: gap_{task}.yaml\ntask: gap_{task}_{shots}shot\nnum_fewshot: {shots}\n"
            f"fewshot_split: validation\ndataset_kwargs:\n  data_files:\n"
            f"    validation: {data_dir / 'tasks' / task / 'validation.jsonl'}\n  cache_dir: {root / 'hf_cache'}\n")
    return [f"gap_{task}_{shots}shot" for task, shots in FEWSHOT.items()]


def harness_requests(data_dir: Path, limit: int) -> dict[str, list]:
    """The requests of the 8 classification tasks (and `FEWSHOT`'s few-shot ones) and of `TEXT_TASKS` on
    `limit` documents each, as the harness builds them (few-shot examples drawn with `simple_evaluate`'s
    seed), by request type (`make bench-harness`, the embedded models' `-m slow` checks)."""
    from lm_eval.defaults import DEFAULT_OTHER_SEED
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        names = [*write_harness_tasks(Path(tmp), data_dir, limit), *write_fewshot_tasks(Path(tmp), data_dir),
                 *write_text_tasks(Path(tmp), data_dir, limit)]
        by_type: dict[str, list] = {}
        for task in TaskManager(include_path=tmp, include_defaults=False).load(names)["tasks"].values():
            task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
            task.build_all_requests(limit=limit)
            for instance in task.instances:
                by_type.setdefault(instance.request_type, []).append(instance)
    return by_type
