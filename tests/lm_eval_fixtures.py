"""Local lm-evaluation-harness tasks of each request type over small JSONL documents (the harness reads
them through `dataset_path: json`): multiple choice (`acc`, `acc_norm`), loglikelihood (`perplexity`,
`acc` = is_greedy), loglikelihood_rolling (word and byte perplexity, bits per byte) and generate_until
(stop strings, two filters: a regex and the whole reply). Contexts of up to 127 bytes, so that a
`max_length` of 48 tokens truncates them and splits rolling texts into several windows."""
import json
from pathlib import Path

WORDS = ("the cat sat on a mat while seven quiet birds watched from an old oak tree near the river bank "
         "and nobody said anything about the weather or the price of bread in town").split()


def text(n: int, start: int) -> str:
    """`n` words of `WORDS`, from `start` on in steps of 3."""
    return " ".join(WORDS[(start + 3 * i) % len(WORDS)] for i in range(n))


DOCS = {
    "fixture_mc": [{"question": text(4 + 9 * (i % 3), i), "label": i % 3,
                    "choices": [text(1 + (i + k) % 4, 5 * k + i) for k in range(3)]} for i in range(8)],
    "fixture_ll": [{"text": text(6 + 7 * (i % 3), 2 * i)} for i in range(8)],
    "fixture_rolling": [{"page": text(5 + 14 * (i % 3), 3 * i)} for i in range(6)],
    "fixture_gen": [{"question": text(3 + 5 * (i % 3), i), "answer": WORDS[i]} for i in range(6)],
}
TASK_YAML = {
    "fixture_mc": """output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "fixture_ll": """output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' ' + text.split(' ')[-1]}}"
metric_list:
  - metric: perplexity
  - metric: acc
""",
    "fixture_rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{page}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    "fixture_gen": """output_type: generate_until
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 12
  do_sample: false
filter_list:
  - name: first-word
    filter:
      - function: regex
        regex_pattern: "(\\\\w+)"
      - function: take_first
  - name: whole
    filter:
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""",
}
FIXTURE_TASKS = list(TASK_YAML)


def write_fixture_tasks(root: Path) -> list[str]:
    """The fixture tasks' YAMLs and documents under `root` (their datasets cache too); returns their names."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, body in TASK_YAML.items():
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in DOCS[name]), encoding="utf-8")
        (root / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {data}\n  cache_dir: {root / 'hf_cache'}\n"
            "validation_split: validation\ntraining_split: null\ntest_split: null\n"
            + body + "metadata:\n  version: 1.0\n", encoding="utf-8")
    return FIXTURE_TASKS
