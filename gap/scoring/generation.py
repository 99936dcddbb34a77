"""Batched greedy generation with a KV cache, left padding and stop strings checked on decoded text.

The decoding steps run one of two ways over a prefill. Growing (the CPU's): the cache grows by a column
a step and finished rows are dropped. Static (GPUs): every step has the same shapes and tensor addresses,
a cache of fixed width written in place and masks built outside the model into fixed buffers, so that the
step is captured once as a CUDA graph and replayed, without a Python launch per operation.
"""
import warnings

import torch
from transformers.cache_utils import DynamicLayer

from gap.scoring.attention import attention_of, model_masks
from gap.scoring.linear import with_onednn_linears
from gap.scoring.prefill import Prefill, ReservedLayer, keeps_state, prefill

# (before, after(inputs)) pairs called around each replayed step: a replay does not run the model's
# forward, whose hooks the benchmark counts passes with
REPLAY_HOOKS: list = []


def cut_at_stops(text: str, stops: list[str]) -> str:
    """Text up to the first stop string."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


class _FixedLayer(DynamicLayer):
    """A cache layer of fixed width (the prefill's columns and `extra` more): a step writes its token at
    column `at` (a tensor, so that a replayed graph reads where to write) and attends over every column,
    the ones not written yet masked."""

    def __init__(self, layer: DynamicLayer, extra: int, at: torch.Tensor):
        super().__init__()
        pad = (0, 0, 0, extra)
        self.keys, self.values = torch.nn.functional.pad(layer.keys, pad), torch.nn.functional.pad(layer.values, pad)
        self.at, self.device, self.is_initialized = at, layer.keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys.index_copy_(2, self.at, key_states)
        self.values.index_copy_(2, self.at, value_states)
        return self.keys, self.values


class _Growing:
    """Decoding steps over a cache that grows a column a step; finished rows can be dropped."""

    def __init__(self, model, state: Prefill, max_new_tokens: int):
        self.model, self.cache = model, state.cache
        self.stateful = keeps_state(model)  # then its own cache is kept as it is, and every row
        if not self.stateful:
            self.cache.layers = [layer if isinstance(layer, ReservedLayer) and layer.room >= max_new_tokens
                                 else ReservedLayer.around(layer, max_new_tokens) for layer in self.cache.layers]
        self.mask, self.position = state.mask, state.lengths.unsqueeze(-1)

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the rows `keep` (copies the cache)."""
        self.cache.batch_select_indices(keep)
        self.mask, self.position = self.mask[keep], self.position[keep]

    def step(self, tokens: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """fp32 logits after feeding each row's next token (a finished row's is masked)."""
        self.mask = torch.cat([self.mask, live.to(self.mask.dtype).unsqueeze(-1)], dim=1)
        inputs = dict(input_ids=tokens.unsqueeze(-1), attention_mask=self.mask, position_ids=self.position,
                      cache=self.cache, use_cache=True)
        if self.stateful:  # as its own `generate` prepares a step (Mamba's take no mask once their state holds it)
            inputs = self.model.prepare_inputs_for_generation(**inputs, is_first_iteration=False)
        out = self.model(**inputs)
        self.position = self.position + 1
        return out.logits[:, -1].float()


class _Static:
    """Decoding steps of fixed shapes (`_FixedLayer` caches, 4D masks rebuilt into fixed buffers), captured
    as a CUDA graph at the first step where `graph`. Left padding keeps each row's tokens in consecutive
    columns, so a key's distance in positions is its distance in columns, and the windows of
    sliding-window layers are applied by the masks."""

    def __init__(self, model, state: Prefill, max_new_tokens: int, graph: bool):
        self.model, self.graph, self.replay = model, graph, None
        rows, width = state.mask.shape
        device = state.mask.device
        self.at = torch.tensor([width], device=device)  # the column the next token is written to
        state.cache.layers = [_FixedLayer(layer, max_new_tokens, self.at) for layer in state.cache.layers]
        self.attends = torch.nn.functional.pad(state.mask.bool(), (0, max_new_tokens))  # [rows, columns]
        self.key_columns = torch.arange(self.attends.shape[1], device=device)
        self.masks = self._masks()  # the buffers the model reads its masks from
        self.inputs = dict(input_ids=torch.zeros((rows, 1), dtype=torch.long, device=device),
                           attention_mask=self.masks[None] if None in self.masks else self.masks,
                           position_ids=state.lengths.unsqueeze(-1).clone(), cache=state.cache, use_cache=True)

    def _masks(self) -> dict:
        """The step's additive masks by layer type (the key None: one for every layer)."""
        distance = (self.at - self.key_columns)[None, None, None, :]
        masks = model_masks(self.model, self.attends[:, None, None, :], distance)
        return masks if isinstance(masks, dict) else {None: masks}

    def _forward(self) -> torch.Tensor:
        device = self.model.device.type  # autocast's cache of cast weights would not outlive a capture
        with torch.autocast(device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device),
                            cache_enabled=False):
            return self.model(**self.inputs).logits[:, -1]

    def step(self, tokens: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """fp32 logits after feeding each row's next token (a finished row's is masked)."""
        self.inputs["input_ids"].copy_(tokens.unsqueeze(-1))
        self.attends.index_copy_(1, self.at, live.unsqueeze(-1))
        for kind, mask in self._masks().items():
            self.masks[kind].copy_(mask)
        if self.replay is not None:
            for before, _ in REPLAY_HOOKS:
                before()
            self.replay.replay()
            for _, after in REPLAY_HOOKS:
                after(self.inputs)
            logits = self.logits
        elif self.graph:  # captured once: where that fails, every later step runs eagerly
            self.graph = False
            logits, self.replay = self._captured()
        else:
            logits = self._forward()
        self.inputs["position_ids"] += 1
        self.at += 1
        return logits.float()

    def _captured(self) -> tuple[torch.Tensor, object]:
        """This step's logits and the step captured as a CUDA graph, or None where it cannot be captured or
        its replay differs from the step run eagerly (then every step runs eagerly, with a warning)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up, as capturing needs; a replay rewrites the same cache column
            eager = self._forward().clone()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.logits = self._forward()
            graph.replay()
        except RuntimeError as err:
            warnings.warn(f"decoding steps run without a CUDA graph: capturing one failed ({err})", stacklevel=2)
            return eager, None
        if not torch.allclose(self.logits.float(), eager.float(), rtol=1e-3, atol=1e-3):
            warnings.warn("decoding steps run without a CUDA graph: its replay differed from the step run eagerly",
                          stacklevel=2)
            return eager, None
        return self.logits, graph


@with_onednn_linears("decoding")  # products of a few rows: the library measured faster for them
@torch.no_grad()
def generate_from(model, tokenizer, state: Prefill, max_new_tokens: int, stops: list[str],
                  static: bool | None = None, eos_ids: list[int] | None = None) -> list[str]:
    """Greedy continuations of prefilled contexts, decoded and cut at the first stop string.

    A row finishes at EOS (the tokenizer's, or any of `eos_ids`: what the model's `generate` stops at) or
    once its decoded text holds a stop string; generation ends when all rows have. Finished rows are masked
    out (no model FLOPs are counted for them); growing decoding drops them from the batch once they are half
    of it (dropping copies the cache, so not at every finish; a model that `keeps_state` keeps them).
    `static`: steps of fixed shapes, graphed on a GPU; by default on a GPU, where the model's masks are
    wholly the engine's (`attention_of`: every layer's limits rebuilt in the mask). `state` is used up.
    """
    whole_masks = attention_of(model).widest is None
    static = model.device.type == "cuda" and whole_masks if static is None else static
    if static and not whole_masks:
        raise ValueError(f"static decoding needs masks the engine builds whole; {model.config.model_type} with "
                         f"{model.config._attn_implementation} attention limits some layers itself: static=False")
    device = state.mask.device
    decoder = (_Static(model, state, max_new_tokens, graph=device.type == "cuda") if static
               else _Growing(model, state, max_new_tokens))
    eos = tokenizer.eos_token_id
    ends = {eos} if eos_ids is None else set(eos_ids)
    generated = [[] for _ in state.lengths]
    rows = list(range(len(generated)))  # the original row of each batch row
    live = [True] * len(rows)
    logits = state.last_logits
    for step in range(max_new_tokens):
        for i, token in enumerate(logits.argmax(-1).tolist()):
            if not live[i]:
                continue
            if token in ends:
                live[i] = False
                continue
            generated[rows[i]].append(token)
            text = tokenizer.decode(generated[rows[i]], skip_special_tokens=True)
            live[i] = not any(stop in text for stop in stops)
        if not any(live) or step == max_new_tokens - 1:
            break
        if not static and not decoder.stateful and 2 * sum(live) <= len(live):
            keep = [i for i in range(len(rows)) if live[i]]
            decoder.drop(torch.tensor(keep, device=device))
            rows, live = [rows[i] for i in keep], [True] * len(keep)
        tokens = torch.tensor([generated[r][-1] if generated[r] else eos for r in rows], device=device)
        logits = decoder.step(tokens, torch.tensor(live, device=device))
    return [cut_at_stops(tokenizer.decode(g, skip_special_tokens=True), stops) for g in generated]


def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, stops: list[str],
                    static: bool | None = None) -> list[str]:
    """Greedy continuations of token-id prompts (see `generate_from`)."""
    return generate_from(model, tokenizer, prefill(model, prompts, tokenizer.pad_token_id), max_new_tokens, stops,
                         static)
