"""SIGTERM (SLURM pre-emption, `scancel`, a cluster's time limit) ends a run cleanly: the evaluations
finished so far are written with status `preempted`, the W&B run is finished, and the process exits
with 143 (128 + SIGTERM), which schedulers treat as killed-by-signal. A sweep run again re-runs the
preempted job (only ok jobs are skipped); the baseline cache spares it the first evaluation."""
import signal
import threading
from contextlib import contextmanager

from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_CODE = 128 + signal.SIGTERM


class Preempted(SystemExit):
    def __init__(self):
        super().__init__(EXIT_CODE)


def is_preemption(err: BaseException) -> bool:
    """Ours, or Lightning's own (it raises SIGTERMException between batches)."""
    return isinstance(err, (Preempted, SIGTERMException))


@contextmanager
def raise_on_sigterm():
    """Within the block, SIGTERM raises `Preempted` in the main thread at once (Lightning calls this
    handler too, after its own, while its loops run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Preempted()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
