"""How a model's layers limit attention, so that packed rows give every layer the mask it would apply to
each sequence alone.

A packed row holds a context and several choices side by side, and one 4D mask keeps them apart. That mask
replaces the model's own, so every limit the model puts on attention must be rebuilt in it: a sliding
window counts positions (the positions each choice has alone), not columns of the packed row. Families
whose layers differ (Gemma 2/3's sliding and full layers, Qwen2's upper layers) take one mask per layer
type. GPT-Neo applies its local windows itself, over columns, whatever mask it is given: its rows are
packed only while no window can bite. A family not checked in tests/test_families.py, or an attention
implementation that takes no 4D mask, is not packed: its choices are scored one by one, exactly.
"""
from dataclasses import dataclass

import torch

# model types whose packed scores tests/test_families.py checks against the model's own forward pass
PACKED_FAMILIES = frozenset({"llama", "opt", "gpt2", "gpt_neo", "gpt_neox", "qwen2", "gemma2", "gemma3_text",
                             "mistral", "qwen3", "qwen3_moe", "mixtral", "phi3", "phi", "gemma", "olmo2", "olmo3",
                             "smollm3", "granite", "cohere2", "ministral", "stablelm", "gpt_oss"})
MASKED_ATTENTION = ("eager", "sdpa")  # attention implementations that apply a 4D mask as given
WINDOWED_TYPES = {"full_attention": False, "sliding_attention": True}  # layer type -> limited by the window


@dataclass(frozen=True)
class Attention:
    windows: dict[str | None, int | None]  # layer type -> window in tokens (None: the whole past);
    #                                        the single key None: one mask for every layer
    widest: int | None                     # widest row that may be packed (None: any, 0: none)

    def packs(self, width: int) -> bool:
        """Whether a packed row `width` tokens wide is computed exactly."""
        return self.widest is None or width <= self.widest


def attention_of(model) -> Attention:
    """The attention limits of `model`, read from its config."""
    config = model.config.get_text_config(decoder=True)
    # flash attention and the like take no 4D mask: nothing to pack with
    if config.model_type not in PACKED_FAMILIES or model.config._attn_implementation not in MASKED_ATTENTION:
        return Attention({None: None}, widest=0)
    if config.model_type == "gpt_neo":  # its local layers mask columns farther back than window_size
        local = "local" in config.attention_layers
        return Attention({None: None}, widest=config.window_size if local else None)
    window = getattr(config, "sliding_window", None)
    types = set(getattr(config, "layer_types", None) or ["sliding_attention" if window else "full_attention"])
    if not types <= WINDOWED_TYPES.keys():
        return Attention({None: None}, widest=0)
    windows = {kind: window if WINDOWED_TYPES[kind] else None for kind in types}
    if len(set(windows.values())) == 1:
        return Attention({None: next(iter(windows.values()))}, widest=None)
    return Attention(windows, widest=None)


def packed_masks(attention: Attention, mask: torch.Tensor, distance: torch.Tensor, dtype):
    """The additive float mask(s) a pass hands the model: `mask` [rows, 1, queries, keys] (True = attend)
    limited, per layer type, to keys fewer than its window positions back (`distance`: each query's
    position minus each key's, broadcastable to `mask`). One tensor where every layer shares one mask,
    else a dict keyed by layer type."""
    masks = {}
    for kind, window in attention.windows.items():
        allowed = mask if window is None else mask & (distance < window)
        masks[kind] = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
    return masks[None] if None in masks else masks


def model_masks(model, mask: torch.Tensor, distance: torch.Tensor):
    """`packed_masks` for `model`, on its device: additive float masks, read alike by eager and sdpa
    attention, in the dtype attention computes in."""
    device = model.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else \
        next(model.parameters()).dtype
    return packed_masks(attention_of(model), mask.to(device), distance.to(device), dtype)
