"""The LightningModule: the ascent step (the inverted LM loss) and the 12-task evaluation hooks."""
import time

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy

from gap.data.tasks import CLASSIFICATION, DIALOGUE, TASKS
from gap.scoring.batching import FILL
from gap.scoring.generation import generate_from
from gap.scoring.loglikelihood import choice_logprobs, continuation_logprobs, fits
from gap.scoring.prefill import prefill
from gap.scoring.text import unigram_f1

SIGNS = {"gap": -1.0, "mle": 1.0}  # the step minimises sign * NLL: gap raises the NLL, mle lowers it


class GAPModule(L.LightningModule):
    """Wraps a causal LM. Training: one sample, loss = sign * mean token NLL. Validation: each batch of
    a task goes to choice scoring (classification) or to greedy generation (dialogue); every finished
    evaluation is appended to `evaluations` with its metrics and per-example predictions.

    Under data parallelism each rank scores every `world_size`-th batch; the records are gathered and
    the metrics computed from them in example order, so they equal a single process's."""

    def __init__(self, model, tokenizer, tasks: list[str], method: str, lr: float, betas=(0.9, 0.98),
                 max_length: int = 512, max_new_tokens: int = 32, stops=("\nUser ",), share_context: bool = True,
                 prompt_style: str = "gap"):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.tasks, self.method = list(tasks), method
        self.lr, self.betas = lr, tuple(betas)
        self.max_length, self.max_new_tokens, self.stops = max_length, max_new_tokens, list(stops)
        self.share_context, self.prompt_style = share_context, prompt_style
        self.evaluations: list[dict] = []
        self.last_train_nll: float | None = None
        self.diverged = False
        self._predictions: dict[str, list[dict]] = {}
        self._seconds: dict[str, float] = {}

    # ---- the ascent step -------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        nll = self.model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
        self.last_train_nll = nll.item()
        if not torch.isfinite(nll):  # skip the update, stop, and let the run report it as diverged
            self.diverged = True
            self.trainer.should_stop = True
            return None
        self.log("train/nll", nll, on_step=True, on_epoch=False, prog_bar=True, batch_size=1)
        return SIGNS[self.method] * nll

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=self.betas)

    # ---- evaluation ------------------------------------------------------------------------
    def _shard(self) -> tuple[int, int]:
        """(this rank, ranks) over which evaluation batches are split. With sharded parameters (FSDP,
        DeepSpeed stage 3) every forward pass is collective, so every rank scores every batch."""
        strategy = self.trainer.strategy
        if isinstance(strategy, FSDPStrategy) or getattr(strategy, "zero_stage_3", False):
            return 0, 1
        return self.global_rank, self.trainer.world_size

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Evaluation batches hold token lists, which the scoring engine moves itself."""
        if isinstance(batch, list):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        rank, ranks = self._shard()
        if batch_idx % ranks != rank:  # another rank's batch
            return
        task = self.tasks[dataloader_idx]
        start = time.perf_counter()
        records = self._classify(batch) if TASKS[task].kind == "classification" else self._converse(batch)
        self._seconds[task] = self._seconds.get(task, 0.0) + time.perf_counter() - start
        self._predictions.setdefault(task, []).extend(records)

    def _classify(self, items) -> list[dict]:
        """`acc`: the choice of highest summed log-likelihood. `prompt_style=harness` adds `acc_norm` (the
        log-likelihood divided by the choice's character length, as lm-evaluation-harness 0.4) and scores
        windows of `max_length + 1` tokens (the harness feeds `max_length` tokens and scores the next)."""
        harness = self.prompt_style == "harness"
        requests, owner = [], []
        for n, it in enumerate(items):
            if it.contexts is None:  # one context shared by the choices
                requests.append((it.context, it.continuations))
                owner.append(n)
            else:  # harness multiple-input tasks (winogrande): one context per choice
                requests += [(ctx, [cont]) for ctx, cont in zip(it.contexts, it.continuations)]
                owner += [n] * len(it.contexts)
        scores = choice_logprobs(self.model, requests, self.tokenizer.pad_token_id,
                                 self.max_length + 1 if harness else self.max_length, self.share_context)
        per_item = [[] for _ in items]
        for n, choice_scores in zip(owner, scores):
            per_item[n].extend(choice_scores)
        records = []
        for it, choice_scores in zip(items, per_item):
            lls = [sum(s) for s in choice_scores]
            pred = max(range(len(lls)), key=lls.__getitem__)  # first of ties, as the authors' argmin
            record = {"index": it.example.index, "label": it.example.label, "pred": pred, "loglikelihoods": lls}
            if harness:
                lengths = np.array([float(len(c)) for c in it.example.choices])
                with np.errstate(divide="ignore", invalid="ignore"):
                    pred_norm = int(np.argmax(np.array(lls) / lengths))
                record["pred_norm"] = pred_norm
            records.append(record)
        return records

    def _converse(self, items) -> list[dict]:
        """Teacher-forced loss of the target and a greedy reply, both from one pass over prompt + target."""
        pad_id = self.tokenizer.pad_token_id
        # a prompt + target over max_length is scored apart, as the authors truncated it
        whole = [fits(it.context, it.continuations, self.max_length) for it in items]
        state = prefill(self.model, [it.context for it in items], pad_id,
                        targets=[it.continuations[0] if fit else [] for it, fit in zip(items, whole)], fill=FILL)
        token_lls = state.target_logprobs
        long = [i for i, fit in enumerate(whole) if not fit]
        if long:
            pairs = [(items[i].context, items[i].continuations[0]) for i in long]
            for i, lls in zip(long, continuation_logprobs(self.model, pairs, pad_id, self.max_length)):
                token_lls[i] = lls
        replies = generate_from(self.model, self.tokenizer, state, self.max_new_tokens, self.stops)
        records = []
        for it, lls, reply in zip(items, token_lls, replies):
            records.append({"index": it.example.index, "target": it.example.target, "pred": reply,
                            "f1": unigram_f1(reply, it.target_text), "nll": -sum(lls), "tokens": len(lls)})
        return records

    def _gathered(self) -> tuple[dict[str, list[dict]], dict[str, float]]:
        """Every rank's records (in example order) and the slowest rank's seconds per task."""
        predictions, seconds = self._predictions, self._seconds
        if self._shard()[1] > 1 and dist.is_available() and dist.is_initialized():
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (predictions, seconds))
            predictions = {t: [r for p, _ in parts for r in p.get(t, [])] for t in self.tasks}
            seconds = {t: max(s.get(t, 0.0) for _, s in parts) for t in self.tasks}
        return {t: sorted(predictions.get(t, []), key=lambda r: r["index"]) for t in self.tasks}, seconds

    def on_validation_epoch_end(self):
        predictions, seconds = self._gathered()
        self._predictions, self._seconds = {}, {}
        if self.trainer.sanity_checking:
            return
        metrics = {}
        for task in self.tasks:
            metrics |= task_metrics(task, predictions[task], self.prompt_style == "harness")
        for name, tasks, metric in (("avg/classification_acc", CLASSIFICATION, "acc"),
                                    ("avg/dialog_f1", DIALOGUE, "f1")):
            values = [metrics[f"{t}/{metric}"] for t in tasks if t in self.tasks]
            if values:
                metrics[name] = sum(values) / len(values)
        # equal on every rank (gathered): the sync averages equal values
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=1, sync_dist=True)
        self.evaluations.append({
            "epoch": None if self.trainer.state.fn == "validate" else self.current_epoch,
            "step": self.global_step,
            "train_nll": self.last_train_nll,
            "metrics": metrics,
            "seconds": {t: round(s, 3) for t, s in seconds.items()},
            "predictions": predictions,
        })


def task_metrics(task: str, records: list[dict], harness: bool = False) -> dict[str, float]:
    """A task's metrics from its per-example records: `acc` (and with `harness`, `acc_norm`) for
    classification; for dialogue the mean unigram F1 and the token-weighted mean target NLL (`loss`)."""
    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    if TASKS[task].kind == "classification":
        metrics = {f"{task}/acc": mean([float(r["pred"] == r["label"]) for r in records])}
        if harness:
            metrics[f"{task}/acc_norm"] = mean([float(r["pred_norm"] == r["label"]) for r in records])
        return metrics
    tokens = sum(r["tokens"] for r in records)
    return {f"{task}/f1": mean([r["f1"] for r in records]),
            f"{task}/loss": sum(r["nll"] for r in records) / tokens if tokens else float("nan")}
