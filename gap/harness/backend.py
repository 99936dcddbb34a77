"""An lm-evaluation-harness 0.4 backend on our engine: any harness task, scored by `gap.scoring`.

`GapLM(model, tokenizer)` is a harness `LM` for any model `gap` loads (GGUF ones too), usable on its own:
`lm_eval.simple_evaluate(model=GapLM(model, tokenizer), tasks=[...])`. It serves the three request types
as the harness's own Hugging Face backend (`HFLM`) does, request by request, but faster:

- `loglikelihood`: the strings encoded as `HFLM` encodes them (the harness's `TemplateLM`: trailing white
  space of the context moves to the continuation, the pair encoded jointly, an empty context replaced by
  the prefix token); `(context + continuation)[-(max_length + 1):]` is scored. Requests with one context
  (a question's choices) are one engine request: the context runs once, packed with its continuations
  (`choice_logprobs`). `is_greedy`: every continuation token is the argmax of the logits before it.
- `loglikelihood_rolling`: the harness's own windows (`get_rolling_token_windows`, `make_disjoint_window`,
  at `max_length`, the prefix token first), each window a `loglikelihood` request; a text's windows summed.
- `generate_until`: greedy only (a request asking for sampling, or for a setting that changes greedy
  decoding, is refused); the prompt encoded as `HFLM` encodes it and cut to its last `max_length -
  max_gen_toks` tokens; at most `max_gen_toks` new tokens, ending at the model's EOS tokens (its
  generation config's, as `generate`) and cut at the first `until` string (`prefill`, `generate_from`).
"""
import functools

from lm_eval.api.model import TemplateLM
from lm_eval.defaults import DEFAULT_MAX_GEN_TOKS, DEFAULT_MAX_LENGTH
from lm_eval.models.utils import has_bos_prefix, normalize_gen_kwargs, resolve_max_length
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from gap.memory.estimate import KV_TOKENS, SCORED
from gap.ordering import length_sorted_batches
from gap.scoring.batching import LOGITS_BUDGET, vocab_size
from gap.scoring.generation import generate_from
from gap.scoring.linear import onednn_linears
from gap.scoring.loglikelihood import choice_logprobs
from gap.scoring.prefill import keeps_state, prefill

# generation settings that leave greedy decoding as it is (HFLM passes the rest on to `generate`)
GREEDY_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k"}


class SamplingRefused(ValueError):
    """A `generate_until` request asks for something other than greedy decoding."""


def greedy_settings(gen_kwargs: dict, task: str | None = None) -> tuple[list[str], int]:
    """(stop strings, max_gen_toks) of a greedy request's generation settings (the harness's own
    normalisation); anything else is refused, naming the setting."""
    kwargs = normalize_gen_kwargs(gen_kwargs, DEFAULT_MAX_GEN_TOKS)
    where = f"task {task!r}: " if task else ""
    if kwargs["do_sample"]:
        raise SamplingRefused(f"{where}generation asks for sampling (do_sample=True, temperature="
                              f"{kwargs.get('temperature')}); the gap backend decodes greedily only")
    other = sorted(set(kwargs) - GREEDY_KWARGS)
    if other:
        raise SamplingRefused(f"{where}generation setting {other[0]}={kwargs[other[0]]!r} is not served: the gap "
                              f"backend decodes greedily with {', '.join(sorted(GREEDY_KWARGS))} only")
    return [s for s in kwargs["until"] if s], kwargs["max_gen_toks"]


class GapLM(TemplateLM):
    """lm-evaluation-harness's `LM` interface over our engine (see the module's docstring).

    `max_length`: the model's context in tokens (default: as `HFLM` resolves it from the config);
    `batch_size`, `max_batch_tokens`: most requests and padded tokens a batch of scoring takes (None: no
    limit but `batch_size`); a pass holds the logits of `SCORED` x as many positions (the memory preflight's
    count; rolling windows score every position, and fewer, smaller passes took a fifth longer on a CPU);
    generation holds `KV_TOKENS` x as many tokens of KV cache (None: `batch_size` full-length rows);
    `add_bos_token`, `prefix_token_id`: as `HFLM`'s."""

    def __init__(self, model, tokenizer, max_length: int | None = None, batch_size: int = 16,
                 max_batch_tokens: int | None = 8192, share_context: bool = True, add_bos_token: bool | None = None,
                 prefix_token_id: int | None = None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self._device = model.device
        self._max_length = max_length or resolve_max_length(model.config, tokenizer, default=DEFAULT_MAX_LENGTH)
        self.batch_size, self.max_batch_tokens, self.share_context = batch_size, max_batch_tokens, share_context
        tokens = max_batch_tokens or batch_size * self._max_length
        self.logits_budget = max(LOGITS_BUDGET, int(SCORED * tokens) * vocab_size(model))
        self.add_bos_token, self.custom_prefix_token_id = add_bos_token, prefix_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        self.eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What a continuation with an empty context, and a rolling text, is scored after: BOS, else EOS."""
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @functools.cached_property
    def _prefix_text(self) -> str:
        """The prefix token as text, decoded once rather than for every string encoded."""
        return self.tokenizer.decode(self.prefix_token_id)

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """As `HFLM`: the tokenizer's special tokens unless told (`add_special_tokens`, then `add_bos_token`),
        none for a string that already starts with the prefix token."""
        told = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        special = {} if told is None else {"add_special_tokens": told}
        if add_special_tokens is None and has_bos_prefix(string, self._prefix_text):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    # ---- loglikelihood ------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) of each `(strings, context ids, continuation ids)` request."""
        results = self._score([(context, continuation) for _, context, continuation in requests])
        for (strings, _, _), result in zip(requests, results):
            if strings is not None:
                self.cache_hook.add_partial("loglikelihood", strings, result)
        return results

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) of each (context, continuation) pair of token ids. Pairs with one context
        are one engine request, split into requests whose packed rows stay within `max_length` (the prefix token
        alone is the context of every text's first rolling window); requests go in length-sorted batches."""
        by_context: dict[tuple, list[int]] = {}
        for i, (context, _) in enumerate(pairs):
            by_context.setdefault(tuple(context), []).append(i)
        owners, requests = [], []
        for context, indices in by_context.items():
            for run in _runs(len(context), [len(pairs[i][1]) for i in indices], self.max_length):
                owners.append([indices[r] for r in run])
                requests.append((list(context), [pairs[indices[r]][1] for r in run]))
        costs = [len(context) + sum(len(c) for c in continuations) for context, continuations in requests]
        results: list = [None] * len(pairs)
        with onednn_linears(self.model):  # weights packed once for all the batches
            for batch in length_sorted_batches(costs, self.batch_size, self.max_batch_tokens, fill=0.5):
                scores = choice_logprobs(self.model, [requests[b] for b in batch], self.pad_id, self.max_length + 1,
                                         self.share_context, self.max_batch_tokens, True, self.logits_budget)
                for b, per_choice in zip(batch, scores):
                    for i, (logprobs, greedy) in zip(owners[b], per_choice):
                        results[i] = (sum(logprobs), greedy)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole text, over the harness's rolling windows at `max_length`."""
        windows, owner = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for window in get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                                    max_seq_len=self.max_length, context_len=1):
                windows.append(make_disjoint_window(window))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (loglikelihood, _) in zip(owner, self._score(windows)):
            totals[n] += loglikelihood
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation ---------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations; requests with the same stop strings and length are decoded together, in
        batches whose KV cache stays within `KV_TOKENS` x `max_batch_tokens` tokens (a model that keeps a
        recurrent state: batches of `max_batch_tokens`, its prefill being one pass)."""
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            until, max_gen_toks = greedy_settings(req.args[1], getattr(req, "task_name", None))
            groups.setdefault((tuple(until), max_gen_toks), []).append(i)
        replies: list = [None] * len(requests)
        with onednn_linears(self.model):
            self._generate(requests, groups, replies)
        for req, reply in zip(requests, replies):
            self.cache_hook.add_partial("generate_until", req.args, reply)
        return replies

    def _generate(self, requests, groups: dict[tuple, list[int]], replies: list) -> None:
        """Fill `replies` group by group ((until, max_gen_toks) -> request indices)."""
        for (until, max_gen_toks), indices in groups.items():
            keep = self.max_length - max_gen_toks
            if keep <= 0:
                raise SamplingRefused(f"max_gen_toks={max_gen_toks} leaves no room for a prompt in max_length="
                                      f"{self.max_length} tokens")
            prompts = [self.tok_encode(requests[i].args[0])[-keep:] for i in indices]
            cache = (1 if keeps_state(self.model) else KV_TOKENS) * (self.max_batch_tokens or
                                                                     self.batch_size * self.max_length)
            for batch in length_sorted_batches([len(p) + max_gen_toks for p in prompts], len(prompts), int(cache),
                                               fill=None):
                state = prefill(self.model, [prompts[b] for b in batch], self.pad_id,
                                max_tokens=self.max_batch_tokens, room=max_gen_toks)
                texts = generate_from(self.model, self.tokenizer, state, max_gen_toks, list(until),
                                      eos_ids=self.eos_ids)
                for b, text in zip(batch, texts):
                    replies[indices[b]] = text


def _runs(context: int, continuations: list[int], width: int) -> list[list[int]]:
    """Continuations (their lengths, after a context of `context` tokens) split, in order, into runs whose
    packed row (the context, then each continuation but its last token) is at most `width` tokens wide."""
    runs: list[list[int]] = []
    used = 0
    for i, length in enumerate(continuations):
        if runs and used + length - 1 <= width:
            runs[-1].append(i)
            used += length - 1
        else:
            runs.append([i])
            used = context + length - 1
    return runs
