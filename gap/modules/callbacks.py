"""Lightning callbacks: the GAP authors' early stop, and keeping the selected weights."""
import lightning as L

from gap.data.tasks import CATEGORIES
from gap.modules.loading import cpu_state_dict
from gap.results import best_epochs


class AuthorsEarlyStop(L.Callback):
    """From epoch `first_epoch` on (0-based: the 6th evaluation), an evaluation where every category
    average evaluated (the dialogue F1 and the classification accuracy, or the one of them a run
    evaluates) is below its best so far is a strike; `patience` strikes stop training. Bests include
    every evaluation since the first step."""

    def __init__(self, first_epoch: int = 5, patience: int = 2):
        self.first_epoch, self.patience = first_epoch, patience
        self.strikes = 0
        self.best = {c.average: 0.0 for c in CATEGORIES.values()}

    def update(self, epoch: int, metrics: dict) -> bool:
        """Record one evaluation; True when training should stop."""
        averages = {k: metrics[k] for k in self.best if k in metrics}
        if averages and epoch >= self.first_epoch and all(v < self.best[k] for k, v in averages.items()):
            self.strikes += 1
        self.best |= {k: max(self.best[k], v) for k, v in averages.items()}
        return self.strikes >= self.patience

    def on_validation_end(self, trainer, pl_module):  # after the module has recorded the evaluation
        if trainer.state.fn != "fit" or not pl_module.evaluations:
            return
        last = pl_module.evaluations[-1]
        if self.update(last["epoch"], last["metrics"]):
            trainer.should_stop = True


class KeepSelectedWeights(L.Callback):
    """Keeps (on the CPU) the weights of the evaluation each category selects so far (`best_epochs`, the
    authors' per-run selection), so they can be evaluated on held-out examples after training."""

    def __init__(self):
        self.weights: dict[str, tuple[int, dict]] = {}  # category -> (epoch, state dict)

    def on_validation_end(self, trainer, pl_module):  # after the module has recorded the evaluation
        if trainer.state.fn != "fit" or not pl_module.evaluations:
            return
        epoch, copy = pl_module.evaluations[-1]["epoch"], None
        best = best_epochs([e for e in pl_module.evaluations if e["epoch"] is not None])
        for category, chosen in best.items():
            if chosen["epoch"] == epoch:
                copy = copy or cpu_state_dict(pl_module.model)
                self.weights[category] = (epoch, copy)
