"""The 12 evaluation tasks in the GAP authors' format (`prompt_style=gap`).

Each task turns one row of its JSONL file (hub field names) into an `Example`, or drops the row as the
authors' loader did. Evaluation takes the first `limit` examples that remain, in file order.
"""
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gap.data.jsonl import iter_jsonl
from gap.data.text import normalize_reply
from gap.errors import DataError


@dataclass
class Example:
    index: int                       # row in the task's file
    context: str
    choices: list[str] | None = None  # classification
    label: int | None = None
    target: str | None = None         # dialogue: the normalised last turn


def _piqa(row):
    return Example(0, row["goal"], [" " + row["sol1"], " " + row["sol2"]], int(row["label"]))


def _hellaswag(row):
    return Example(0, row["ctx"], [" " + e for e in row["endings"]], int(row["label"]))


def _arc(row):
    texts, labels = row["choices"]["text"], row["choices"]["label"]
    if len(texts) != 4:  # the authors kept only 4-choice questions
        return None
    return Example(0, row["question"], [" " + t for t in texts], labels.index(row["answerKey"]))


def _copa(row):
    return Example(0, row["premise"], [" " + row["choice1"], " " + row["choice2"]], int(row["label"]))


def _winogrande(row):
    before, after = row["sentence"].split("_", 1)
    return Example(0, before.rstrip(), [" " + row["option1"] + after, " " + row["option2"] + after],
                   int(row["answer"]) - 1)


_MATH_QA_OPTION = re.compile(r"[abcd] \) .*?, |e \) .*?$")


def math_qa_options(options: str) -> list[str]:
    """Options `a ) x , b ) y , ... e ) z`: the text after `a ) `, trailing ` ,` stripped."""
    return [m[4:].rstrip(" ,") for m in _MATH_QA_OPTION.findall(options)]


def _math_qa(row):
    return Example(0, row["Problem"], math_qa_options(row["options"]), "abcde".index(row["correct"]))


def _pubmed_qa(row):
    context = f"Context: {row['abstract']}\nQuestion: {row['question']}\nAnswer:"
    return Example(0, context, [" yes", " maybe", " no"], ["yes", "maybe", "no"].index(row["final_decision"]))


def dialogue_prompt(turns: list[str]) -> str:
    """`User 1: ...\\nUser 2: ...\\n` alternately, ending with the next speaker's tag."""
    lines = [f"User {i % 2 + 1}: {normalize_reply(turn)}\n" for i, turn in enumerate(turns)]
    return "".join(lines) + f"User {len(turns) % 2 + 1}:"


def _dialogue(row):
    turns = row["turns"]
    if len(turns) < 2:
        return None
    return Example(0, dialogue_prompt(turns[:-1]), target=normalize_reply(turns[-1]))


@dataclass(frozen=True)
class Category:
    """Tasks scored alike, averaged together and selected together (the authors' two categories).
    `name` is the word results use (`best.<name>`, `selected/<name>/...`); each task reports `metric`,
    and their mean is `average`."""
    name: str
    metric: str

    @property
    def average(self) -> str:
        return f"avg/{self.name}_{self.metric}"

    @property
    def tasks(self) -> list[str]:
        return [n for n, t in TASKS.items() if t.category == self]


CLASSIFICATION_CATEGORY = Category("classification", "acc")  # choices scored by log-likelihood; accuracy
DIALOG_CATEGORY = Category("dialog", "f1")                   # greedy replies; unigram F1
# lm-evaluation-harness tasks (`gap.harness`, `lm_eval/<name>`): each its primary metric, signed so that
# higher is better (`score`); selected on only with `lm_eval.select` or in a run of harness tasks alone
LM_EVAL_CATEGORY = Category("lm_eval", "score")
LM_EVAL_PREFIX = "lm_eval/"
CATEGORIES = {c.name: c for c in (CLASSIFICATION_CATEGORY, DIALOG_CATEGORY, LM_EVAL_CATEGORY)}
AVERAGES = {name: c.average for name, c in CATEGORIES.items()}  # category -> its average's metric key


@dataclass(frozen=True)
class Task:
    name: str
    category: Category
    fields: tuple[str, ...]         # required in every row
    make: Callable[[dict], Example | None]

    @property
    def scored(self) -> bool:
        """Whether examples are choices to score (classification) rather than replies to generate."""
        return self.category == CLASSIFICATION_CATEGORY


TASKS = {t.name: t for t in [
    Task("piqa", CLASSIFICATION_CATEGORY, ("goal", "sol1", "sol2", "label"), _piqa),
    Task("hellaswag", CLASSIFICATION_CATEGORY, ("ctx", "endings", "label"), _hellaswag),
    Task("arc_easy", CLASSIFICATION_CATEGORY, ("question", "choices", "answerKey"), _arc),
    Task("arc_challenge", CLASSIFICATION_CATEGORY, ("question", "choices", "answerKey"), _arc),
    Task("copa", CLASSIFICATION_CATEGORY, ("premise", "choice1", "choice2", "label"), _copa),
    Task("winogrande", CLASSIFICATION_CATEGORY, ("sentence", "option1", "option2", "answer"), _winogrande),
    Task("math_qa", CLASSIFICATION_CATEGORY, ("Problem", "options", "correct"), _math_qa),
    Task("pubmed_qa", CLASSIFICATION_CATEGORY, ("question", "abstract", "final_decision"), _pubmed_qa),
    *[Task(name, DIALOG_CATEGORY, ("turns",), _dialogue) for name in
      ("wizard_of_wikipedia", "empathetic_dialogues", "blended_skill_talk", "wizard_of_internet")],
]}
CLASSIFICATION = CLASSIFICATION_CATEGORY.tasks
DIALOGUE = DIALOG_CATEGORY.tasks


def task_of(key: str) -> str:
    """The task of a metric key: `copa/acc` -> copa, `lm_eval/gsm8k/exact_match,strict-match` -> lm_eval/gsm8k."""
    return key.rsplit("/", 1)[0]


def category_name(task: str) -> str:
    """A task's category: ours from `TASKS`, a harness unit's (`lm_eval/<name>`) lm_eval."""
    return LM_EVAL_CATEGORY.name if task.startswith(LM_EVAL_PREFIX) else TASKS[task].category.name


def check_task_names(names) -> None:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise DataError(f"unknown task {unknown[0]!r}; valid tasks: {', '.join(TASKS)}")


def task_file(data_dir: Path, task: str, split: str) -> Path:
    return Path(data_dir) / "tasks" / task / f"{split}.jsonl"


def format_rows(path: Path, task: str, fields: tuple[str, ...], make: Callable[[dict, int], object]):
    """`make(row, index)` for each row of a task file, skipping rows it returns None for; a row missing
    a field in `fields` or that `make` cannot format raises `DataError` naming `file:line`, and so does a file
    with no usable row (empty, or every row dropped), once read to its end."""
    kept, index = 0, -1
    for index, (line, row) in enumerate(iter_jsonl(path)):
        missing = [f for f in fields if row.get(f) is None]
        if missing:
            raise DataError(f"{path}:{line}: missing field {missing[0]!r} (a {task} row needs {', '.join(fields)})")
        try:
            item = make(row, index)
        except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{path}:{line}: a {task} row that cannot be formatted ({type(err).__name__}: {err})")
        if item is not None:
            kept += 1
            yield item
    if not kept:
        why = f"all {index + 1} rows dropped by the task's filters" if index >= 0 else "the file holds no rows"
        raise DataError(f"{path}: no usable {task} row ({why})")


def load_examples(data_dir: Path, task: str, split: str, limit: int | None, start: int = 0) -> list[Example]:
    """Examples `start .. start+limit` of a task split after the authors' filters, in file order."""
    check_task_names([task])
    spec = TASKS[task]

    def make(row, index):
        example = spec.make(row)
        if example is None:
            return None
        if example.choices is not None and not 0 <= example.label < len(example.choices):
            raise ValueError(f"label {example.label} is not one of its {len(example.choices)} choices "
                             f"(valid: 0..{len(example.choices) - 1}; a hidden test label?)")
        example.index = index
        return example

    examples = format_rows(task_file(data_dir, task, split), task, spec.fields, make)
    return list(itertools.islice(examples, start, None if limit is None else start + limit))
