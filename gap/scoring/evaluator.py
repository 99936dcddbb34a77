"""The evaluation as plain functions: a model, its tokenizer and a batch of one task's items in,
per-example records out. Lightning's validation loop (`GAPModule`), `gap.eval` and the benchmarks
all call `score_batch`; `gap.scoring.metrics` turns the records into metrics."""
from dataclasses import dataclass, field

import numpy as np

from gap.data.tasks import TASKS
from gap.ordering import in_input_order, length_sorted_batches
from gap.scoring.generation import generate_from
from gap.scoring.linear import with_onednn_linears
from gap.scoring.loglikelihood import choice_logprobs, continuation_logprobs, fits
from gap.scoring.metrics import unigram_f1
from gap.scoring.prefill import keeps_state, prefill


@dataclass(frozen=True)
class Scoring:
    """How items are scored (the `eval` config and the model's `max_length`)."""
    max_length: int = 512
    max_new_tokens: int = 32
    stops: tuple[str, ...] = field(default=("\nUser ",))
    share_context: bool = True
    harness: bool = False               # prompt_style=harness: `acc_norm`, windows of max_length + 1
    max_batch_tokens: int | None = None  # most padded tokens in one pass of requests scored one by one


@with_onednn_linears("scoring")
def score_batch(model, tokenizer, task: str, items: list, scoring: Scoring) -> list[dict]:
    """Per-example records of one batch of a task's items (`gap.data.evaluation.EvalItem`)."""
    if TASKS[task].scored:
        return classify(model, tokenizer, items, scoring)
    return converse(model, tokenizer, items, scoring)


def classify(model, tokenizer, items: list, scoring: Scoring) -> list[dict]:
    """`pred`: the choice of highest summed log-likelihood (the first of ties, as the authors' argmin).
    With `harness`, also `pred_norm` (log-likelihood over the choice's character length, as
    lm-evaluation-harness 0.4), scoring windows of `max_length + 1` tokens (the harness feeds
    `max_length` tokens and scores the next)."""
    requests, owner = [], []
    for n, it in enumerate(items):
        if it.contexts is None:  # one context shared by the choices
            requests.append((it.context, it.continuations))
            owner.append(n)
        else:  # harness multiple-input tasks (winogrande): one context per choice
            requests += [(ctx, [cont]) for ctx, cont in zip(it.contexts, it.continuations)]
            owner += [n] * len(it.contexts)
    window = scoring.max_length + 1 if scoring.harness else scoring.max_length
    scores = choice_logprobs(model, requests, tokenizer.pad_token_id, window, scoring.share_context,
                             scoring.max_batch_tokens)
    per_item = [[] for _ in items]
    for n, choice_scores in zip(owner, scores):
        per_item[n].extend(choice_scores)
    records = []
    for it, choice_scores in zip(items, per_item):
        lls = [sum(s) for s in choice_scores]
        record = {"index": it.example.index, "label": it.example.label, "pred": int(np.argmax(lls)),
                  "loglikelihoods": lls}
        if scoring.harness:
            lengths = np.array([float(len(c)) for c in it.example.choices])
            with np.errstate(divide="ignore", invalid="ignore"):
                record["pred_norm"] = int(np.argmax(np.array(lls) / lengths))
        records.append(record)
    return records


def converse(model, tokenizer, items: list, scoring: Scoring) -> list[dict]:
    """A greedy reply (`pred`, its unigram F1 against the target) and the target's teacher-forced NLL,
    both from one pass over prompt + target. A model that keeps a recurrent state (`keeps_state`) scores
    its targets apart and decodes its prompts in passes of at most `max_batch_tokens`."""
    pad_id = tokenizer.pad_token_id
    stateful = keeps_state(model)
    # a prompt + target over max_length is scored apart, as the authors truncated it; a stateful model's, always
    whole = [not stateful and fits(it.context, it.continuations, scoring.max_length) for it in items]
    groups = length_sorted_batches([it.cost(scoring.max_new_tokens) for it in items], len(items),
                                   scoring.max_batch_tokens, fill=None) if stateful else [list(range(len(items)))]
    teacher_forced, replies = {}, []
    for group in groups:
        state = prefill(model, [items[i].context for i in group], pad_id,
                        targets=[items[i].continuations[0] if whole[i] else [] for i in group],
                        max_tokens=scoring.max_batch_tokens, room=scoring.max_new_tokens)
        teacher_forced.update((i, lls) for i, lls in zip(group, state.target_logprobs) if whole[i])
        replies.append((group, generate_from(model, tokenizer, state, scoring.max_new_tokens, list(scoring.stops))))
    apart = [i for i, fit in enumerate(whole) if not fit]
    pairs = [(items[i].context, items[i].continuations[0]) for i in apart]
    token_lls = in_input_order(len(items), [
        (list(teacher_forced), list(teacher_forced.values())),
        (apart, continuation_logprobs(model, pairs, pad_id, scoring.max_length, scoring.max_batch_tokens))])
    replies = in_input_order(len(items), replies)
    return [{"index": it.example.index, "target": it.example.target, "pred": reply,
             "f1": unigram_f1(reply, it.target_text), "nll": -sum(lls), "tokens": len(lls)}
            for it, lls, reply in zip(items, token_lls, replies)]


@with_onednn_linears("scoring")
def evaluate(model, tokenizer, batches: dict[str, list[list]], scoring: Scoring) -> dict[str, list[dict]]:
    """Every task's records in example order, from its batches of items: the evaluation without a
    Trainer (the benchmarks; a single process)."""
    return {task: sorted((r for batch in task_batches for r in score_batch(model, tokenizer, task, batch, scoring)),
                         key=lambda r: r["index"])
            for task, task_batches in batches.items()}
