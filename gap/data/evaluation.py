"""Evaluation data: one dataloader per task, tokenised once, in length-sorted batches."""
from dataclasses import dataclass
import lightning as L
from torch.utils.data import DataLoader

from gap.data.tasks import TASKS, Example
from gap.scoring.batching import length_sorted_batches


@dataclass
class EvalItem:
    """One example with its token ids: the context, and each choice or the dialogue target."""
    task: str
    example: Example
    context: list[int]
    continuations: list[list[int]]  # the choices, or [target] for dialogue
    target_text: str | None = None  # dialogue: the target as its tokens decode (what the authors scored)

    def cost(self, max_new_tokens: int) -> int:
        """Tokens this example puts through the model: context, every choice or target, the reply."""
        reply = max_new_tokens if self.target_text is not None else 0
        return len(self.context) + sum(len(c) for c in self.continuations) + reply


def tokenize_example(task: str, example: Example, tokenizer, max_length: int) -> EvalItem:
    """Token ids as the authors built them: the context and a dialogue target with the tokenizer's
    special tokens, each choice without; all left-truncated to `max_length`."""
    def encode(text, special=True):
        return tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=special)["input_ids"]

    context = encode(example.context)
    if TASKS[task].kind == "classification":
        return EvalItem(task, example, context, [encode(c, special=False) for c in example.choices])
    target = encode(example.target)
    return EvalItem(task, example, context, [target], tokenizer.decode(target, skip_special_tokens=True))


class EvalDataModule(L.LightningDataModule):
    """The evaluation tasks, in the order given; examples are read and tokenised once."""

    def __init__(self, examples: dict[str, list[Example]], tokenizer, max_length: int, batch_size: int,
                 max_batch_tokens: int | None = None, max_new_tokens: int = 32):
        super().__init__()
        self.tasks = list(examples)
        self.batch_size, self.max_batch_tokens, self.max_new_tokens = batch_size, max_batch_tokens, max_new_tokens
        self.items = {task: [tokenize_example(task, ex, tokenizer, max_length) for ex in exs]
                      for task, exs in examples.items()}

    def val_dataloader(self):
        loaders = []
        for task in self.tasks:
            items = self.items[task]
            batches = length_sorted_batches([it.cost(self.max_new_tokens) for it in items], self.batch_size,
                                            self.max_batch_tokens)
            loaders.append(DataLoader(items, batch_sampler=batches, collate_fn=list))
        return loaders
