"""Experiment loggers from the `logger` config group (W&B offline without credentials: `gap.resolvers`);
a logger that fails (disk full, service error) is dropped with a warning instead of ending the job."""
import logging
import os

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from gap.preemption import EXIT_CODE
from gap.results import selected_metrics

log = logging.getLogger("gap")


class Tolerant(Logger):
    """Forwards to a logger until it raises; then logs the error once and ignores the logger."""

    def __init__(self, inner: Logger):
        super().__init__()
        self.inner, self.failed = inner, False

    def guarded(self, action):
        """`action(inner logger)`, unless the logger has failed; an error marks it failed."""
        if self.failed:
            return None
        try:
            return action(self.inner)
        except Exception as err:  # noqa: BLE001 - tracking must never end the run
            self.failed = True
            log.warning("%s failed, the run goes on without it: %s: %s", type(self.inner).__name__,
                        type(err).__name__, err)
            return None

    @property
    def name(self):
        return self.inner.name

    @property
    def version(self):
        return self.guarded(lambda inner: inner.version)

    @property
    def save_dir(self):
        return self.inner.save_dir

    def log_hyperparams(self, params, *args, **kwargs):
        self.guarded(lambda inner: inner.log_hyperparams(params, *args, **kwargs))

    def log_metrics(self, metrics, step=None):
        self.guarded(lambda inner: inner.log_metrics(metrics, step))

    def finalize(self, status):
        self.guarded(lambda inner: inner.finalize(status))


def make_loggers(logger_cfg, config: dict) -> list[Tolerant]:
    """Instantiate every logger named in the group (none for `logger=none`), with the run's config."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    loggers = [Tolerant(instantiate(c)) for c in (logger_cfg or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def summarize_run(loggers: list[Tolerant], results: dict) -> None:
    """Put the selected evaluation of each category (and the status) in W&B's run summary."""
    summary = {"status": results["status"]}
    for category, metrics in selected_metrics(results).items():
        summary.update({f"selected/{category}/epoch": results["best"][category]["epoch"],
                        **{f"selected/{category}/{k}": v for k, v in metrics.items()}})
    for logger in loggers:
        logger.guarded(lambda inner: hasattr(inner.experiment, "summary") and inner.experiment.summary.update(summary))


def finish_loggers(loggers: list[Tolerant], preempted: bool = False) -> None:
    """Close W&B runs so offline files are complete, whatever happened to the job; a preempted run is
    marked so in W&B."""
    def finish(inner):
        run = getattr(inner, "_experiment", None)
        if run is not None and hasattr(run, "finish"):
            if preempted:
                run.mark_preempting()
            run.finish(exit_code=EXIT_CODE if preempted else 0)

    for logger in loggers:
        logger.guarded(finish)
