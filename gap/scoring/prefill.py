"""One forward pass over a batch of contexts that scoring and generation both continue from."""
import copy
from dataclasses import dataclass

import torch

from gap.scoring.batching import left_pad, length_sorted_batches


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


def _rows_of(cache, index: torch.Tensor):
    """A cache holding rows `index` of `cache`, which stays as it was."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(index)
    return selected


@torch.no_grad()
def extend_and_score(model, state: Prefill, rows: list[int], continuations: list[list[int]],
                     pad_id: int) -> list[list[float]]:
    """Per-token log-probabilities of continuations that follow the prefilled contexts `rows`.

    The first token of each continuation is scored from the prefill's last logits; the rest in forward
    passes over the continuations (right-padded, in buckets of similar length: `length_sorted_batches`)
    on top of copies of the contexts' cache rows. `state` is left unchanged, so generation can continue from it.
    """
    device = state.last_logits.device
    index = torch.tensor(rows, device=device)
    firsts = torch.tensor([c[0] for c in continuations], device=device)
    scores = [[f] for f in token_logprobs(state.last_logits[index], firsts).tolist()]
    for bucket in length_sorted_batches([len(c) - 1 for c in continuations], len(continuations)):
        conts = [continuations[i] for i in bucket]
        width = max(len(c) for c in conts) - 1
        if width == 0:
            continue
        ids = torch.full((len(conts), width + 1), pad_id, dtype=torch.long)
        mask = torch.zeros((len(conts), width), dtype=torch.long)
        for row, cont in enumerate(conts):
            ids[row, :len(cont)] = torch.tensor(cont)
            mask[row, :len(cont) - 1] = 1
        ids, mask = ids.to(device), mask.to(device)
        owners = index[bucket]
        positions = state.lengths[owners].unsqueeze(-1) + torch.arange(width, device=device)
        out = model(input_ids=ids[:, :-1], attention_mask=torch.cat([state.mask[owners], mask], dim=1),
                    position_ids=positions, cache=_rows_of(state.cache, owners), use_cache=True)
        rest = token_logprobs(out.logits, ids[:, 1:]).tolist()
        for i, cont, r in zip(bucket, conts, rest):
            scores[i] += r[:len(cont) - 1]
    return scores
