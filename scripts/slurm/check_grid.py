"""`make test-slurm`: a grid of tiny-random jobs through `hydra/launcher=submitit_slurm` on the one-node cluster
of `scripts/slurm/cluster.sh`, disturbed as clusters disturb grids:

1. a running job is requeued by the scheduler (`scontrol requeue`: SIGTERM, then the job runs again);
2. a running job is given a time limit it passes (`scontrol update TimeLimit=1`): submitit's warning signal
   (USR2, `signal_delay_s` before the limit) stops it, recorded as preempted by its time limit with its
   evaluations so far (with the launcher's default `max_num_timeout=0` submitit does not requeue it);
3. the launcher itself is killed (SIGKILL) while jobs still run, and the same command is run again.

Then every job must end ok, and no job that had finished runs (or writes its results) again: the rerun skips
it, or, when its first copy still runs, waits for that copy (`gap.files.one_writer`) and then skips it.
Prints what happened and exits 1 if any check fails. Needs SLURM_CONF (cluster.sh start prints it)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from gap.preemption import TIME_LIMIT_REASON

ROOT = Path(__file__).resolve().parents[2]
JOBS = 4
EPOCHS = int(os.environ.get("GAP_SLURM_EPOCHS", "90"))  # about 1 s each: a job outlives a 1-minute time limit
WORK = Path(os.environ.get("GAP_SLURM_DIR", "/tmp/gap-slurm")) / "work" / time.strftime("%Y%m%d-%H%M%S")
SWEEP = WORK / "train" / "multiruns" / "grid"
COMMAND = [sys.executable, "-m", "gap.train", "--multirun", "hydra/launcher=submitit_slurm",
           "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
           "hydra.launcher.timeout_min=8", "hydra.launcher.signal_delay_s=15", "model=tiny-random",
           "tasks.include=[copa,piqa]", "eval.limit=64", f"trainer.max_epochs={EPOCHS}", "logger=csv",
           f"corpus.index=range(0,{JOBS})", "sweep.name=grid", f"paths.log_dir={WORK}",
           f"paths.baseline_dir={WORK}/baselines"]
failures: list[str] = []


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def check(ok: bool, what: str) -> None:
    say(("ok: " if ok else "FAILED: ") + what)
    if not ok:
        failures.append(what)


def slurm(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def tasks() -> dict[str, str]:
    """State of every array task in the queue: {"<array id>_<task>": state}."""
    lines = slurm("squeue", "-h", "-r", "-o", "%i %T").split()
    return dict(zip(lines[::2], lines[1::2]))


def job_dir(task: int) -> Path:
    found = list(SWEEP.glob(f"corpus.index={task},*"))
    return found[0] if found else SWEEP / f"corpus.index={task}"


def results(task: int) -> dict:
    try:
        return json.loads((job_dir(task) / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def wait(what: str, condition, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(2)
    say(what)


def running(task: int, array: str) -> bool:
    return tasks().get(f"{array}_{task}") == "RUNNING"


def stamp(task: int) -> tuple:
    path = job_dir(task) / "results.json"
    return path.stat().st_ino, path.stat().st_mtime_ns


def main() -> int:
    if "SLURM_CONF" not in os.environ:
        raise SystemExit("set SLURM_CONF (scripts/slurm/cluster.sh start prints it)")
    WORK.mkdir(parents=True)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}  # one thread: cpus_per_task=1
    say(f"grid of {JOBS} jobs ({EPOCHS} epochs each) in {SWEEP}")
    first = subprocess.Popen(COMMAND, cwd=ROOT, env=env, stdout=open(WORK / "launcher-1.log", "w"),
                             stderr=subprocess.STDOUT)
    wait("array submitted", lambda: (SWEEP / ".submitit").is_dir() and tasks())
    array = next(iter(tasks())).split("_")[0]

    # 1. requeued while it runs, once it has a few evaluations written
    wait("job 0 is running mid-way", lambda: running(0, array) and len(results(0).get("history", [])) >= 3)
    slurm("scontrol", "requeue", f"{array}_0")
    wait("job 0 requeued: stopped, its evaluations so far kept", lambda: results(0).get("status") == "preempted")

    # 2. past its time limit
    wait("job 1 is running", lambda: running(1, array))
    slurm("scontrol", "update", f"JobId={array}_1", "TimeLimit=1")
    wait("job 1 stopped at its time limit", lambda: results(1).get("status") in ("preempted", "failed"))
    check(results(1).get("status") == "preempted" and results(1).get("error") == TIME_LIMIT_REASON,
          f"job 1 recorded as preempted by its time limit (got {results(1).get('status')}: {results(1).get('error')})")

    # 3. the launcher killed while a job runs; what finished by then must not run again
    wait("a job finished and another one runs",
         lambda: any(results(t).get("status") == "ok" for t in range(JOBS)) and "RUNNING" in tasks().values())
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = {t: stamp(t) for t in range(JOBS) if results(t).get("status") == "ok"}
    still = sorted(k for k, state in tasks().items() if state == "RUNNING")
    say(f"launcher killed; finished jobs {sorted(finished)}, still running {still}")

    second = subprocess.run(COMMAND, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    (WORK / "launcher-2.log").write_text(second.stdout + second.stderr)
    check(second.returncode == 0, f"the launcher run again ends with exit code 0 (got {second.returncode})")
    check(f"sweep: {JOBS} jobs, {JOBS} ok" in second.stdout, f"its sweep summary: {JOBS} jobs, {JOBS} ok")
    wait("the first array's jobs ended", lambda: not any(k.startswith(f"{array}_") for k in tasks()))

    logs = "".join(p.read_text(errors="replace") for p in (SWEEP / ".submitit").rglob("*_log.*"))
    for task in range(JOBS):
        done = results(task)
        check(done.get("status") == "ok" and len(done.get("history", [])) == EPOCHS,
              f"job {task} ends ok with its {EPOCHS} evaluations")
        runs = logs.count(f"results: {job_dir(task) / 'results.json'}")
        check(runs == 1, f"job {task} ran to the end once (got {runs})")
        if task in finished:
            check(stamp(task) == finished[task], f"job {task}, finished before the launcher was killed, not rewritten")
    restarts = re.findall(r"Restarts=(\d+)", slurm("scontrol", "show", "job", f"{array}_0"))
    check(restarts and int(restarts[0]) >= 1, f"job 0 was requeued by SLURM (Restarts={restarts})")
    states = slurm("sacct", "-n", "-X", "-j", f"{array}_1", "-o", "State%20", "-D").split()
    say(f"job 1's SLURM states: {states}")
    say(f"jobs that waited for a copy still writing their folder: {logs.count('waiting: ')}")
    say(f"{len(failures)} check(s) failed" if failures else "every check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
