"""The `tiny-random` model entry's parts, built in-process with no download: a byte-level tokenizer and a
small Llama architecture, or an OPT one (for tests, and counted without weights by the memory preflight)."""
from transformers import LlamaConfig, OPTConfig, PretrainedConfig, PreTrainedTokenizerFast


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 bytes + end-of-text), built in memory with no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def random_init_config(model_cfg, tokenizer) -> PretrainedConfig:
    """The architecture of a `random_init` entry (also counted, on the meta device, by `gap.memory.arch`):
    a Llama, or with `random_init.family: opt` an OPT (learned positions, as the paper's models)."""
    init = model_cfg.random_init
    special = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if init.get("family", "llama") == "opt":
        return OPTConfig(hidden_size=init.hidden_size, word_embed_proj_dim=init.hidden_size,
                         ffn_dim=4 * init.hidden_size, num_hidden_layers=init.layers, num_attention_heads=init.heads,
                         max_position_embeddings=2048, **special)
    return LlamaConfig(hidden_size=init.hidden_size, intermediate_size=4 * init.hidden_size,
                       num_hidden_layers=init.layers, num_attention_heads=init.heads,
                       max_position_embeddings=2048, tie_word_embeddings=True, **special)
