"""The LightningModule: the ascent step (the inverted LM loss), and evaluation dispatched to the
scoring engine (`gap.scoring.evaluator`) with its records gathered across ranks."""
import math
import time
from contextlib import ExitStack

import lightning as L
import torch
import torch.distributed as dist

from gap.data.tasks import LM_EVAL_PREFIX
from gap.modules.objectives import objective, random_direction, sequence_logprob
from gap.schema import NULL_ARM
from gap.scoring.evaluator import Scoring, score_batch
from gap.scoring.linear import onednn_linears
from gap.scoring.metrics import evaluation_metrics


class GAPModule(L.LightningModule):
    """Wraps a causal LM. Training: one sample, the loss of `method` (`gap.modules.objectives`); the null
    arm (`random_direction`) replaces each gradient by a random direction of its norm, drawn from
    `direction_seed`.
    Validation: each batch of a task goes to `score_batch`; every finished evaluation is appended to
    `evaluations` with its metrics and per-example predictions.

    Under data parallelism each rank scores every `world_size`-th batch; the records are gathered and
    the metrics computed from them in example order, so they equal a single process's. A harness unit
    (`lm_eval/<name>`, one batch of its documents) is evaluated by `harness` (`gap.harness.tasks.HarnessSuite`),
    which gives its logged samples as records and the harness's results (`lm_eval` in the evaluation)."""

    def __init__(self, model, tokenizer, tasks: list[str], method: str, lr: float, betas=(0.9, 0.98),
                 scoring: Scoring = Scoring(), split_batches: bool = True, beta: float | None = None,
                 direction_seed="0", harness=None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.tasks, self.method, self.beta = list(tasks), method, beta
        self.direction_seed = direction_seed
        self.references: list[torch.Tensor] = []  # npo: each sample's log-likelihood under the unchanged model
        self.lr, self.betas = lr, tuple(betas)
        self.scoring, self.split_batches, self.harness = scoring, split_batches, harness
        self.evaluations: list[dict] = []
        self.last_train_nll: float | None = None
        self.last_step_taken: bool | None = None  # False when the step was skipped (fp16 overflow, divergence)
        self._scale_before: float | None = None
        self.diverged = False
        self._predictions: dict[str, list[dict]] = {}
        self._seconds: dict[str, float] = {}
        self._evaluating = ExitStack()  # an evaluation's engine state (weights packed once for its batches)
        self._sections: dict[str, dict] = {}  # harness unit -> the harness's results

    # ---- the ascent step -------------------------------------------------------------------
    def on_train_start(self):
        """npo's reference: the unchanged model's log-likelihood of each sample, computed once."""
        if self.method != "npo":
            return
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            for batch in self.trainer.train_dataloader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                nll = self.model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
                self.references.append(sequence_logprob(nll, batch["labels"]))

    def training_step(self, batch, batch_idx):
        nll = self.model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
        self.last_train_nll = nll.item()
        if not torch.isfinite(nll):  # skip the update, stop, and let the run report it as diverged
            self.diverged = True
            self.trainer.should_stop = True
            return None
        self.log("train/nll", nll, on_step=True, on_epoch=False, prog_bar=True, batch_size=1)
        reference = self.references[batch_idx] if self.references else None
        return objective(self.method, nll, batch["labels"], reference, self.beta)

    def _loss_scale(self) -> float | None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16 loss scaling (16-mixed)
        return scaler.get_scale() if scaler is not None else None

    def on_train_batch_start(self, batch, batch_idx):
        self._scale_before = self._loss_scale()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """Whether the optimizer step was taken: a loss scaler skips the step (and lowers its scale) when
        the gradients overflow, as the authors' first fp16 steps did; a non-finite loss skips it too."""
        scale = self._loss_scale()
        finite = math.isfinite(self.last_train_nll)
        self.last_step_taken = finite and (scale is None or scale >= self._scale_before)
        self.log("train/step_taken", float(self.last_step_taken), on_step=True, on_epoch=False, batch_size=1)

    def on_before_optimizer_step(self, optimizer):
        """The null arm: every gradient (unscaled, on every rank the same after DDP's reduction) becomes a
        random direction of its norm, drawn for this step (1 for the first) and the parameter's name."""
        if self.method != NULL_ARM:
            return
        for name, parameter in self.model.named_parameters():
            if parameter.grad is not None:
                parameter.grad.copy_(random_direction(parameter.grad, self.direction_seed, self.global_step + 1, name))

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # with LoRA, the adapter's
        return torch.optim.Adam(trainable, lr=self.lr, betas=self.betas)

    # ---- evaluation ------------------------------------------------------------------------
    def _shard(self) -> tuple[int, int]:
        """(this rank, ranks) over which evaluation batches are split. Without `split_batches` (sharded
        parameters: every forward pass is collective) every rank scores every batch."""
        if not self.split_batches:
            return 0, 1
        return self.global_rank, self.trainer.world_size

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Evaluation batches hold token lists, which the scoring engine moves itself."""
        if isinstance(batch, list):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_validation_epoch_start(self):
        self._evaluating.enter_context(onednn_linears(self.model))

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        rank, ranks = self._shard()
        if batch_idx % ranks != rank:  # another rank's batch
            return
        task = self.tasks[dataloader_idx]
        start = time.perf_counter()
        if task.startswith(LM_EVAL_PREFIX):
            records, self._sections[task] = self.harness.evaluate(self.model, self.tokenizer, task, batch)
        else:
            records = score_batch(self.model, self.tokenizer, task, batch, self.scoring)
        self._seconds[task] = self._seconds.get(task, 0.0) + time.perf_counter() - start
        self._predictions.setdefault(task, []).extend(records)

    def _gathered(self) -> tuple[dict[str, list[dict]], dict[str, float], dict[str, dict]]:
        """Every rank's records (in example order), the slowest rank's seconds per task and the harness's
        results of each unit."""
        predictions, seconds, sections = self._predictions, self._seconds, self._sections
        if self._shard()[1] > 1 and dist.is_available() and dist.is_initialized():
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (predictions, seconds, sections))
            predictions = {t: [r for p, _, _ in parts for r in p.get(t, [])] for t in self.tasks}
            seconds = {t: max(s.get(t, 0.0) for _, s, _ in parts) for t in self.tasks}
            sections = {t: h for _, _, part in parts for t, h in part.items()}
        return ({t: sorted(predictions.get(t, []), key=lambda r: r["index"]) for t in self.tasks}, seconds,
                {t: sections[t] for t in self.tasks if t in sections})

    def on_validation_epoch_end(self):
        self._evaluating.close()
        predictions, seconds, sections = self._gathered()
        self._predictions, self._seconds, self._sections = {}, {}, {}
        if self.trainer.sanity_checking:
            return
        ours = {t: records for t, records in predictions.items() if not t.startswith(LM_EVAL_PREFIX)}
        units = {k: v for unit, section in sections.items() for k, v in self.harness.metrics(unit, section).items()}
        metrics = evaluation_metrics(ours, self.scoring.harness, units)
        # equal on every rank (gathered): the sync averages equal values
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=1, sync_dist=True)
        self.evaluations.append({
            "epoch": None if self.trainer.state.fn == "validate" else self.current_epoch,
            "step": self.global_step,
            "train_nll": self.last_train_nll,
            "step_taken": self.last_step_taken,
            "metrics": metrics,
            "seconds": {t: round(s, 3) for t, s in seconds.items()},
            "predictions": predictions,
            "lm_eval": sections,
        })

