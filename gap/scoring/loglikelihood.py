"""Log-probabilities of continuations (choices, dialogue targets) given their contexts."""
import torch

from gap.ordering import in_input_order, length_sorted_batches
from gap.scoring.attention import attention_of
from gap.scoring.batching import FILL, LOGITS_BUDGET, left_pad, vocab_size
from gap.scoring.linear import with_onednn_linears
from gap.scoring.packing import Segment, packed_forward, packed_rows
from gap.scoring.prefill import logprobs_at


def fits(context: list[int], continuations: list[list[int]], max_length: int) -> bool:
    """Whether the context and its longest continuation fit `max_length` untruncated. A request that does
    not is scored continuation by continuation, as the authors truncated it: `(context + continuation)[-max_length:]`
    (`continuation_logprobs`), since each continuation then sees a differently truncated context."""
    return len(context) + max(len(c) for c in continuations) <= max_length


@with_onednn_linears("scoring")
def continuation_logprobs(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, max_length: int,
                          max_tokens: int | None = None, logits_budget: int = LOGITS_BUDGET,
                          greedy: bool = False) -> list:
    """Per-token log-probabilities of each continuation after its context, every pair on its own row, in
    passes of at most `max_tokens` padded tokens whose logits fit `logits_budget` (`length_sorted_batches`;
    a pair over a budget runs alone). `greedy`: as `logprobs_at`."""
    widths = [min(len(ctx) + len(cont), max_length) for ctx, cont in pairs]
    kept = [min(len(cont), max_length - 1) + 1 for _, cont in pairs]
    groups = length_sorted_batches(widths, len(pairs), max_tokens, fill=None, kept=kept,
                                   max_positions=logits_budget // vocab_size(model))
    return in_input_order(len(pairs), [(g, _continuation_pass(model, [pairs[i] for i in g], pad_id, max_length,
                                                              greedy)) for g in groups])


@torch.no_grad()
def _continuation_pass(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, max_length: int,
                       greedy: bool = False) -> list:
    """One forward pass: each pair (context ids, continuation ids) is seen as
    `(context + continuation)[-max_length:]`; only the last `len(continuation) + 1` positions go
    through the output layer."""
    seqs = [(ctx + cont)[-max_length:] for ctx, cont in pairs]
    conts = [cont[-(max_length - 1):] for _, cont in pairs]
    ids, mask, positions = left_pad(seqs, pad_id, model.device)
    keep = max(len(c) for c in conts) + 1
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep, use_cache=False).logits
    # the logits at kept index j predict the token at kept index j + 1: a continuation of n tokens, the last n
    return logprobs_at(logits, [(row, range(keep - 1 - len(cont), keep - 1)) for row, cont in enumerate(conts)],
                       conts, greedy)


def packed_width(context: list[int], choices: list[list[int]]) -> int:
    """The width of a request's packed row: the context, then every choice but its last token."""
    return len(context) + sum(len(c) - 1 for c in choices)


def pack(requests: list[tuple[list[int], list[list[int]]]], pad_id: int):
    """Left-padded rows of context + every choice but its last token (`packed_rows`): each choice segment
    sees the whole context and itself causally, and takes positions on from the context's length, so each
    choice is scored as if it were alone. Returns the rows, and per choice the (row, columns) of the
    logits that score its tokens."""
    rows = [[Segment(ctx)] + [Segment(c[:-1], len(ctx), parent=0) for c in choices] for ctx, choices in requests]
    packed = packed_rows(rows, pad_id)
    where = []
    for r, ((ctx, choices), starts) in enumerate(zip(requests, packed.columns)):
        last = starts[0] + len(ctx) - 1
        # c[0] is scored at the context's last token, c[t] at the segment's token t - 1
        where += [(r, [last] + list(range(col, col + len(c) - 1))) for col, c in zip(starts[1:], choices)]
    return packed, where


@torch.no_grad()
def packed_pass(model, requests: list[tuple[list[int], list[list[int]]]], pad_id: int, greedy: bool = False) -> list:
    """Per-token log-probabilities of every choice of every request (flat, in order), from one forward
    pass over packed rows (`pack`): no cache copies, no second pass. Only the positions from each row's
    last context token on reach the output layer (`logits_to_keep`)."""
    packed, where = pack(requests, pad_id)
    width = packed.ids.shape[1]
    keep = width - min(cols[0] for _, cols in where)
    logits = packed_forward(model, packed, keep, use_cache=False).logits
    return logprobs_at(logits, [(r, [c - (width - keep) for c in cols]) for r, cols in where],
                       [c for _, choices in requests for c in choices], greedy)


def packed_choice_logprobs(model, requests: list[tuple[list[int], list[list[int]]]], pad_id: int,
                           fill: float = FILL, logits_budget: int = LOGITS_BUDGET, greedy: bool = False) -> list:
    """Per-token log-probabilities of every choice of every request, in packed passes (`packed_pass`).

    Rows go widest first; a pass closes at a row narrower than `fill` x its widest, so that padding stays
    under 1 - `fill` of each pass (on a CPU padding costs as much as real tokens; smaller passes do not),
    or when its logits would pass `logits_budget` (`length_sorted_batches`).
    """
    widths = [packed_width(ctx, choices) for ctx, choices in requests]
    kept = [width - len(ctx) + 1 for width, (ctx, _) in zip(widths, requests)]  # from the context's last token
    groups = length_sorted_batches(widths, len(widths), fill=fill, kept=kept,
                                   max_positions=logits_budget // vocab_size(model))
    return in_input_order(len(requests), [(g, per_request([requests[i] for i in g], packed_pass(
        model, [requests[i] for i in g], pad_id, greedy))) for g in groups])


def per_request(requests: list[tuple[list[int], list[list[int]]]], flat: list) -> list[list]:
    """Flat per-choice results regrouped per request."""
    scores = iter(flat)
    return [[next(scores) for _ in choices] for _, choices in requests]


@with_onednn_linears("scoring")
@torch.no_grad()
def choice_logprobs(model, requests: list[tuple[list[int], list[list[int]]]], pad_id: int, max_length: int,
                    share_context: bool = True, max_tokens: int | None = None, greedy: bool = False,
                    logits_budget: int = LOGITS_BUDGET) -> list:
    """Per-token log-probabilities of every choice of every (context, choices) request; with `greedy`, per
    choice (those log-probabilities, whether each of its tokens is the model's argmax) (`logprobs_at`).
    A pass holds at most `logits_budget` fp32 logits.

    With `share_context`, each context runs once, packed with its choices in one forward pass
    (`packed_choice_logprobs`), where its packed row is no wider than the model serves exactly
    (`attention_of`). A request that `fits` refuses, or too wide to pack, is scored choice by choice, in
    passes of at most `max_tokens` padded tokens.
    """
    attention = attention_of(model)
    shared = [i for i, (ctx, choices) in enumerate(requests) if share_context and ctx
              and fits(ctx, choices, max_length) and attention.packs(packed_width(ctx, choices))]
    alone = sorted(set(range(len(requests))) - set(shared))
    pairs = [(requests[i][0], c) for i in alone for c in requests[i][1]]
    return in_input_order(len(requests), [
        (shared, packed_choice_logprobs(model, [requests[i] for i in shared], pad_id, logits_budget=logits_budget,
                                        greedy=greedy)),
        (alone, per_request([requests[i] for i in alone], continuation_logprobs(
            model, pairs, pad_id, max_length, max_tokens, logits_budget=logits_budget, greedy=greedy)))])
