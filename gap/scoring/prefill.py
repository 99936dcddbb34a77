"""One forward pass over a batch of contexts that scoring and generation both continue from."""
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin

from gap.ordering import in_input_order, length_sorted_batches
from gap.scoring.attention import attention_of
from gap.scoring.batching import FILL, LOGITS_BUDGET, left_pad, vocab_size
from gap.scoring.linear import with_onednn_linears
from gap.scoring.packing import Segment, first_fit, packed_forward, packed_rows

LOG_SOFTMAX_CHUNK = 2**20  # fp32 logits normalised at once on the CPU (4 MiB: within its cache)


class ReservedLayer(DynamicLayer):
    """A cache layer over buffers [rows, heads, positions, dim] with room for more positions than it
    holds (its first `length`), written in place: the default layer concatenates, which copies the whole
    cache at every decoding step."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._keys, self._values, self.length = keys, values, length
        self.device, self.is_initialized = keys.device, True
        self._expose()

    @classmethod
    def around(cls, layer: DynamicLayer, room: int) -> "ReservedLayer":
        """`layer`'s keys and values copied into buffers with `room` positions more."""
        keys, values = (torch.nn.functional.pad(t, (0, 0, 0, room)) for t in (layer.keys, layer.values))
        return cls(keys, values, layer.keys.shape[2])

    @property
    def room(self) -> int:
        return self._keys.shape[2] - self.length

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


def keeps_state(model) -> bool:
    """Whether the model's cache holds more than keys and values: a recurrent state (Mamba-style,
    linear-attention and convolution layers), or layers that read other layers' keys (Gemma 3n). Such a
    cache cannot be cut back to the context after a teacher-forced target, nor joined from several passes,
    so `prefill` runs its contexts alone, in one pass."""
    try:
        layers = DynamicCache(config=model.config).layers
    except (AttributeError, KeyError, ValueError):  # a cache of the model's own kind (DeepSeek-V4's, BLT's)
        return False
    return any(isinstance(layer, LinearAttentionCacheLayerMixin) or not isinstance(layer, DynamicLayer)
               for layer in layers)


@dataclass
class Prefill:
    cache: object               # the model's KV cache after the contexts
    mask: torch.Tensor          # [rows, context width] attention mask (left padding = 0)
    lengths: torch.Tensor       # [rows] real context tokens = position of the next token
    last_logits: torch.Tensor   # [rows, vocab] fp32 logits after each context's last token
    target_logprobs: list[list[float]]  # per row, the log-probability of each teacher-forced target token


@with_onednn_linears("scoring")
@torch.no_grad()
def prefill(model, contexts: list[list[int]], pad_id: int, targets: list[list[int]] | None = None,
            max_tokens: int | None = None, fill: float | None = FILL, logits_budget: int = LOGITS_BUDGET,
            room: int = 0) -> Prefill:
    """Run the contexts once and keep their KV cache, left-padded to one width, and last-position logits.

    `targets` (one per context, possibly empty) are teacher-forced in the same pass: their token
    log-probabilities come from it, while the cache keeps the contexts alone, so that generation
    continues from the context. Every layer's cache keeps every position (a sliding-window layer's own
    cache drops old ones): the model's masks apply the windows.

    Where the model packs (`attention_of`), sequences share rows as wide as the longest (`first_fit`,
    `_packed_pass`); other models, and sequences wider than a GPT-Neo window, take a row each. Rows run
    in left-padded passes that close at a row under `fill` x their widest, hold at most `max_tokens` row
    positions and logits within `logits_budget`; the passes' caches are joined into one, so that
    generation decodes every row at once, with `room` more positions reserved in every layer (the
    tokens generation will add, written in place: `ReservedLayer`). A model that `keeps_state` takes its
    contexts, without targets, in one pass, and keeps its own cache.
    """
    targets = targets or [[] for _ in contexts]
    if keeps_state(model):
        if any(targets):
            raise ValueError(f"{model.config.model_type} keeps a recurrent state: score its targets apart")
        return _prefill_pass(model, contexts, targets, pad_id, DynamicCache(config=model.config))
    attention = attention_of(model)
    # packed, a target's last token is not fed (nothing after it is scored)
    lengths = [len(c) + max(len(t) - 1, 0) for c, t in zip(contexts, targets)]
    packed = [i for i, (c, n) in enumerate(zip(contexts, lengths)) if c and attention.packs(n)]
    alone = sorted(set(range(len(contexts))) - set(packed))
    most_positions = logits_budget // vocab_size(model)
    parts = []  # (indices, their Prefill)
    if packed:
        rows = [[packed[j] for j in row] for row in first_fit([lengths[i] for i in packed],
                                                              max(lengths[i] for i in packed))]
        widths = [sum(lengths[i] for i in row) for row in rows]
        kept = [sum(max(len(targets[i]), 1) for i in row) for row in rows]  # every tail reaches the output layer
        for group in length_sorted_batches(widths, len(rows), max_tokens, fill=fill, kept=kept,
                                           max_positions=most_positions):
            pairs = [[(contexts[i], targets[i]) for i in rows[g]] for g in group]
            parts.append(([i for g in group for i in rows[g]], _packed_pass(model, pairs, pad_id)))
    widths = [len(contexts[i]) + len(targets[i]) for i in alone]
    kept = [len(targets[i]) + 1 for i in alone]
    for group in length_sorted_batches(widths, len(alone), max_tokens, fill=fill, kept=kept,
                                       max_positions=most_positions):
        rows = [alone[g] for g in group]
        parts.append((rows, _prefill_pass(model, [contexts[i] for i in rows], [targets[i] for i in rows], pad_id)))
    return _joined(parts, len(contexts), room)


def _packed_pass(model, rows: list[list[tuple[list[int], list[int]]]], pad_id: int) -> Prefill:
    """One forward pass over rows of (context, target) pairs (`packed_rows`). A pair is two segments: its
    head (the context but its last token) and its tail (the context's last token, then the target but
    its last token, at the positions they follow), the tails at the end of the row, so that only they
    reach the output layer. Each context's cache (its head, and its tail's first token) is gathered into
    one left-padded cache, a row per pair, in the order of `rows`."""
    segments = [[Segment(ctx[:-1]) for ctx, _ in row] +
                [Segment(ctx[-1:] + target[:-1], len(ctx) - 1, parent=h) for h, (ctx, target) in enumerate(row)]
                for row in rows]
    packed = packed_rows(segments, pad_id)
    width = packed.ids.shape[1]
    pairs = [(r, h, ctx, target) for r, row in enumerate(rows) for h, (ctx, target) in enumerate(row)]
    tails = [packed.columns[r][len(rows[r]) + h] for r, h, _, _ in pairs]
    keep = width - min(tails)
    device = model.device
    out = packed_forward(model, packed, keep, cache=DynamicCache(), use_cache=True)
    firsts = [tail - (width - keep) for tail in tails]  # each tail's first column among the kept logits
    # the logits at a tail's token j predict its target's token j
    target_logprobs = logprobs_at(out.logits, [(r, range(first, first + len(target)))
                                               for (r, _, _, target), first in zip(pairs, firsts)],
                                  [target for *_, target in pairs])
    pair_rows = torch.tensor([r for r, *_ in pairs], device=device)
    last_logits = out.logits[pair_rows, torch.tensor(firsts, device=device)].float()

    lengths = [len(ctx) for _, _, ctx, _ in pairs]
    context_width = max(lengths)
    columns = torch.zeros((len(pairs), context_width), dtype=torch.long)  # left padding reads column 0, masked
    mask = torch.zeros((len(pairs), context_width), dtype=torch.long)
    for e, ((r, h, ctx, _), tail) in enumerate(zip(pairs, tails)):
        head = packed.columns[r][h]
        columns[e, context_width - len(ctx):] = torch.tensor(list(range(head, head + len(ctx) - 1)) + [tail])
        mask[e, context_width - len(ctx):] = 1
    columns = columns.to(device)
    for layer in out.cache.layers:  # [rows, heads, width, dim] -> [pairs, heads, context width, dim]
        layer.keys = layer.keys[pair_rows[:, None], :, columns].transpose(1, 2)
        layer.values = layer.values[pair_rows[:, None], :, columns].transpose(1, 2)
    return Prefill(out.cache, mask.to(device), torch.tensor(lengths, device=device), last_logits, target_logprobs)


def _prefill_pass(model, contexts: list[list[int]], targets: list[list[int]], pad_id: int,
                  cache: DynamicCache | None = None) -> Prefill:
    """One left-padded forward pass, a row per context with its target after it (right-padded); the
    cache (by default one that keeps every position in every layer) is then cut back to the contexts."""
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
                cache=DynamicCache() if cache is None else cache, use_cache=True, logits_to_keep=extra + 1)
    # kept logits j < extra (from the context's last token on) predict target token j
    target_logprobs = logprobs_at(out.logits, [(row, range(len(t))) for row, t in enumerate(targets)], targets)
    if extra:
        out.cache.crop(-extra)
    return Prefill(out.cache, mask, lengths, out.logits[:, 0].float(), target_logprobs)


def _joined(parts: list[tuple[list[int], Prefill]], total: int, room: int) -> Prefill:
    """One prefill of `total` rows from passes that filled the rows listed beside each, left-padded to
    the widest (padding is masked; zero, so that no stale value reaches attention), in cache layers with
    `room` more positions (not written here: a layer exposes only the positions it holds)."""
    if len(parts) == 1 and parts[0][0] == list(range(total)) and not room:
        return parts[0][1]
    first = parts[0][1]
    device = first.mask.device
    width = max(p.mask.shape[1] for _, p in parts)
    mask = first.mask.new_zeros(total, width)
    lengths = first.lengths.new_zeros(total)
    last_logits = first.last_logits.new_empty(total, first.last_logits.shape[1])
    rows = [torch.tensor(indices, device=device) for indices, _ in parts]
    for index, (_, part) in zip(rows, parts):
        mask[index, width - part.mask.shape[1]:] = part.mask
        lengths[index], last_logits[index] = part.lengths, part.last_logits
    target_logprobs = in_input_order(total, [(indices, part.target_logprobs) for indices, part in parts])
    for n, layer in enumerate(first.cache.layers):
        keys = layer.keys.new_empty(total, layer.keys.shape[1], width + room, layer.keys.shape[3])
        values = layer.values.new_empty(total, layer.values.shape[1], width + room, layer.values.shape[3])
        for index, (_, part) in zip(rows, parts):
            part_layer = part.cache.layers[n]
            pad = width - part_layer.keys.shape[2]
            keys[index, :, :pad], values[index, :, :pad] = 0.0, 0.0
            keys[index, :, pad:width], values[index, :, pad:width] = part_layer.keys, part_layer.values
        first.cache.layers[n] = ReservedLayer(keys, values, width)
    return Prefill(first.cache, mask, lengths, last_logits, target_logprobs)


def logprobs_at(logits: torch.Tensor, spans: list[tuple[int, range | list[int]]],
                targets: list[list[int]], greedy: bool = False) -> list:
    """Per span (a row of `logits` and the columns that predict its target's tokens), the log-probability
    of each target token (`_gathered_logprobs`). With `greedy`, per span (those log-probabilities, whether
    every target token is the logits' argmax: lm-evaluation-harness's `is_greedy`)."""
    device = logits.device
    rows = torch.tensor([r for r, cols in spans for _ in cols], dtype=torch.long, device=device)
    cols = torch.tensor([c for _, cols in spans for c in cols], dtype=torch.long, device=device)
    flat = torch.tensor([t for target in targets for t in target], dtype=torch.long, device=device)
    scores, hits = _gathered_logprobs(logits, rows, cols, flat, greedy)
    scores = iter(scores.tolist())
    per_span = [[next(scores) for _ in cols] for _, cols in spans]
    if not greedy:
        return per_span
    hits = iter(hits.tolist())
    return [(span, all([next(hits) for _ in span])) for span in per_span]


def _gathered_logprobs(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
                       greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fp32 log-softmax of `logits[rows, cols]` at `targets` (and, with `greedy`, whether each target is
    the argmax), a chunk of positions at a time on the CPU (`LOG_SOFTMAX_CHUNK`): a chunk is gathered (a
    copy, normalised in place) and read while in cache, and memory grows by one chunk, not by the logits'
    size (a `logsumexp` over every kept position, with temporaries as large as the logits, took 3x as
    long: 0.42 s against 0.13 over hellaswag's first 32 questions). The log-sum-exp is `logsumexp`'s own
    sequence (max, exp of the differences, a sum, its log), whose sum reads within 5e-8 nats a token of
    fp64; `log_softmax`'s fused sum reads 7.5e-6 high (on SmolLM2), 7.5e-3 over a 1000-token text."""
    count, vocab = len(targets), logits.shape[-1]
    step = max(1, LOG_SOFTMAX_CHUNK // vocab) if logits.device.type == "cpu" else max(count, 1)
    scores, hits = [], []
    for start in range(0, count, step):
        part = logits[rows[start:start + step], cols[start:start + step]].float()
        wanted = targets[start:start + step]
        picked = part.gather(1, wanted[:, None])[:, 0]
        if greedy:
            hits.append(part.argmax(-1) == wanted)
        top = part.amax(-1, keepdim=True)
        top = top.masked_fill(top.isinf(), 0.0)  # as `logsumexp`: a row of -inf stays -inf, not NaN
        scores.append(picked - part.sub_(top).exp_().sum(-1).log_().add_(top[:, 0]))
    if not scores:
        return logits.new_empty(0, dtype=torch.float32), logits.new_empty(0, dtype=torch.bool)
    return torch.cat(scores), torch.cat(hits) if greedy else None
