"""Summed log-probability of continuations given contexts, one forward pass per batch."""
import torch

from gap.scoring.batching import left_pad


@torch.no_grad()
def continuation_logprobs(model, pairs: list[tuple[list[int], list[int]]], pad_id: int,
                          max_length: int) -> list[list[float]]:
    """Per-token log-probabilities of each continuation after its context.

    Each pair is (context ids, continuation ids); the model sees `(context + continuation)[-max_length:]`.
    Only the last `len(continuation) + 1` positions of the batch go through the output layer, and
    log-softmax runs in fp32 whatever the model's dtype.
    """
    seqs = [(ctx + cont)[-max_length:] for ctx, cont in pairs]
    conts = [cont[-(max_length - 1):] for _, cont in pairs]
    ids, mask, positions = left_pad(seqs, pad_id, model.device)
    keep = max(len(c) for c in conts) + 1
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep, use_cache=False).logits.float()
    # the logits at kept index j predict the token at kept index j + 1
    logprobs = logits[:, :-1].log_softmax(-1)
    targets = ids[:, -(keep - 1):].unsqueeze(-1)
    token_logprobs = logprobs.gather(-1, targets).squeeze(-1).cpu()
    return [token_logprobs[row, keep - 1 - len(cont):].tolist() for row, cont in enumerate(conts)]
