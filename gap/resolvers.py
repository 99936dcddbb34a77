"""Config resolvers, registered when `gap` is imported (light: no torch or Lightning)."""
import netrc
import os

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """Offline unless W&B credentials exist (WANDB_API_KEY or a netrc entry) and WANDB_MODE allows."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


OmegaConf.register_new_resolver("gap.wandb_offline", wandb_offline, replace=True)
