"""`method.lora.enabled=true`: the steps train a LoRA adapter (peft) instead of every weight, so the
update is low-rank. The adapter goes into the model in place for the training and is merged into its
weights right after, so later evaluations, checkpoints and a sweep's next job see a plain model."""
from contextlib import contextmanager

from peft import LoraConfig, get_peft_model

from gap.errors import ConfigError


def lora_config(cfg) -> LoraConfig:
    """`target_modules: null` takes peft's default for the model family (Llama, OPT, GPT-Neo: q_proj and
    v_proj; GPT-NeoX/Pythia: query_key_value). No dropout, as the rest of GAP."""
    targets = list(cfg.target_modules) if cfg.get("target_modules") else None
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=targets, bias="none")


@contextmanager
def lora_adapter(model, cfg):
    """Within the block, `model` (changed in place) trains only a LoRA adapter; on leaving it, the adapter
    is merged into the weights and every weight is trainable again. Without `cfg.enabled`, nothing."""
    if not (cfg and cfg.enabled):
        yield
        return
    try:
        adapted = get_peft_model(model, lora_config(cfg))
    except ValueError as err:  # e.g. a family peft has no default target modules for
        raise ConfigError(f"method.lora: {err}; set method.lora.target_modules=[...] to the model's "
                          f"linear layer names") from None
    try:
        yield
    finally:
        adapted.merge_and_unload().requires_grad_(True)
