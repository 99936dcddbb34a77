"""Log-probabilities of continuations (choices, dialogue targets) given their contexts."""
import torch

from gap.scoring.batching import left_pad
from gap.scoring.prefill import Prefill, extend_and_score, prefill, token_logprobs


@torch.no_grad()
def continuation_logprobs(model, pairs: list[tuple[list[int], list[int]]], pad_id: int,
                          max_length: int) -> list[list[float]]:
    """Per-token log-probabilities of each continuation after its context, every pair on its own row.

    Each pair is (context ids, continuation ids); the model sees `(context + continuation)[-max_length:]`.
    Only the last `len(continuation) + 1` positions go through the output layer.
    """
    seqs = [(ctx + cont)[-max_length:] for ctx, cont in pairs]
    conts = [cont[-(max_length - 1):] for _, cont in pairs]
    ids, mask, positions = left_pad(seqs, pad_id, model.device)
    keep = max(len(c) for c in conts) + 1
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep, use_cache=False).logits
    # the logits at kept index j predict the token at kept index j + 1
    scores = token_logprobs(logits[:, :-1], ids[:, -(keep - 1):]).cpu()
    return [scores[row, keep - 1 - len(cont):].tolist() for row, cont in enumerate(conts)]


@torch.no_grad()
def choice_logprobs(model, requests: list[tuple[list[int], list[list[int]]]], pad_id: int, max_length: int,
                    share_context: bool = True, state: Prefill | None = None) -> list[list[list[float]]]:
    """Per-token log-probabilities of every choice of every (context, choices) request.

    With `share_context`, each context runs once and its choices are scored from its KV cache (`state`,
    when the caller has already prefilled every request's context, as dialogue does for generation). A
    request whose context + longest choice exceeds `max_length` is scored choice by choice, since each of
    its choices then sees a differently truncated context.
    """
    shared = [i for i, (ctx, choices) in enumerate(requests)
              if share_context and ctx and len(ctx) + max(len(c) for c in choices) <= max_length]
    results: list = [None] * len(requests)
    if shared:
        if state is None:
            state = prefill(model, [requests[i][0] for i in shared], pad_id)
            row_of = {i: row for row, i in enumerate(shared)}
        else:
            row_of = {i: i for i in shared}
        rows = [row_of[i] for i in shared for _ in requests[i][1]]
        scores = iter(extend_and_score(model, state, rows, [c for i in shared for c in requests[i][1]], pad_id))
        for i in shared:
            results[i] = [next(scores) for _ in requests[i][1]]
    alone = [i for i in range(len(requests)) if results[i] is None]
    if alone:
        pairs = [(requests[i][0], c) for i in alone for c in requests[i][1]]
        scores = iter(continuation_logprobs(model, pairs, pad_id, max_length))
        for i in alone:
            results[i] = [next(scores) for _ in requests[i][1]]
    return results
