"""Every model family scored as its own forward pass scores it.

Tiny random models whose attention windows are a few tokens wide, so that the windows bite: choice
scores with context sharing on and off, dialogue targets teacher-forced in the prefill and greedy replies,
in batches of many rows and of one, each against the model's own unpadded forward pass and `generate`.
The engine's linear layers compute through oneDNN from packed weights (`gap.scoring.linear`; the
`onednn` fixture takes that path on every CPU), the model's own pass through PyTorch's default.
A new family is one line of FAMILIES.
"""
from pathlib import Path

import pytest
import torch
import transformers as T

from gap.scoring import linear
from gap.scoring.attention import PACKED_FAMILIES, attention_of
from gap.scoring.evaluator import Scoring, converse
from gap.scoring.generation import generate_from, greedy_generate
from gap.scoring.loglikelihood import choice_logprobs, continuation_logprobs, packed_width
from gap.scoring.prefill import keeps_state, prefill
from tests.helpers import compose_cfg, largest_difference, own_logprobs, own_reply

WINDOW = 4  # tokens: every context below is wider
LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
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
    "qwen3": (T.Qwen3ForCausalLM, T.Qwen3Config, LLAMA_LIKE | dict(head_dim=8, use_sliding_window=True,
                                                                   sliding_window=WINDOW, max_window_layers=1)),
    "qwen3_moe": (T.Qwen3MoeForCausalLM, T.Qwen3MoeConfig, LLAMA_LIKE | dict(
        head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, use_sliding_window=True,
        sliding_window=WINDOW)),
    "mixtral": (T.MixtralForCausalLM, T.MixtralConfig, LLAMA_LIKE | dict(num_local_experts=4, num_experts_per_tok=2,
                                                                          sliding_window=WINDOW)),
    "phi3": (T.Phi3ForCausalLM, T.Phi3Config, LLAMA_LIKE | dict(sliding_window=WINDOW)),
    "phi": (T.PhiForCausalLM, T.PhiConfig, LLAMA_LIKE | dict(partial_rotary_factor=0.5, qk_layernorm=True)),
    "gemma": (T.GemmaForCausalLM, T.GemmaConfig, LLAMA_LIKE | dict(head_dim=8)),
    "olmo2": (T.Olmo2ForCausalLM, T.Olmo2Config, LLAMA_LIKE),
    "olmo3": (T.Olmo3ForCausalLM, T.Olmo3Config, LLAMA_LIKE | dict(
        sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])),
    "smollm3": (T.SmolLM3ForCausalLM, T.SmolLM3Config, LLAMA_LIKE | dict(no_rope_layers=[1, 0])),
    "granite": (T.GraniteForCausalLM, T.GraniteConfig, LLAMA_LIKE | dict(
        embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=4.0)),
    "cohere2": (T.Cohere2ForCausalLM, T.Cohere2Config, LLAMA_LIKE | dict(
        sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])),
    "ministral": (T.MinistralForCausalLM, T.MinistralConfig, LLAMA_LIKE | dict(
        head_dim=8, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])),
    "stablelm": (T.StableLmForCausalLM, T.StableLmConfig, LLAMA_LIKE | dict(partial_rotary_factor=0.5,
                                                                            qk_layernorm=True)),
    "gpt_oss": (T.GptOssForCausalLM, T.GptOssConfig, LLAMA_LIKE | dict(  # attention sinks, eager attention
        head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"])),
}

HYBRID = dict(intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)  # an attention layer's
STATEFUL = {  # families whose cache holds more than keys and values (Mamba-style, linear-attention, convolution
    #          layers; Gemma 3n's layers that read other layers' keys)
    "mamba": (T.MambaForCausalLM, T.MambaConfig, dict(hidden_size=32, num_hidden_layers=2, state_size=4)),
    "mamba2": (T.Mamba2ForCausalLM, T.Mamba2Config, dict(hidden_size=32, num_hidden_layers=2, num_heads=4,
                                                          head_dim=16, n_groups=1, state_size=8, chunk_size=8)),
    "jamba": (T.JambaForCausalLM, T.JambaConfig, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
        expert_layer_offset=1, num_experts=2, mamba_d_state=4)),
    "falcon_h1": (T.FalconH1ForCausalLM, T.FalconH1Config, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_head=8, mamba_d_state=8,
        mamba_chunk_size=8)),
    "granitemoehybrid": (T.GraniteMoeHybridForCausalLM, T.GraniteMoeHybridConfig, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, layer_types=["mamba", "attention"], mamba_n_heads=4, mamba_d_head=16,
        mamba_d_state=8, mamba_chunk_size=8, num_local_experts=2, num_experts_per_tok=1,
        shared_intermediate_size=64)),
    "bamba": (T.BambaForCausalLM, T.BambaConfig, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, attn_layer_indices=[1], mamba_n_heads=4, mamba_d_head=16,
        mamba_d_state=8, mamba_chunk_size=8)),
    "zamba2": (T.Zamba2ForCausalLM, T.Zamba2Config, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, layers_block_type=["mamba", "hybrid"], mamba_d_state=8,
        mamba_headdim=16, n_mamba_heads=4, chunk_size=8)),
    "lfm2": (T.Lfm2ForCausalLM, T.Lfm2Config, HYBRID | dict(hidden_size=32, num_hidden_layers=2,
                                                            layer_types=["conv", "full_attention"])),
    "qwen3_next": (T.Qwen3NextForCausalLM, T.Qwen3NextConfig, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
        linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
        num_experts=2, num_experts_per_tok=1, moe_intermediate_size=16, shared_expert_intermediate_size=16)),
    "qwen3_5_text": (T.Qwen3_5ForCausalLM, T.Qwen3_5TextConfig, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8)),
    "olmo_hybrid": (T.OlmoHybridForCausalLM, T.OlmoHybridConfig, HYBRID | dict(
        hidden_size=32, num_hidden_layers=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
        linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=16)),
    "falcon_mamba": (T.FalconMambaForCausalLM, T.FalconMambaConfig, dict(hidden_size=32, num_hidden_layers=2,
                                                                          state_size=4, intermediate_size=64)),
    "nemotron_h": (T.NemotronHForCausalLM, T.NemotronHConfig, HYBRID | dict(
        hidden_size=32, head_dim=8, layers_block_type=["linear_attention", "full_attention", "mlp"],
        ssm_state_size=8, mamba_num_heads=4, mamba_head_dim=16, chunk_size=8, n_groups=1)),
    "gemma3n_text": (T.Gemma3nForCausalLM, T.Gemma3nTextConfig, HYBRID | dict(  # layers sharing others' KV cache
        hidden_size=32, num_hidden_layers=4, head_dim=8, intermediate_size=[64] * 4, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"] * 2, num_kv_shared_layers=2,
        hidden_size_per_layer_input=8, vocab_size_per_layer_input=300, laurel_rank=4, altup_num_inputs=2,
        activation_sparsity_pattern=[0.0] * 4)),
    "lfm3": (T.Lfm3ForCausalLM, T.Lfm3Config, HYBRID | dict(
        hidden_size=32, num_hidden_layers=3, head_dim=8, layer_types=["conv", "full_attention", "sliding_attention"],
        sliding_window=WINDOW)),
    "kimi_linear": (T.KimiLinearForCausalLM, T.KimiLinearConfig, dict(
        hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, num_experts=2, num_experts_per_token=1, num_shared_experts=1,
        layer_types=["linear_attention", "full_attention"], mlp_layer_types=["dense", "sparse"], linear_head_dim=8,
        linear_num_heads=4, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, head_dim=8, qk_head_dim=16,
        kv_lora_rank=16, q_lora_rank=None)),
}

# (context, choices): contexts wider than the window; the last two pack no wider than it (GPT-Neo packs those)
REQUESTS = [(list(range(10, 19)), [[40, 41, 42], [43], [44, 45, 46, 47, 48]]),
            ([11, 12], [[50, 51, 52, 53], [54, 55]]),
            (list(range(20, 34)), [[60, 61], [62, 63], [64, 65], [66, 67, 68, 69, 70, 71]]),
            ([5, 6, 7], [[8], [9, 10]]),
            ([13, 14], [[15], [16]])]
TARGETS = [[90, 91, 92, 93, 94], [], [95], [96, 97, 98]]  # uneven, one empty; one per REQUESTS context
pytestmark = pytest.mark.usefixtures("onednn")


def tiny_family(entry, tokenizer):
    """(model, tokenizer): a tiny random model of a FAMILIES or STATEFUL entry."""
    model_class, config_class, arguments = entry
    config = config_class(vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=None,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **arguments)
    torch.manual_seed(0)
    return model_class(config).eval(), tokenizer


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tiny):
    return tiny_family(FAMILIES[request.param], tiny[1])


def test_every_packed_family_is_checked_here():
    assert set(FAMILIES) == PACKED_FAMILIES


def test_a_family_or_attention_not_checked_here_is_scored_choice_by_choice(tiny):
    """Bloom (ALiBi from the 2D mask) and flash attention (no 4D mask) are never packed, yet exact."""
    tokenizer = tiny[1]
    torch.manual_seed(0)
    bloom = T.BloomForCausalLM(T.BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)).eval()
    assert attention_of(bloom).widest == 0
    want = [own_logprobs(bloom, ctx, c) for ctx, choices in REQUESTS for c in choices]
    got = choice_logprobs(bloom, REQUESTS, tokenizer.pad_token_id, 512, share_context=True)
    assert largest_difference([s for per_request in got for s in per_request], want) < 1e-4
    llama = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=len(tokenizer), **LLAMA_LIKE))
    llama.config._attn_implementation = "flash_attention_2"
    assert attention_of(llama).widest == 0


def test_choice_scores_equal_the_models_own_forward(family):
    """Context sharing on (packed rows where the family packs) and off, in one batch and one by one."""
    model, tokenizer = family
    gated = [m for m in model.modules() if hasattr(m, "gate_proj") and hasattr(m, "up_proj")]
    assert all(linear._gated(m) for m in gated)  # their activation and product fused into oneDNN's products
    widest = attention_of(model).widest
    assert widest != 0 and (widest is None or any(packed_width(ctx, c) <= widest for ctx, c in REQUESTS))
    want = [own_logprobs(model, ctx, c) for ctx, choices in REQUESTS for c in choices]
    for share_context in (True, False):
        with torch.profiler.profile() as profile:
            together = choice_logprobs(model, REQUESTS, tokenizer.pad_token_id, 512, share_context)
        assert any(e.key == "mkldnn::_linear_pointwise" for e in profile.key_averages()) == linear.onednn_available()
        alone = [choice_logprobs(model, [r], tokenizer.pad_token_id, 512, share_context)[0] for r in REQUESTS]
        for scores in (together, alone):
            assert largest_difference([s for per_request in scores for s in per_request], want) < 1e-4


def test_dialogue_targets_and_greedy_replies_equal_the_models_own(family):
    """Targets teacher-forced in the prefill, prompts packed several to a row where the family packs (a
    GPT-Neo row no wider than its window; wider prompts a row each), the cache kept for the contexts:
    in one pass, in passes of a few tokens joined into one cache, and one row alone. Scores as the
    model's forward, greedy replies as its `generate`."""
    model, tokenizer = family
    contexts = [ctx for ctx, _ in REQUESTS[:len(TARGETS)]]
    want = [own_logprobs(model, ctx, target) for ctx, target in zip(contexts, TARGETS)]
    replies = [own_reply(model, tokenizer, ctx, 8) for ctx in contexts]
    passes = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: passes.append(kwargs["input_ids"].shape),
                                       with_kwargs=True)
    try:
        state = prefill(model, contexts, tokenizer.pad_token_id, TARGETS)
    finally:
        hook.remove()
    packs_all = attention_of(model).widest is None
    assert sum(rows for rows, _ in passes) == (3 if packs_all else 4)  # rows of 14, 13, and 5 + 2 tokens
    assert largest_difference(state.target_logprobs, want) < 1e-4
    assert generate_from(model, tokenizer, state, 8, stops=[]) == replies
    for rows, max_tokens in (([0, 1, 2, 3], 8), ([2], None)):
        state = prefill(model, [contexts[i] for i in rows], tokenizer.pad_token_id, [TARGETS[i] for i in rows],
                        max_tokens=max_tokens)
        assert largest_difference(state.target_logprobs, [want[i] for i in rows]) < 1e-4
        assert generate_from(model, tokenizer, state, 8, stops=[]) == [replies[i] for i in rows]


def test_static_decoding_replies_equal_the_models_own(family):
    """Decoding steps of fixed shapes (the GPU's, graphed there; run eagerly here): a cache of fixed width
    written in place, the masks (with every window) built by the engine. Same replies as `generate`, also with
    rows finishing early (a stop string): they stay in the batch, masked."""
    model, tokenizer = family
    contexts = [ctx for ctx, _ in REQUESTS]
    if attention_of(model).widest is not None:  # GPT-Neo's local layers window columns themselves
        with pytest.raises(ValueError, match="static=False"):
            generate_from(model, tokenizer, prefill(model, contexts, tokenizer.pad_token_id), 8, [], static=True)
        return
    replies = [own_reply(model, tokenizer, ctx, 10) for ctx in contexts]
    state = prefill(model, contexts, tokenizer.pad_token_id, TARGETS + [[], []])
    assert generate_from(model, tokenizer, state, 10, stops=[], static=True) == replies
    stop = replies[0][2:4]  # cuts row 0 early, and any other reply holding it
    state = prefill(model, contexts, tokenizer.pad_token_id)
    assert generate_from(model, tokenizer, state, 10, stops=[stop], static=True) == [r.split(stop)[0] for r in replies]


@pytest.mark.parametrize("name", list(STATEFUL))
def test_a_stateful_family_scores_and_replies_as_its_own(tiny, name):
    """A family with a recurrent state is never packed and its cache never cut back: choices scored choice
    by choice, targets apart, replies decoded from a prefill of the prompts alone, in the model's own cache
    (every row kept to the end). Scores as the model's forward, greedy replies as its `generate`."""
    model, tokenizer = tiny_family(STATEFUL[name], tiny[1])
    pad = tokenizer.pad_token_id
    assert keeps_state(model) and attention_of(model).widest == 0
    want = [own_logprobs(model, ctx, c) for ctx, choices in REQUESTS for c in choices]
    got = choice_logprobs(model, REQUESTS, pad, 512, share_context=True)
    assert largest_difference([s for per_request in got for s in per_request], want) < 1e-4
    contexts = [ctx for ctx, _ in REQUESTS]
    pairs = list(zip(contexts, TARGETS))
    assert largest_difference(continuation_logprobs(model, pairs, pad, 512),
                              [own_logprobs(model, ctx, target) for ctx, target in pairs]) < 1e-4
    with pytest.raises(ValueError, match="recurrent state"):
        prefill(model, contexts[:len(TARGETS)], pad, TARGETS)
    replies = [own_reply(model, tokenizer, ctx, 8) for ctx in contexts]
    assert greedy_generate(model, tokenizer, contexts, 8, []) == replies
    stop = replies[0][2:4]  # rows finishing early stay in the batch, masked
    assert greedy_generate(model, tokenizer, contexts, 8, [stop]) == [r.split(stop)[0] for r in replies]


def test_a_stateful_familys_dialogue_batch_runs_in_passes_of_max_batch_tokens(tiny, data_dir):
    """`converse` on a hybrid (Mamba and attention layers): its prompts decoded in several passes, each
    record's loss and reply as the prompt's own."""
    from gap.data.evaluation import tokenize_example
    from gap.data.tasks import load_examples

    model, tokenizer = tiny_family(STATEFUL["granitemoehybrid"], tiny[1])
    items = [tokenize_example("empathetic_dialogues", ex, tokenizer, 512)
             for ex in load_examples(data_dir, "empathetic_dialogues", "validation", 5)]
    passes = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: passes.append(kwargs["input_ids"].shape),
                                       with_kwargs=True)
    try:
        records = converse(model, tokenizer, items, Scoring(max_new_tokens=6, max_batch_tokens=1024))
    finally:
        hook.remove()
    prompts = [shape for shape in passes if shape[1] > 1 and shape[0] < len(items)]  # prefills of the prompts
    assert len(prompts) >= 2 and all(rows * width <= 1024 or rows == 1 for rows, width in prompts)
    for item, record in zip(items, records):
        target = item.continuations[0]
        kept = (item.context + target)[-512:]  # a prompt and target over max_length lose their first tokens
        lls = own_logprobs(model, kept[:-len(target)], target)
        assert abs(record["nll"] + sum(lls)) < 1e-4 * len(lls) and record["tokens"] == len(lls)
        assert record["pred"] == own_reply(model, tokenizer, item.context, 6).split("\nUser ")[0]


@pytest.fixture(scope="module")
def tiny_opt():
    """(model, tokenizer) of the tiny-random-opt entry: OPT with GPT-2's BPE set up as OPT's, BOS-adding."""
    from gap.modules.loading import check_model_config, load_model, load_tokenizer

    cfg = compose_cfg("train", ["model=tiny-random-opt"]).model
    if not Path(cfg.tokenizer.path).is_dir():
        pytest.fail(f"OPT-style tokenizer not found at {cfg.tokenizer.path}; run `make tokenizer-opt`")
    check_model_config(cfg)
    tokenizer = load_tokenizer(cfg)
    return load_model(cfg, tokenizer).eval(), tokenizer


def test_a_bos_adding_tokenizer_end_to_end_in_the_paper_format(tiny_opt, data_dir):
    """As facebook/opt-* tokenizers: `</s>` before every encoded text. The context and the dialogue target
    carry it (the authors encoded both with special tokens), choices do not; left truncation keeps it;
    scores and replies equal the OPT model's own; the ascent sample's labels are its input ids."""
    from gap.data.corpus import CorpusDataModule
    from gap.data.evaluation import tokenize_example
    from gap.data.tasks import load_examples

    model, tok = tiny_opt
    assert model.config.model_type == "opt" and tok.bos_token == tok.eos_token == "</s>"
    assert tok.pad_token_id != tok.bos_token_id
    bos = tok.bos_token_id
    items = [tokenize_example(task, ex, tok, 512) for task in ("copa", "arc_easy")
             for ex in load_examples(data_dir, task, "validation", 3)]
    assert all(it.context[0] == bos and bos not in it.context[1:] for it in items)
    assert all(bos not in c for it in items for c in it.continuations)
    requests = [(it.context, it.continuations) for it in items]
    want = [own_logprobs(model, ctx, c) for ctx, choices in requests for c in choices]
    for share_context in (True, False):
        scores = choice_logprobs(model, requests, tok.pad_token_id, 512, share_context)
        assert largest_difference([s for per_request in scores for s in per_request], want) < 1e-4

    long = tokenize_example("pubmed_qa", load_examples(data_dir, "pubmed_qa", "validation", 1)[0], tok, 64)
    whole = tok(long.example.context)["input_ids"]
    assert len(long.context) == 64 and long.context[0] == bos and long.context[1:] == whole[-63:]

    dialogue = [tokenize_example("empathetic_dialogues", ex, tok, 512)
                for ex in load_examples(data_dir, "empathetic_dialogues", "validation", 3)]
    targets = [it.continuations[0] for it in dialogue]
    assert all(t[0] == bos and tok.decode(t, skip_special_tokens=True) == it.target_text
               for t, it in zip(targets, dialogue))
    state = prefill(model, [it.context for it in dialogue], tok.pad_token_id, targets)
    want = [own_logprobs(model, it.context, t) for it, t in zip(dialogue, targets)]
    assert largest_difference(state.target_logprobs, want) < 1e-4
    replies = [own_reply(model, tok, it.context, 6) for it in dialogue]
    assert generate_from(model, tok, state, 6, stops=[]) == replies

    sample = "def f():\n    return 1\n</s>print(f())"
    corpus = CorpusDataModule([sample], tok, 512)
    corpus.setup()
    item = corpus.items[0]
    ids = tok(sample)["input_ids"]
    assert item["input_ids"].tolist() == ids and ids[0] == bos and ids.count(bos) == 2
    assert item["labels"].tolist() == ids  # no padding in a sample of one: every token, the inner `</s>` too
