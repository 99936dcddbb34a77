"""The Lightning strategy of `cfg.trainer.strategy`, completed with what only the loaded model knows."""
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def transformer_blocks(model) -> set[type]:
    """The model's repeated block classes (Hugging Face names them in `_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def make_strategy(strategy_cfg, model):
    """A strategy name (`ddp`, `auto`) passes through. FSDP gets each transformer block as its own
    unit (so one block's parameters are gathered at a time) and, with `activation_checkpointing: true`,
    recomputes each block's activations in the backward pass."""
    if not isinstance(strategy_cfg, DictConfig):
        return strategy_cfg or "auto"
    kwargs = OmegaConf.to_container(strategy_cfg, resolve=True)
    target = kwargs.pop("_target_")
    if target.endswith("FSDPStrategy"):
        blocks = transformer_blocks(model)
        kwargs["auto_wrap_policy"] = blocks
        if kwargs.pop("activation_checkpointing", False):
            kwargs["activation_checkpointing_policy"] = blocks
    return instantiate({"_target_": target}, **kwargs)
