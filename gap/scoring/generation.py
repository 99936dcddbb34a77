"""Batched greedy generation with a KV cache, left padding and stop strings checked on decoded text."""
import torch

from gap.scoring.batching import left_pad


def _cut(text: str, stops: list[str]) -> str:
    """Text up to the first stop string."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                    stops: list[str]) -> list[str]:
    """Greedy continuations of token-id prompts, decoded and cut at the first stop string.

    A row finishes at EOS or once its decoded text holds a stop string; the batch stops when all rows
    have.
    """
    ids, mask, positions = left_pad(prompts, tokenizer.pad_token_id, model.device)
    next_position = positions[:, -1:] + 1
    eos = tokenizer.eos_token_id
    generated = [[] for _ in prompts]
    done = [False] * len(prompts)
    cache = None
    step_ids = ids
    for _ in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                    cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        tokens = out.logits[:, -1].float().argmax(-1)
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token == eos:
                done[row] = True
                continue
            generated[row].append(token)
            text = tokenizer.decode(generated[row], skip_special_tokens=True)
            done[row] = any(stop in text for stop in stops)
        if all(done):
            break
        step_ids = tokens.unsqueeze(-1)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        positions = next_position
        next_position = next_position + 1
    return [_cut(tokenizer.decode(g, skip_special_tokens=True), stops) for g in generated]
