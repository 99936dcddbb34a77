"""The authors' early stop on synthetic metric histories with known answers."""
from gap.modules.callbacks import AuthorsEarlyStop
from gap.results import best_epochs


def run(history):
    stop = AuthorsEarlyStop(first_epoch=5, patience=2)
    for epoch, (f1, acc) in enumerate(history):
        if stop.update(epoch, {"avg/dialog_f1": f1, "avg/classification_acc": acc}):
            return epoch
    return None


def test_stops_at_the_second_strike_from_the_sixth_evaluation():
    rising = [(0.1 + 0.01 * e, 0.4 + 0.01 * e) for e in range(5)]
    assert run(rising + [(0.0, 0.0), (0.0, 0.0), (0.9, 0.9)]) == 6


def test_early_drops_do_not_count_and_one_metric_improving_is_no_strike():
    history = [(0.2, 0.5), (0.0, 0.0), (0.0, 0.0), (0.1, 0.1), (0.1, 0.1),  # epochs 0-4: never strikes
               (0.3, 0.1), (0.1, 0.6), (0.1, 0.1), (0.31, 0.1)]             # 5,6 improve one; 7 strikes once
    assert run(history) is None


def test_one_category_alone_strikes_on_its_own_average():
    """`tasks=classification` (or a single task) evaluates one category: its average alone decides."""
    stop = AuthorsEarlyStop(first_epoch=5, patience=2)
    accs = [0.40, 0.41, 0.42, 0.43, 0.44, 0.30, 0.45, 0.20]  # strikes at epochs 5 and 7
    stopped = [e for e, a in enumerate(accs) if stop.update(e, {"avg/classification_acc": a, "copa/acc": a})]
    assert stopped == [7] and stop.strikes == 2


def test_best_epoch_per_category_first_on_ties():
    history = [{"epoch": e, "step": e + 1, "metrics": {"avg/classification_acc": a, "avg/dialog_f1": f}}
               for e, (a, f) in enumerate([(0.5, 0.2), (0.6, 0.1), (0.6, 0.3)])]
    best = best_epochs(history)
    assert best["classification"]["epoch"] == 1 and best["dialog"]["epoch"] == 2
