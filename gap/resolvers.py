"""Config resolvers, registered when `gap` is imported (light: no torch or Lightning)."""
import netrc
import os
from urllib.parse import urlparse

from omegaconf import OmegaConf


def wandb_host() -> str:
    """The W&B server's host: WANDB_BASE_URL's (a self-hosted server), else W&B's cloud."""
    return urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"


def wandb_offline() -> bool:
    """Offline unless W&B credentials exist (WANDB_API_KEY, or a netrc entry for the server's host, as
    `wandb login` writes it) and WANDB_MODE allows."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators(wandb_host()) is None
    except (OSError, netrc.NetrcParseError):
        return True


OmegaConf.register_new_resolver("gap.wandb_offline", wandb_offline, replace=True)
