"""Experiment loggers from the `logger` config group (W&B offline without credentials: `gap.resolvers`);
a logger that fails (disk full, service error) is dropped with a warning instead of ending the job.
What a W&B run gets beyond scalars (definitions, deltas, tables, artifacts) is in `gap.tracking`."""
import hashlib
import logging
import os
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import loggers as lightning_loggers
from lightning.pytorch.loggers import Logger

from gap.preemption import EXIT_CODE
from gap.sweep import in_multirun
from gap.tracking.artifacts import log_checkpoints, log_results
from gap.tracking.metrics import baseline_summary, define_metrics, selected_summary, with_deltas
from gap.tracking.tables import log_tables

log = logging.getLogger("gap")


class WandbLogger(lightning_loggers.WandbLogger):
    """Lightning's W&B logger (`logger=wandb`), less the `anonymous=None` it hands `wandb.init` when no one
    asked for anonymous logging, which wandb (since its 2025 removal of anonymous mode) answers on every run
    with "The anonymous setting has no effect"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous", False) is None:
            del self._wandb_init["anonymous"]


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


class TrackedWandb(Tolerant):
    """A W&B logger whose keys are defined before their first value and whose evaluations also log
    `delta/<key>` once the unchanged model's evaluation is known (`gap.tracking.metrics`)."""

    def __init__(self, inner: WandbLogger):
        super().__init__(inner)
        self.defined: set[str] = set()
        self.baseline: dict | None = None

    def log_metrics(self, metrics, step=None):
        metrics = with_deltas(metrics, self.baseline)
        self.guarded(lambda inner: define_metrics(inner.experiment, metrics, self.defined))
        super().log_metrics(metrics, step)

    def update_summary(self, values: dict) -> None:
        self.guarded(lambda inner: inner.experiment.summary.update(values))


class EvaluationStep(L.Callback):
    """Lightning logs the evaluation that ends a training epoch at the step count before that epoch's update;
    a logged `step` puts it at the optimizer steps taken (`results.json`'s `step`), so the unchanged model
    alone is at step 0 and a chart's x-axis counts updates."""

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log("step", float(trainer.global_step), batch_size=1)


def run_id(out_dir: Path) -> str:
    """A W&B run id for a sweep's job, from the sweep's and the job's directory names (stable across re-runs
    and nodes), so a job run again after a pre-emption resumes its W&B run instead of making a twin."""
    out_dir = Path(out_dir).resolve()
    return hashlib.sha1(f"{out_dir.parent.name}/{out_dir.name}".encode()).hexdigest()[:16]


EXIT_CODES = {"ok": 0, "diverged": 0, "failed": 1, "preempted": EXIT_CODE}  # W&B's exit code per status


def make_loggers(logger_cfg, config: dict) -> list[Tolerant]:
    """Instantiate every logger named in the group (none for `logger=none`), with the run's config. A W&B
    run of a sweep's job gets an id derived from the job (`run_id`) unless the config names one."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    loggers = []
    for c in (logger_cfg or {}).values():
        if c.get("_target_", "").endswith("WandbLogger"):
            derived = {"id": run_id(config["paths"]["output_dir"])} if in_multirun() and not c.get("id") else {}
            loggers.append(TrackedWandb(instantiate(c, **derived)))
        else:
            loggers.append(Tolerant(instantiate(c)))
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def wandb_loggers(loggers: list[Tolerant]) -> list[TrackedWandb]:
    """The W&B loggers, on the process that owns the W&B run (global rank 0)."""
    if rank_zero_only.rank != 0:
        return []
    return [logger for logger in loggers if isinstance(logger, TrackedWandb)]


def track_baseline(loggers: list[Tolerant], metrics: dict) -> None:
    """The unchanged model's evaluation (already logged as `val/...` at step 0) is known: later evaluations
    log their deltas to it; its own are 0; the summary gets `baseline/<key>`."""
    for logger in wandb_loggers(loggers):
        logger.baseline = dict(metrics)
        logger.log_metrics({f"delta/{k}": 0.0 for k in metrics}, step=0)
        logger.update_summary(baseline_summary(metrics))


def summarize_run(loggers: list[Tolerant], results: dict, evaluations: list[dict], examples: dict,
                  tracking: dict, out_dir: Path) -> None:
    """The end of a finished run in W&B: `status` and the selected evaluations in the summary, the tables,
    and the results and checkpoints as artifacts."""
    for logger in wandb_loggers(loggers):  # `status` goes to the summary as the run finishes (`finish_loggers`)
        logger.update_summary(selected_summary(results))
        logger.guarded(lambda inner: log_tables(inner.experiment, results, evaluations, examples, tracking["samples"]))
        logger.guarded(lambda inner: log_checkpoints(inner.experiment, out_dir, tracking["upload_checkpoints"]))


def finish_loggers(loggers: list[Tolerant], status: str, out_dir: Path) -> None:
    """Close W&B runs so offline files are complete, whatever happened to the job: `status` in the summary,
    `results.json` as an artifact, and an exit code that says how the job ended (`EXIT_CODES`)."""
    def finish(inner):
        run = inner._experiment
        if run is None:  # never started
            return
        run.summary["status"] = status
        log_results(run, out_dir, status)
        if status == "preempted":
            run.mark_preempting()
        run.finish(exit_code=EXIT_CODES[status])

    for logger in wandb_loggers(loggers):
        logger.guarded(finish)
