"""Batched greedy generation with a KV cache, left padding and stop strings checked on decoded text."""
import torch

from gap.scoring.prefill import Prefill, prefill


def _cut(text: str, stops: list[str]) -> str:
    """Text up to the first stop string."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


@torch.no_grad()
def generate_from(model, tokenizer, state: Prefill, max_new_tokens: int, stops: list[str]) -> list[str]:
    """Greedy continuations of prefilled contexts, decoded and cut at the first stop string.

    A row finishes at EOS or once its decoded text holds a stop string; the batch stops when all rows
    have. The cache in `state` grows with the generated tokens.
    """
    eos = tokenizer.eos_token_id
    rows = len(state.lengths)
    generated = [[] for _ in range(rows)]
    done = [False] * rows
    mask, position = state.mask, state.lengths.unsqueeze(-1)
    logits = state.last_logits
    for step in range(max_new_tokens):
        tokens = logits.argmax(-1)
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token == eos:
                done[row] = True
                continue
            generated[row].append(token)
            done[row] = any(stop in tokenizer.decode(generated[row], skip_special_tokens=True) for stop in stops)
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=tokens.unsqueeze(-1), attention_mask=mask, position_ids=position,
                    cache=state.cache, use_cache=True)
        logits, position = out.logits[:, -1].float(), position + 1
    return [_cut(tokenizer.decode(g, skip_special_tokens=True), stops) for g in generated]


def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, stops: list[str]) -> list[str]:
    """Greedy continuations of token-id prompts (see `generate_from`)."""
    return generate_from(model, tokenizer, prefill(model, prompts, tokenizer.pad_token_id), max_new_tokens, stops)
