"""What the memory estimate needs of a model, read without loading its weights: the parameter count
and the shapes that size activations, from a GGUF header, a config on the meta device, or the model
entry's `arch` summary."""
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from gap.errors import ConfigError

log = logging.getLogger("gap")


@dataclass(frozen=True)
class Arch:
    """What the estimate needs of a model: its parameter count and the shapes that size activations."""
    params: int
    layers: int
    hidden: int
    vocab: int
    kv_dim: int  # width of one layer's keys (= hidden, or less with grouped-query attention)


def _meta_arch(config) -> Arch:
    """Count the parameters exactly by building the model on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    heads = getattr(text, "num_attention_heads", None)
    kv_dim = 0  # no attention layer (Mamba): nothing in its cache grows with the tokens
    if heads:
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        kv_dim = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    return Arch(sum(p.numel() for p in model.parameters()), text.num_hidden_layers, text.hidden_size,
                text.vocab_size, kv_dim)


def gguf_arch(path) -> Arch:
    """Sum the tensor shapes in a GGUF header (llama.cpp names: token_embd, blk.N.attn_k, ...)."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(path).tensors}
    hidden, vocab = (int(n) for n in tensors["token_embd.weight"].shape)  # ggml order: [hidden, vocab]
    layers = len({name.split(".")[1] for name in tensors if name.startswith("blk.")})
    kv_dim = int(tensors["blk.0.attn_k.weight"].shape[1])
    return Arch(sum(int(t.n_elements) for t in tensors.values()), layers, hidden, vocab, kv_dim)


def check_gguf(path: Path) -> Arch:
    """Refuse a missing, foreign or truncated GGUF file: its header must parse and every tensor must
    lie inside the file. Returns the architecture it describes; the jobs of a sweep read an unchanged
    file once."""
    if not path.is_file():
        raise ConfigError(f"GGUF file not found: {path} (for the embedded model run `make model`)")
    stat = path.stat()
    return _gguf_arch_once(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _gguf_arch_once(path: str, size: int, mtime_ns: int) -> Arch:
    try:
        return gguf_arch(path)
    except (ValueError, IndexError, KeyError, OSError) as err:
        raise ConfigError(f"GGUF file {path} is unreadable or truncated ({err}); valid: a complete GGUF "
                          f"file (for the embedded model: delete it and run `make model`)") from None


def model_arch(model_cfg) -> Arch | None:
    """The architecture of a model entry, from the first source that has it: the `random_init` fields, the
    GGUF header, config.json in a local directory or the HF cache, or the entry's `arch` summary (models
    not downloaded yet). None when none of them does."""
    try:
        if model_cfg.get("random_init") is not None:
            from gap.random_init import byte_tokenizer, random_init_config
            return _meta_arch(random_init_config(model_cfg, byte_tokenizer()))
        if model_cfg.get("gguf_file"):
            return check_gguf(Path(model_cfg.path) / model_cfg.gguf_file)
    except Exception as err:  # a broken file is the loader's to report
        log.info("memory preflight: cannot read the architecture of %s: %s", model_cfg.name, err)
        return None
    if model_cfg.get("path"):
        from transformers import AutoConfig
        try:
            return _meta_arch(AutoConfig.from_pretrained(model_cfg.path, revision=model_cfg.get("revision"),
                                                         local_files_only=True))
        except Exception:  # not downloaded (or not a transformers model): use the summary below
            pass
    if model_cfg.get("arch") is not None:
        a = model_cfg.arch
        return Arch(a.num_parameters, a.layers, a.hidden_size, a.vocab_size, a.get("kv_dim") or a.hidden_size)
    return None
