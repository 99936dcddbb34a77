"""SIGTERM (SLURM pre-emption, `scancel`, a cluster's time limit) ends a run cleanly: the evaluations
finished so far are written with status `preempted`, the W&B run is finished, and the process exits
with 143 (128 + SIGTERM), which schedulers treat as killed-by-signal. A sweep run again re-runs the
preempted job (only ok jobs are skipped); the baseline cache spares it the first evaluation.

Under Hydra's submitit launchers a job is warned before its time limit (SIGUSR2, `signal_delay_s` ahead);
submitit's handler then requeues the job or ends it with its own error. Either way the job is recorded as
`preempted` by its time limit, not as failed with submitit's message."""
import signal
import threading
from contextlib import contextmanager

from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_CODE = 128 + signal.SIGTERM
TIME_LIMIT_SIGNAL = getattr(signal, "SIGUSR2", None)  # submitit's warning before a time limit (POSIX only)
SIGTERM_REASON = "SIGTERM: stopped before the end"
TIME_LIMIT_REASON = ("time limit: the scheduler's warning signal (SIGUSR2) stopped the job before the end "
                     "(hydra.launcher.timeout_min gives it longer)")
_warned = threading.Event()  # the warning arrived within the current `raise_on_sigterm` block


class Preempted(SystemExit):
    def __init__(self):
        super().__init__(EXIT_CODE)


def is_preemption(err: BaseException) -> bool:
    """Ours, or Lightning's own (it raises SIGTERMException between batches)."""
    return isinstance(err, (Preempted, SIGTERMException))


def stop_reason(err: BaseException) -> str | None:
    """Why a job stopped early when a signal stopped it (`err` is what ended it), else None. The time
    limit comes first: requeuing a job on SLURM also sends it SIGTERM."""
    if _warned.is_set():
        return TIME_LIMIT_REASON
    return SIGTERM_REASON if is_preemption(err) else None


@contextmanager
def raise_on_sigterm():
    """Within the block, SIGTERM raises `Preempted` in the main thread at once (Lightning calls this
    handler too, after its own, while its loops run), and a time-limit warning that a handler (submitit's)
    takes is noted before that handler runs."""
    _warned.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Preempted()

    previous = signal.signal(signal.SIGTERM, handler)
    warning = signal.getsignal(TIME_LIMIT_SIGNAL) if TIME_LIMIT_SIGNAL is not None else None
    if callable(warning):
        def noted(signum, frame):
            _warned.set()
            warning(signum, frame)
        signal.signal(TIME_LIMIT_SIGNAL, noted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if callable(warning):
            signal.signal(TIME_LIMIT_SIGNAL, warning)
