"""The 8 classification tasks as lm-evaluation-harness 0.4 defines them (`prompt_style=harness`).

Each task is the harness's own YAML (and `utils.py`) rewritten for our local JSONL files (hub field
names): `doc_to_text`, `doc_to_choice`, `doc_to_target` and `target_delimiter` (" " for all eight), and
the harness's requests built from them, one `(context, continuation)` per choice:

- single-input tasks: `(doc_to_text, target_delimiter + choice)` for each choice;
- multiple-input tasks (winogrande: `doc_to_text` is the gold index): `(choice, target_delimiter +
  doc_to_target)`: one context per option, all sharing the continuation.

| ours | harness task | context | choices (`doc_to_choice`) |
|---|---|---|---|
| piqa | piqa | `Question: {goal}\\nAnswer:` | sol1, sol2 |
| hellaswag | hellaswag | `preprocess(activity_label + ": " + ctx)` | `preprocess(ending)` for each |
| arc_easy, arc_challenge | arc_easy, arc_challenge | `Question: {question}\\nAnswer:` | choices.text (3, 4 or 5) |
| copa | copa (super_glue) | premise minus its last character + ` because` / ` therefore` |
  `" " + choice`, first letter lowercased |
| winogrande | winogrande | sentence up to `_`, then each option | (the contexts);
  continuation: the rest after `_`, stripped |
| math_qa | mathqa | `Question: {Problem}\\nAnswer:` | the 5 options parsed from `options` |
| pubmed_qa | pubmedqa | `Abstract: {abstract}\\nQuestion: {question}\\nAnswer:` | yes, no, maybe |

No harness YAML of these tasks filters rows, so nothing is dropped (arc keeps its 3- and 5-choice
questions, which `prompt_style=gap` drops). Data differences from the hub copies the harness reads:
our hellaswag has `ctx` but not `ctx_a`/`ctx_b` (the harness builds `ctx_a + " " + ctx_b.capitalize()`;
we use `ctx` as it is) and its WikiHow markup was already stripped; our pubmed_qa has one `abstract`
string where the harness joins the hub's `CONTEXTS` with newlines.

The four dialogue tasks have no harness definition: under `prompt_style=harness` they keep the gap
format and scoring (`gap.data.tasks`).

Encoding follows the harness's HF backend (`_encode_pair`): white space at the end of the context moves
to the start of the continuation; `whole = tok(context + continuation)`, `context = tok(context)`,
`continuation = whole[len(context):]`; no special tokens; an empty context becomes the prefix token
(BOS, else EOS). Metrics: `acc` = argmax of the summed log-likelihoods, `acc_norm` = argmax of the
log-likelihoods divided by the character length of each `doc_to_choice` entry (the harness's
`completion_len`; for winogrande those are its contexts). The harness's YAMLs list `acc_norm` for piqa,
hellaswag, arc and mathqa only; we report it for all eight.
"""
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gap.data.tasks import check_task_names, format_rows, math_qa_options, task_file
from gap.errors import DataError


@dataclass
class HarnessExample:
    """One harness document: its requests, one `(context, continuation)` string pair per choice."""
    index: int                         # row in the task's file
    requests: list[tuple[str, str]]
    choices: list[str]                 # `doc_to_choice`: their lengths normalise `acc_norm`
    label: int


# ---------------------------------------------------------------- the task definitions

def hellaswag_preprocess(text: str) -> str:
    """The harness's hellaswag `preprocess` (utils.py)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")  # brackets are artifacts of the WikiHow part of HellaSwag
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _copa_text(doc):
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    return doc["premise"].strip()[:-1] + f" {connector}"  # drop the period


def _copa_convert(choice):
    return choice[0].lower() + choice[1:]


def _winogrande_choices(doc):
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


def _winogrande_target(doc):
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def _arc_target(doc):
    return doc["choices"]["label"].index(doc["answerKey"])


@dataclass(frozen=True)
class HarnessTask:
    name: str                                   # ours
    harness_name: str                           # lm-evaluation-harness's
    fields: tuple[str, ...]                     # required in every row
    doc_to_text: Callable[[dict], str | int]    # an int: the gold index of a multiple-input task
    doc_to_choice: Callable[[dict], list[str]]
    doc_to_target: Callable[[dict], int | str]  # a str: one of the choices (or, multiple input, the continuation)
    target_delimiter: str = " "
    process_doc: Callable[[dict], dict] | None = None


HARNESS_TASKS = {t.name: t for t in [
    HarnessTask("piqa", "piqa", ("goal", "sol1", "sol2", "label"),
                lambda d: f"Question: {d['goal']}\nAnswer:", lambda d: [d["sol1"], d["sol2"]],
                lambda d: int(d["label"])),
    HarnessTask("hellaswag", "hellaswag", ("activity_label", "ctx", "endings", "label"),
                lambda d: d["query"], lambda d: d["choices"], lambda d: int(d["label"]),
                process_doc=lambda d: {**d, "query": hellaswag_preprocess(d["activity_label"] + ": " + d["ctx"]),
                                       "choices": [hellaswag_preprocess(e) for e in d["endings"]]}),
    *[HarnessTask(name, name, ("question", "choices", "answerKey"),
                  lambda d: f"Question: {d['question']}\nAnswer:", lambda d: list(d["choices"]["text"]), _arc_target)
      for name in ("arc_easy", "arc_challenge")],
    HarnessTask("copa", "copa", ("premise", "choice1", "choice2", "question", "label"), _copa_text,
                lambda d: [" " + _copa_convert(d["choice1"]), " " + _copa_convert(d["choice2"])],
                lambda d: " " + _copa_convert(d["choice1"] if d["label"] == 0 else d["choice2"])),
    HarnessTask("winogrande", "winogrande", ("sentence", "option1", "option2", "answer"),
                lambda d: {"1": 0, "2": 1}[d["answer"]], _winogrande_choices, _winogrande_target),
    HarnessTask("math_qa", "mathqa", ("Problem", "options", "correct"),
                lambda d: f"Question: {d['Problem']}\nAnswer:", lambda d: math_qa_options(d["options"]),
                lambda d: ["a", "b", "c", "d", "e"].index(d["correct"])),
    HarnessTask("pubmed_qa", "pubmedqa", ("question", "abstract", "final_decision"),
                lambda d: f"Abstract: {d['abstract']}\nQuestion: {d['question']}\nAnswer:",
                lambda d: ["yes", "no", "maybe"], lambda d: d["final_decision"]),
]}


def make_example(task: str, row: dict, index: int = 0) -> HarnessExample:
    """The harness's requests and gold index for one row (`construct_requests`, `process_results`)."""
    spec = HARNESS_TASKS[task]
    doc = spec.process_doc(row) if spec.process_doc else row
    text, choices, target = spec.doc_to_text(doc), spec.doc_to_choice(doc), spec.doc_to_target(doc)
    if isinstance(text, int):  # multiple input: the choices are contexts, the target the continuation
        requests = [(choice, spec.target_delimiter + target) for choice in choices]
        gold = text
    else:
        requests = [(text, spec.target_delimiter + choice) for choice in choices]
        gold = choices.index(target) if isinstance(target, str) else target
    if not 0 <= gold < len(choices):
        raise ValueError(f"gold index {gold} is not one of the {len(choices)} choices")
    return HarnessExample(index, requests, choices, gold)


def load_harness_examples(data_dir: Path, task: str, split: str, limit: int | None,
                          start: int = 0) -> list[HarnessExample]:
    """Examples `start .. start+limit` of a classification task split, in file order, no row dropped."""
    check_task_names([task])
    if task not in HARNESS_TASKS:
        raise DataError(f"task {task!r} has no lm-evaluation-harness definition (it keeps the gap format)")
    examples = format_rows(task_file(data_dir, task, split), task, HARNESS_TASKS[task].fields,
                           lambda row, index: make_example(task, row, index))
    return list(itertools.islice(examples, start, None if limit is None else start + limit))


# ---------------------------------------------------------------- the harness's encoding

def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prefix_token_id(tokenizer) -> int:
    """What the harness puts before a continuation with an empty context: BOS, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode_pair(tokenizer, context: str, continuation: str,
                contexts: dict | None = None) -> tuple[list[int], list[int]]:
    """Token ids of one request as the harness's HF backend builds them (`loglikelihood`, `_encode_pair`).
    `contexts` memoises context encodings across the requests of one example (its choices share one)."""
    if context == "":
        cont = _encode(tokenizer, continuation)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:  # trailing white space of the context belongs to the continuation
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    contexts = {} if contexts is None else contexts
    if context not in contexts:
        contexts[context] = _encode(tokenizer, context)
    return contexts[context], whole[len(contexts[context]):]
