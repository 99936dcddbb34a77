"""Evaluation data: one dataloader per task, tokenised once, in length-sorted batches."""
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from gap.data.encoding import encode
from gap.data.harness import HarnessExample, encode_pair, load_harness_examples
from gap.data.tasks import LM_EVAL_PREFIX, TASKS, Example, load_examples, task_file
from gap.memory.estimate import KV_TOKENS
from gap.ordering import length_sorted_batches

PROMPT_STYLES = ("gap", "harness")


@dataclass
class EvalItem:
    """One example with its token ids: the context, and each choice or the dialogue target."""
    task: str
    example: Example | HarnessExample
    context: list[int]
    continuations: list[list[int]]  # the choices, or [target] for dialogue
    target_text: str | None = None  # dialogue: the target as its tokens decode (what the authors scored)
    contexts: list[list[int]] | None = None  # harness: one context per choice where they differ (winogrande)

    def cost(self, max_new_tokens: int) -> int:
        """Tokens this example puts through the model: context, every choice or target, the reply."""
        reply = max_new_tokens if self.target_text is not None else 0
        contexts = sum(len(c) for c in self.contexts) if self.contexts is not None else len(self.context)
        return contexts + sum(len(c) for c in self.continuations) + reply


def _tokenize_harness(task: str, example: HarnessExample, tokenizer, max_length: int) -> EvalItem:
    """Each request encoded as the harness does (`encode_pair`). The scorer sees at most the last
    `max_length + 1` tokens of context + continuation (the harness feeds `max_length` and scores the
    next one), so keeping the last `max_length` context tokens changes nothing."""
    encoded: dict = {}
    pairs = [encode_pair(tokenizer, ctx, cont, encoded) for ctx, cont in example.requests]
    contexts = [ctx[-max_length:] for ctx, _ in pairs]
    shared = all(c == contexts[0] for c in contexts)
    return EvalItem(task, example, contexts[0], [cont for _, cont in pairs],
                    contexts=None if shared else contexts)


def tokenize_example(task: str, example, tokenizer, max_length: int, prompt_style: str = "gap") -> EvalItem:
    """Token ids of one example.

    `gap`: as the authors built them: the context and a dialogue target with the tokenizer's special
    tokens, each choice without; all left-truncated to `max_length`.
    `harness`: a classification task as lm-evaluation-harness 0.4 encodes it (`gap.data.harness`); a
    dialogue task has no harness definition and keeps the gap format.
    """
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style={prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")
    if prompt_style == "harness" and TASKS[task].scored:
        if not isinstance(example, HarnessExample):
            raise TypeError(f"prompt_style=harness needs {task!r} examples from gap.data.harness")
        return _tokenize_harness(task, example, tokenizer, max_length)

    context = encode(tokenizer, example.context, max_length)
    if TASKS[task].scored:
        return EvalItem(task, example, context, [encode(tokenizer, c, max_length, special=False)
                                                 for c in example.choices])
    target = encode(tokenizer, example.target, max_length)
    return EvalItem(task, example, context, [target], tokenizer.decode(target, skip_special_tokens=True))


def load_eval_examples(data_dir: Path, tasks: list[str], split: str, limit: int | None,
                       prompt_style: str = "gap", heldout: bool = False) -> dict[str, list]:
    """The first `limit` examples of each task in a prompt style. `harness` reads the classification
    tasks as lm-evaluation-harness documents (it keeps rows the gap format drops, such as arc's 3- and
    5-choice questions); dialogue tasks always use the gap format.

    `heldout`: instead, `limit` examples that the selection slice (the first `limit` of `split`) never saw:
    selecting on validation, a task's test split where it has one; otherwise the examples of `split` after
    the first `limit`.
    """
    def load(task):
        harness = prompt_style == "harness" and TASKS[task].scored
        where, start = split, 0
        if heldout:
            test_apart = split == "validation" and task_file(data_dir, task, "test").is_file()
            where, start = ("test", 0) if test_apart else (split, limit)
        return (load_harness_examples if harness else load_examples)(data_dir, task, where, limit, start)
    return {task: load(task) for task in tasks}


class EvalDataModule(L.LightningDataModule):
    """The evaluation tasks, in the order given: `setup` tokenises every example once and groups each
    task's examples into length-sorted batches: a classification task's of `batch_size` examples and
    `max_batch_tokens`, a dialogue task's as large as the KV cache allows; a harness unit's documents
    (`lm_eval/<name>`, `gap.harness.tasks.HarnessDoc`) are one batch, which the harness evaluates whole;
    `val_dataloader` gives one dataloader per task."""

    def __init__(self, examples: dict[str, list], tokenizer, max_length: int, batch_size: int,
                 max_batch_tokens: int | None = None, max_new_tokens: int = 32, prompt_style: str = "gap",
                 ranks: int = 1):
        super().__init__()
        self.examples, self.tokenizer, self.prompt_style = examples, tokenizer, prompt_style
        self.ranks = ranks  # processes that split the batches: a dialogue task gives each at least one
        self.max_length, self.batch_size = max_length, batch_size
        self.max_batch_tokens, self.max_new_tokens = max_batch_tokens, max_new_tokens
        self.tasks = list(examples)
        self.items: dict[str, list[EvalItem]] = {}
        self.batches: dict[str, list[list[int]]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.items:
            return
        for task, examples in self.examples.items():
            if task.startswith(LM_EVAL_PREFIX):
                self.items[task] = list(examples)
                self.batches[task] = [list(range(len(examples)))] if examples else []
                continue
            items = [tokenize_example(task, ex, self.tokenizer, self.max_length, self.prompt_style) for ex in examples]
            self.items[task] = items
            costs = [it.cost(self.max_new_tokens) for it in items]
            if TASKS[task].scored:  # batches close at half their widest
                self.batches[task] = length_sorted_batches(costs, self.batch_size, self.max_batch_tokens, fill=0.5)
            else:  # every row decodes at once (a batch more is a run of decoding steps more) while the
                #    KV cache stays within the memory preflight's; the prefill runs in passes of max_batch_tokens
                #    (none: the preflight counts full batches of full-length items)
                per_batch = self.max_batch_tokens or self.batch_size * (self.max_length + self.max_new_tokens)
                kv_tokens = KV_TOKENS * per_batch
                self.batches[task] = length_sorted_batches(costs, -(-len(items) // self.ranks), kv_tokens, fill=None)

    def item_batches(self) -> dict[str, list[list[EvalItem]]]:
        """Each task's batches of items, as the dataloaders give them (for evaluating without a Trainer)."""
        self.setup()
        return {task: [[self.items[task][i] for i in batch] for batch in self.batches[task]] for task in self.tasks}

    def val_dataloader(self):
        self.setup()
        return [DataLoader(self.items[task], batch_sampler=self.batches[task], collate_fn=list) for task in self.tasks]
