"""Padding shared by scoring and generation: real tokens only, left-aligned to the last column."""
import torch

FILL = 0.75  # a forward pass closes at a row narrower than this share of its widest (packing, prefill)
# fp32 logits one scoring pass may hold (512 MiB): rows x kept positions x vocabulary. A 49k vocabulary
# (SmolLM2) stays under it in batches of 16 questions; a 262k one (Gemma 3) takes more, smaller passes.
LOGITS_BUDGET = 2**27


def vocab_size(model) -> int:
    """The width of the model's output layer."""
    return model.get_output_embeddings().weight.shape[0]


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
