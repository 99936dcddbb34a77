"""Batched greedy generation with a KV cache, left padding and stop strings checked on decoded text."""
import torch
from transformers.cache_utils import DynamicLayer

from gap.scoring.prefill import Prefill, prefill


def cut_at_stops(text: str, stops: list[str]) -> str:
    """Text up to the first stop string."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


class _ReservedLayer(DynamicLayer):
    """A cache layer with room for `extra` more positions, written in place: the default layer
    concatenates, which copies the whole cache at every decoding step."""

    def __init__(self, layer: DynamicLayer, extra: int):
        super().__init__()
        rows, heads, self.length, dim = layer.keys.shape
        self._keys = layer.keys.new_empty(rows, heads, self.length + extra, dim)
        self._values = layer.values.new_empty(rows, heads, self.length + extra, layer.values.shape[-1])
        self._keys[:, :, :self.length], self._values[:, :, :self.length] = layer.keys, layer.values
        self.device, self.is_initialized = layer.keys.device, True
        self._expose()

    def _expose(self):
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self._keys[:, :, self.length:end], self._values[:, :, self.length:end] = key_states, value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose()


@torch.no_grad()
def generate_from(model, tokenizer, state: Prefill, max_new_tokens: int, stops: list[str]) -> list[str]:
    """Greedy continuations of prefilled contexts, decoded and cut at the first stop string.

    A row finishes at EOS or once its decoded text holds a stop string; generation ends when all rows
    have. Finished rows are masked out (no model FLOPs are counted for them) and dropped from the batch
    once they are half of it (dropping copies the cache, so not at every finish). `state` is used up.
    """
    eos = tokenizer.eos_token_id
    generated = [[] for _ in state.lengths]
    rows = list(range(len(generated)))  # the original row of each batch row
    live = [True] * len(rows)
    cache = state.cache
    cache.layers = [_ReservedLayer(layer, max_new_tokens) for layer in cache.layers]
    mask, position = state.mask, state.lengths.unsqueeze(-1)
    logits = state.last_logits
    for step in range(max_new_tokens):
        for i, token in enumerate(logits.argmax(-1).tolist()):
            if not live[i]:
                continue
            if token == eos:
                live[i] = False
                continue
            generated[rows[i]].append(token)
            text = tokenizer.decode(generated[rows[i]], skip_special_tokens=True)
            live[i] = not any(stop in text for stop in stops)
        if not any(live) or step == max_new_tokens - 1:
            break
        if 2 * sum(live) <= len(live):
            index = torch.tensor([i for i in range(len(rows)) if live[i]], device=mask.device)
            cache.batch_select_indices(index)
            mask, position = mask[index], position[index]
            rows = [rows[i] for i in index.tolist()]
            live = [True] * len(rows)
        tokens = torch.tensor([generated[r][-1] if generated[r] else eos for r in rows], device=mask.device)
        mask = torch.cat([mask, torch.tensor(live, dtype=mask.dtype, device=mask.device).unsqueeze(-1)], dim=1)
        out = model(input_ids=tokens.unsqueeze(-1), attention_mask=mask, position_ids=position,
                    cache=cache, use_cache=True)
        logits, position = out.logits[:, -1].float(), position + 1
    return [cut_at_stops(tokenizer.decode(g, skip_special_tokens=True), stops) for g in generated]


def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, stops: list[str]) -> list[str]:
    """Greedy continuations of token-id prompts (see `generate_from`)."""
    return generate_from(model, tokenizer, prefill(model, prompts, tokenizer.pad_token_id), max_new_tokens, stops)
