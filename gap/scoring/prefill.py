"""One forward pass over a batch of contexts that scoring and generation both continue from."""
from dataclasses import dataclass

import torch

from gap.scoring.batching import left_pad


@dataclass
class Prefill:
    cache: object               # the model's KV cache after the contexts
    mask: torch.Tensor          # [rows, context width] attention mask (left padding = 0)
    lengths: torch.Tensor       # [rows] real context tokens = position of the next token
    last_logits: torch.Tensor   # [rows, vocab] fp32 logits after each context's last token


@torch.no_grad()
def prefill(model, contexts: list[list[int]], pad_id: int) -> Prefill:
    """Run left-padded contexts once and keep their KV cache and last-position logits."""
    ids, mask, positions = left_pad(contexts, pad_id, model.device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    return Prefill(out.cache, mask, mask.sum(-1), out.logits[:, -1].float())


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax(logits)[target] in fp32, without materialising the whole log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


@torch.no_grad()
def extend_and_score(model, state: Prefill, rows: list[int], continuations: list[list[int]],
                     pad_id: int) -> list[list[float]]:
    """Per-token log-probabilities of continuations that follow the prefilled contexts `rows`.

    The first token of each continuation is scored from the prefill's last logits; the rest in one
    forward pass over the continuations (right-padded) on top of the cache, which is left holding them:
    `state.cache` is re-indexed to `rows` when they are not the prefill's own rows, and callers that
    continue from the contexts crop it back.
    """
    device = state.last_logits.device
    index = torch.tensor(rows, device=device)
    firsts = torch.tensor([c[0] for c in continuations], device=device)
    first = token_logprobs(state.last_logits[index], firsts).tolist()
    width = max(len(c) for c in continuations) - 1
    if width == 0:
        return [[f] for f in first]
    if rows != list(range(len(state.lengths))):
        state.cache.batch_select_indices(index)
    ids = torch.full((len(rows), width + 1), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, cont in enumerate(continuations):
        ids[row, :len(cont)] = torch.tensor(cont)
        mask[row, :len(cont) - 1] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = state.lengths[index].unsqueeze(-1) + torch.arange(width, device=device)
    out = model(input_ids=ids[:, :-1], attention_mask=torch.cat([state.mask[index], mask], dim=1),
                position_ids=positions, cache=state.cache, use_cache=True)
    rest = token_logprobs(out.logits, ids[:, 1:]).tolist()
    return [[f] + r[:len(c) - 1] for f, r, c in zip(first, rest, continuations)]
