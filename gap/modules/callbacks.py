"""Lightning callbacks: the GAP authors' early stop."""
import lightning as L


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

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.state.fn != "fit" or not pl_module.evaluations:
            return
        last = pl_module.evaluations[-1]
        if self.update(last["epoch"], last["metrics"]):
            trainer.should_stop = True
