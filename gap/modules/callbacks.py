"""Lightning callbacks: the GAP authors' early stop, and keeping the selected weights."""
import lightning as L

from gap.data.tasks import CATEGORIES
from gap.modules.loading import cpu_state_dict
from gap.results import best_epochs, selecting


class AuthorsEarlyStop(L.Callback):
    """From epoch `first_epoch` on (0-based: the 6th evaluation), an evaluation where every category
    average the run selects on (the dialogue F1 and the classification accuracy, or the one of them a run
    evaluates; the lm_eval score with `select_lm_eval` or alone, `gap.results.selecting`) is below its best
    so far is a strike; `patience` strikes stop training. Bests include every evaluation since the first step."""

    def __init__(self, first_epoch: int = 5, patience: int = 2, select_lm_eval: bool = False):
        self.first_epoch, self.patience, self.select_lm_eval = first_epoch, patience, select_lm_eval
        self.strikes = 0
        self.best = {c.average: float("-inf") for c in CATEGORIES.values()}

    def update(self, epoch: int, metrics: dict) -> bool:
        """Record one evaluation; True when training should stop."""
        averages = {CATEGORIES[c].average: metrics[CATEGORIES[c].average]
                    for c in selecting(metrics, self.select_lm_eval)}
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
    authors' per-run selection), so they can be evaluated on held-out examples after training; `followers`:
    the categories reported at another's selection (sharing its weights)."""

    def __init__(self, select_lm_eval: bool = False):
        self.select_lm_eval = select_lm_eval
        self.weights: dict[str, tuple[int, int, dict]] = {}  # category -> (epoch, step, state dict)
        self.followers: set[str] = set()

    def on_validation_end(self, trainer, pl_module):  # after the module has recorded the evaluation
        if trainer.state.fn != "fit" or not pl_module.evaluations:
            return
        epoch, step, copy = pl_module.evaluations[-1]["epoch"], pl_module.evaluations[-1]["step"], None
        best = best_epochs([e for e in pl_module.evaluations if e["epoch"] is not None], self.select_lm_eval)
        self.followers = {category for category, chosen in best.items() if "selected_by" in chosen}
        for category, chosen in best.items():
            if chosen["epoch"] == epoch:
                copy = copy or cpu_state_dict(pl_module.model)
                self.weights[category] = (epoch, step, copy)
