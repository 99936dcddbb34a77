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


def make_loggers(logger_cfg, config: dict) -> list:
    """Instantiate every logger named in the group (none for `logger=none`), with the run's config."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    loggers = [instantiate(c) for c in (logger_cfg or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def summarize_run(loggers, results: dict) -> None:
    """Put the selected evaluation of each category (and the status) in W&B's run summary."""
    summary = {"status": results["status"]}
    for category, best in results.get("best", {}).items():
        epoch = best["epoch"]
        metrics = next(h["metrics"] for h in results["history"] if h["epoch"] == epoch)
        summary.update({f"selected/{category}/epoch": epoch,
                        **{f"selected/{category}/{k}": v for k, v in metrics.items()}})
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "summary"):
            experiment.summary.update(summary)


def finish_loggers(loggers) -> None:
    """Close W&B runs so offline files are complete, whatever happened to the job."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
