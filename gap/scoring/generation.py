"""Batched greedy generation with a KV cache, left padding and stop strings checked on decoded text."""
import torch

from gap.scoring.batching import left_pad


def _cut(text: str, stops: list[str]) -> str:
    """Text up to the first stop string."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, stops: list[str],
                    trailing_pad: list[bool] | None = None) -> list[str]:
    """Greedy continuations of token-id prompts, decoded and cut at the first stop string.

    A row finishes at EOS or once its decoded text holds a stop string; the batch stops when all rows
    have. `trailing_pad[row]` reproduces the GAP authors' generation, whose prompts kept their right
    padding: the first new token is predicted at a masked pad token (position 1, as transformers 4.x
    placed it); later tokens take their true positions.
    """
    pad_id = tokenizer.pad_token_id
    trailing_pad = trailing_pad or [False] * len(prompts)
    ids, mask, positions = left_pad([p + [pad_id] * t for p, t in zip(prompts, trailing_pad)],
                                    pad_id, model.device)
    padded = torch.tensor(trailing_pad, device=model.device)
    mask[:, -1] = mask[:, -1].masked_fill(padded, 0)
    positions[:, -1] = positions[:, -1].masked_fill(padded, 1)
    next_position = torch.tensor([[len(p)] for p in prompts], device=model.device)
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
