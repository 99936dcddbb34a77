"""What the console shows while a run evaluates: per task, examples done of total and examples/s (on
one line, rewritten, when the console is a terminal); per evaluation, one line with the step, the
sample's NLL, the category averages and each harness task's primary metric against the unchanged model's."""
import sys
import time

import lightning as L

from gap.data.tasks import CATEGORIES


class ConsoleProgress(L.Callback):
    """`label` begins every line; `head` names an evaluation that is not a step of this run (the selected
    weights on held-out examples) and `baseline` is then the metrics its changes are against."""

    def __init__(self, label: str = "eval", stream=None, head: str | None = None, baseline: dict | None = None):
        self.label, self.stream, self.head = label, stream or sys.stderr, head
        self.live = self.stream.isatty()
        self.baseline: dict | None = baseline
        self._task = None

    def _print(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.stream, flush=True)

    def _start_task(self, trainer, pl_module, dataloader_idx: int) -> None:
        sampler = trainer.val_dataloaders[dataloader_idx].batch_sampler
        self._task = {"name": pl_module.tasks[dataloader_idx], "index": dataloader_idx, "done": 0,
                      "total": sum(len(batch) for batch in sampler), "start": time.perf_counter()}

    def _show_task(self, final: bool) -> None:
        t = self._task
        seconds = time.perf_counter() - t["start"]
        text = (f"  {self.label} {t['name']:<22} {t['done']:>4}/{t['total']:<4} "
                f"{t['done'] / max(seconds, 1e-9):6.1f} examples/s  {seconds:6.1f} s")
        if self.live:
            self._print("\r" + text, end="\n" if final else "")
        elif final:
            self._print(text)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._task is None or self._task["index"] != dataloader_idx:
            if self._task is not None:
                self._show_task(final=True)
            self._start_task(trainer, pl_module, dataloader_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._task["done"] += len(batch)
        if self.live:
            self._show_task(final=False)

    def on_validation_end(self, trainer, pl_module):  # after the module has recorded the evaluation
        if self._task is not None:
            self._show_task(final=True)
            self._task = None
        if not pl_module.evaluations:
            return
        self.show_evaluation(pl_module.evaluations[-1])

    def show_evaluation(self, evaluation: dict) -> None:
        """One line: which evaluation, the sample's NLL, each category average (and its change)."""
        metrics = evaluation["metrics"]
        compared = self.head is not None or evaluation["epoch"] is not None  # else this is the baseline
        if not compared:
            self.baseline = metrics
        head = self.head if self.head is not None else f"step {evaluation['step']}" if compared else "baseline"
        parts = [f"{self.label} {head:<9}"]
        if evaluation.get("train_nll") is not None:
            parts.append(f"sample NLL {evaluation['train_nll']:.3f}")
        # each category's average, and each harness unit's primary metric (where its score is one metric)
        shown = [c.average for c in CATEGORIES.values()]
        shown += [next(iter(s["score"])) for s in evaluation.get("lm_eval", {}).values() if len(s["score"]) == 1]
        for key in shown:
            if key in metrics:
                value = metrics[key]
                change = ""
                if self.baseline is not None and compared and key in self.baseline:
                    change = f" ({value - self.baseline[key]:+.4f})"
                parts.append(f"{key} {value:.4f}{change}")
        self._print(" | ".join(parts))
