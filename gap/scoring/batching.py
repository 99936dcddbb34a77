"""Padding and ordering shared by scoring and generation: real tokens only, longest first."""
import torch

FILL = 0.75  # a forward pass closes at a row narrower than this share of its widest (packing, prefill)


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists to one width; return input ids, attention mask and position ids.

    Left padding puts every sequence's last token in the last column, so the positions that score a
    continuation, and the position that starts generation, line up across the batch.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def length_sorted_batches(lengths: list[int], max_items: int, max_tokens: int | None = None,
                          fill: float | None = 0.5) -> list[list[int]]:
    """Group item indices into batches of similar length, longest first (a too-large batch fails early).

    A batch closes at `max_items` items, when its padded size (items x its longest length) would pass
    `max_tokens` (so batches of short items hold more of them), or at an item shorter than `fill` x its
    longest (so padding stays under 1 - `fill` of any batch; generation passes None, since each extra
    batch costs a full run of decoding steps). An item longer than `max_tokens` goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        longest = lengths[batch[0]] if batch else 0
        if (batch and len(batch) < max_items and (fill is None or lengths[i] >= fill * longest)
                and (max_tokens is None or (len(batch) + 1) * longest <= max_tokens)):
            batch.append(i)
        else:
            batches.append([i])
    return batches
