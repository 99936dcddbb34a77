"""Lightning callbacks: the GAP authors' early stop, and keeping the selected weights."""
import lightning as L

from gap.modules.loading import cpu_state_dict
from gap.results import best_epochs


class AuthorsEarlyStop(L.Callback):
    """From epoch `first_epoch` on (0-based: the 6th evaluation), an evaluation where both the dialogue
    F1 average and the classification accuracy average are below their best so far is a strike;
    `patience` strikes stop training. Bests include every evaluation since the first step."""

    def __init__(self, first_epoch: int = 5, patience: int = 2):
        self.first_epoch, self.patience = first_epoch, patience
        self.strikes = 0
        self.best = {"avg/dialog_f1": 0.0, "avg/classification_acc": 0.0}

    def update(self, epoch: int, metrics: dict) -> bool:
        """Record one evaluation; True when training should stop."""
        if epoch >= self.first_epoch and all(metrics[k] < best for k, best in self.best.items()):
            self.strikes += 1
        self.best = {k: max(best, metrics[k]) for k, best in self.best.items()}
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
