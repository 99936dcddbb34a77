"""One forward pass over a batch of contexts that scoring and generation both continue from."""
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from gap.ordering import in_input_order, length_sorted_batches
from gap.scoring.batching import left_pad


@dataclass
class Prefill:
    cache: object               # the model's KV cache after the contexts
    mask: torch.Tensor          # [rows, context width] attention mask (left padding = 0)
    lengths: torch.Tensor       # [rows] real context tokens = position of the next token
    last_logits: torch.Tensor   # [rows, vocab] fp32 logits after each context's last token
    target_logprobs: list[list[float]]  # per row, the log-probability of each teacher-forced target token


@torch.no_grad()
def prefill(model, contexts: list[list[int]], pad_id: int, targets: list[list[int]] | None = None,
            fill: float | None = None) -> Prefill:
    """Run left-padded contexts once and keep their KV cache and last-position logits.

    `targets` (one per context, possibly empty) are teacher-forced in the same pass, right-padded after
    their contexts: their token log-probabilities come from this pass, and the cache is then cut back to
    the contexts, so that generation continues from the context alone. Every layer's cache keeps every
    position (a sliding-window layer's own cache drops old ones and cannot be cut back): the model's
    masks apply the windows.

    With `fill`, rows run in passes of similar width (`length_sorted_batches`), whose caches are then
    joined, left-padded, into one: the passes waste little on padding, while generation still decodes
    every row at once.
    """
    targets = targets or [[] for _ in contexts]
    groups = length_sorted_batches([len(c) + len(t) for c, t in zip(contexts, targets)], len(contexts), fill=fill)
    if len(groups) == 1:
        return _prefill_pass(model, contexts, targets, pad_id)
    parts = [_prefill_pass(model, [contexts[i] for i in g], [targets[i] for i in g], pad_id) for g in groups]
    return _joined(parts, [torch.tensor(g, device=model.device) for g in groups], len(contexts))


def _prefill_pass(model, contexts: list[list[int]], targets: list[list[int]], pad_id: int) -> Prefill:
    ids, mask, positions = left_pad(contexts, pad_id, model.device)
    lengths = mask.sum(-1)
    extra = max(len(t) for t in targets)
    target_ids = torch.full((len(targets), extra), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(targets), extra), dtype=torch.long)
    for row, target in enumerate(targets):
        target_ids[row, :len(target)] = torch.tensor(target, dtype=torch.long)
        target_mask[row, :len(target)] = 1
    target_ids = target_ids.to(model.device)
    out = model(input_ids=torch.cat([ids, target_ids], dim=1),
                attention_mask=torch.cat([mask, target_mask.to(model.device)], dim=1),
                position_ids=torch.cat([positions, lengths[:, None] + torch.arange(extra, device=model.device)], 1),
                cache=DynamicCache(), use_cache=True, logits_to_keep=extra + 1)
    # kept logits j < extra (from the context's last token on) predict target token j
    scores = token_logprobs(out.logits[:, :extra], target_ids).tolist()
    if extra:
        out.cache.crop(-extra)
    return Prefill(out.cache, mask, lengths, out.logits[:, 0].float(),
                   [row[:len(target)] for row, target in zip(scores, targets)])


def _joined(parts: list[Prefill], rows: list[torch.Tensor], total: int) -> Prefill:
    """One prefill of `total` rows from passes that filled rows `rows[i]` each, left-padded to the widest
    (padding keys are zero and masked)."""
    width = max(p.mask.shape[1] for p in parts)
    first = parts[0]
    mask = first.mask.new_zeros(total, width)
    lengths = first.lengths.new_zeros(total)
    last_logits = first.last_logits.new_empty(total, first.last_logits.shape[1])
    for part, index in zip(parts, rows):
        mask[index, width - part.mask.shape[1]:] = part.mask
        lengths[index], last_logits[index] = part.lengths, part.last_logits
    target_logprobs = in_input_order(total, [(index.tolist(), part.target_logprobs)
                                             for part, index in zip(parts, rows)])
    for n, layer in enumerate(first.cache.layers):
        keys = layer.keys.new_zeros(total, *layer.keys.shape[1:2], width, layer.keys.shape[3])
        values = layer.values.new_zeros(total, *layer.values.shape[1:2], width, layer.values.shape[3])
        for part, index in zip(parts, rows):
            part_layer = part.cache.layers[n]
            keys[index, :, width - part_layer.keys.shape[2]:] = part_layer.keys
            values[index, :, width - part_layer.values.shape[2]:] = part_layer.values
        layer.keys, layer.values = keys, values
    return Prefill(first.cache, mask, lengths, last_logits, target_logprobs)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax(logits)[target] in fp32, without materialising the whole log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
