"""Every model family scored as its own forward pass scores it.

Tiny random models whose attention windows are a few tokens wide, so that the windows bite: choice
scores with context sharing on and off, dialogue targets teacher-forced in the prefill and greedy replies,
in batches of many rows and of one, each against the model's own unpadded forward pass and `generate`.
A new family is one line of FAMILIES.
"""
import pytest
import torch
import transformers as T

from gap.scoring.attention import PACKED_FAMILIES, attention_of
from gap.scoring.batching import FILL
from gap.scoring.generation import generate_from
from gap.scoring.loglikelihood import choice_logprobs, packed_width
from gap.scoring.prefill import prefill

WINDOW = 4  # tokens: every context below is wider
LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
FAMILIES = {  # name -> (model class, config class, its size and attention arguments)
    "opt": (T.OPTForCausalLM, T.OPTConfig, dict(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
                                                 num_hidden_layers=2, num_attention_heads=4)),
    "gpt_neo": (T.GPTNeoForCausalLM, T.GPTNeoConfig, dict(hidden_size=32, num_layers=2, num_heads=4, window_size=WINDOW,
                                                          attention_types=[[["global", "local"], 1]])),
    "gpt_neox": (T.GPTNeoXForCausalLM, T.GPTNeoXConfig, dict(hidden_size=32, intermediate_size=64,
                                                             num_hidden_layers=2, num_attention_heads=4)),
    "gpt2": (T.GPT2LMHeadModel, T.GPT2Config, dict(n_embd=32, n_layer=2, n_head=4)),
    "llama": (T.LlamaForCausalLM, T.LlamaConfig, LLAMA_LIKE),
    "qwen2": (T.Qwen2ForCausalLM, T.Qwen2Config, LLAMA_LIKE | dict(use_sliding_window=True, sliding_window=WINDOW,
                                                                   max_window_layers=1)),
    "gemma2": (T.Gemma2ForCausalLM, T.Gemma2Config, LLAMA_LIKE | dict(head_dim=8, sliding_window=WINDOW)),
    "gemma3_text": (T.Gemma3ForCausalLM, T.Gemma3TextConfig, LLAMA_LIKE | dict(
        head_dim=8, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])),
    "mistral": (T.MistralForCausalLM, T.MistralConfig, LLAMA_LIKE | dict(sliding_window=WINDOW)),
}

# (context, choices): contexts wider than the window; the last two pack no wider than it (GPT-Neo packs those)
REQUESTS = [(list(range(10, 19)), [[40, 41, 42], [43], [44, 45, 46, 47, 48]]),
            ([11, 12], [[50, 51, 52, 53], [54, 55]]),
            (list(range(20, 34)), [[60, 61], [62, 63], [64, 65], [66, 67, 68, 69, 70, 71]]),
            ([5, 6, 7], [[8], [9, 10]]),
            ([13, 14], [[15], [16]])]
TARGETS = [[90, 91, 92, 93, 94], [], [95], [96, 97, 98]]  # uneven, one empty; one per REQUESTS context


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tiny):
    model_class, config_class, arguments = FAMILIES[request.param]
    tokenizer = tiny[1]
    config = config_class(vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=None,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **arguments)
    torch.manual_seed(0)
    return model_class(config).eval(), tokenizer


def own_logprobs(model, context, continuation):
    """The model's own forward pass over one unpadded sequence."""
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([context + continuation])).logits[0].float().log_softmax(-1)
    return [logprobs[len(context) + i - 1, token].item() for i, token in enumerate(continuation)]


def largest_difference(got, want):
    assert [len(g) for g in got] == [len(w) for w in want]
    return max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w))


def test_every_packed_family_is_checked_here():
    assert set(FAMILIES) == PACKED_FAMILIES


def test_choice_scores_equal_the_models_own_forward(family):
    """Context sharing on (packed rows where the family packs) and off, in one batch and one by one."""
    model, tokenizer = family
    widest = attention_of(model).widest
    assert widest != 0 and (widest is None or any(packed_width(ctx, c) <= widest for ctx, c in REQUESTS))
    want = [own_logprobs(model, ctx, c) for ctx, choices in REQUESTS for c in choices]
    for share_context in (True, False):
        together = choice_logprobs(model, REQUESTS, tokenizer.pad_token_id, 512, share_context)
        alone = [choice_logprobs(model, [r], tokenizer.pad_token_id, 512, share_context)[0] for r in REQUESTS]
        for scores in (together, alone):
            assert largest_difference([s for per_request in scores for s in per_request], want) < 1e-4


def test_dialogue_targets_and_greedy_replies_equal_the_models_own(family):
    """Targets teacher-forced in the prefill, then the cache cut back to the contexts, in one pass, in
    passes of similar width joined into one cache (FILL), and one row alone: scores as the model's
    forward, greedy replies as its `generate`."""
    model, tokenizer = family
    contexts = [ctx for ctx, _ in REQUESTS[:len(TARGETS)]]
    want = [own_logprobs(model, ctx, target) for ctx, target in zip(contexts, TARGETS)]
    with torch.no_grad():
        replies = [tokenizer.decode(model.generate(torch.tensor([ctx]), max_new_tokens=8, do_sample=False)[0, len(ctx):],
                                    skip_special_tokens=True) for ctx in contexts]
    for rows, fill in (([0, 1, 2, 3], None), ([0, 1, 2, 3], FILL), ([2], None)):
        state = prefill(model, [contexts[i] for i in rows], tokenizer.pad_token_id, [TARGETS[i] for i in rows], fill)
        assert largest_difference(state.target_logprobs, [want[i] for i in rows]) < 1e-4
        assert generate_from(model, tokenizer, state, 8, stops=[]) == [replies[i] for i in rows]
