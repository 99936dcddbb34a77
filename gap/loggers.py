"""Experiment loggers from the `logger` config group; W&B goes offline by itself and never prompts."""
import netrc
import os

from hydra.utils import instantiate
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


def make_loggers(logger_cfg) -> list:
    """Instantiate every logger named in the group (none for `logger=none`)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    return [instantiate(c) for c in (logger_cfg or {}).values()]


def finish_loggers(loggers) -> None:
    """Close W&B runs so offline files are complete, whatever happened to the job."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
