"""Hydra --multirun grids: distinct job directories, sweep.json, W&B grouping, failure isolation, resume,
time limits."""
import json
import os
import subprocess
import sys

import pytest

from gap.loggers import run_id
from gap.preemption import TIME_LIMIT_REASON
from tests.helpers import DATA_DIR, ROOT, gap
from tests.wandb_files import offline_runs

FAST = ["eval.limit=1", "model=tiny-random", "tasks=quick", "trainer.max_epochs=1"]  # sorted, as Hydra names dirs


def sweep(tmp_path, *overrides, name="grid", fast=FAST):
    env = {**os.environ, "WANDB_MODE": "offline", "GAP_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run([sys.executable, "-m", "gap.train", "--multirun", f"paths.log_dir={tmp_path}",
                           f"paths.baseline_dir={tmp_path}/baselines", f"sweep.name={name}", *fast, *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = tmp_path / "train" / "multiruns" / name
    return proc, sweep_dir, json.loads((sweep_dir / "sweep.json").read_text())


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_four_jobs_in_distinct_directories_one_wandb_group(tmp_path, data_dir, launcher):
    _, sweep_dir, summary = sweep(tmp_path, f"hydra/launcher={launcher}", "corpus.index=0,1,2,3", "logger=wandb",
                                  name=f"g-{launcher}")
    assert summary["jobs"] == 4 and summary["status"] == {"ok": 4}
    paths = sorted(job["path"] for job in summary["results"])
    assert paths == [f"corpus.index={i},{','.join(FAST)}" for i in range(4)]  # named from the overrides
    for i, path in enumerate(paths):
        results = json.loads((sweep_dir / path / "results.json").read_text())
        assert results["config"]["corpus"]["index"] == i
        (offline,) = offline_runs(sweep_dir / path)
        run = offline.run
        assert run.run_group == f"g-{launcher}" and run.job_type == "gap"  # grouped by sweep, typed by method
        assert {"tiny-random", "github"} <= set(run.tags)
        assert run.run_id == run_id(sweep_dir / path)  # derived from the sweep and the job: one per job


def test_a_failing_job_does_not_stop_the_grid_and_rerun_skips_finished_jobs(tmp_path, data_dir):
    proc, sweep_dir, summary = sweep(tmp_path, "corpus.index=0,1,5000", "logger=none")
    assert summary["status"] == {"ok": 2, "failed": 1}
    failed = next(j for j in summary["results"] if j["status"] == "failed")
    assert failed["path"].startswith("corpus.index=5000,") and "corpus.index=5000 is out of range" in failed["error"]
    assert "1 not ok" in proc.stdout
    ok_files = [sweep_dir / f"corpus.index={i},{','.join(FAST)}" / "results.json" for i in (0, 1)]
    stamps = [f.stat().st_mtime_ns for f in ok_files]

    proc, _, summary = sweep(tmp_path, "corpus.index=0,1,5000", "logger=none")
    assert proc.stdout.count("skipped:") == 2
    assert [f.stat().st_mtime_ns for f in ok_files] == stamps
    assert summary["status"] == {"ok": 2, "failed": 1}

    proc, _, _ = sweep(tmp_path, "corpus.index=0", "logger=none", "sweep.skip_done=false")
    assert "skipped:" not in proc.stdout and ok_files[0].stat().st_mtime_ns != stamps[0]


def test_jobs_sharing_a_process_equal_jobs_run_alone(tmp_path, data_dir):
    """The basic launcher runs jobs in one process and restores the loaded weights before each: job 2 must
    not start from job 1's updated model."""
    _, sweep_dir, summary = sweep(tmp_path, "corpus.index=0,3", "logger=none")
    assert summary["status"] == {"ok": 2}
    for index in (0, 3):
        swept = json.loads((sweep_dir / f"corpus.index={index},{','.join(FAST)}" / "results.json").read_text())
        alone = tmp_path / f"alone{index}"
        proc = gap("gap.train", f"corpus.index={index}", "logger=none", *FAST, tmp_path=alone)
        assert proc.returncode == 0, proc.stderr[-2000:]
        single = json.loads((alone / "results.json").read_text())
        for got, want in zip(swept["history"], single["history"], strict=True):
            assert got["train_nll"] == pytest.approx(want["train_nll"], abs=1e-6)
            assert got["metrics"] == pytest.approx(want["metrics"], abs=1e-6)


def test_a_job_stopped_at_its_time_limit_by_submitit_is_preempted_and_the_grid_goes_on(tmp_path, data_dir):
    """submitit warns a job before its time limit (SIGUSR2; the local executor's 30 s before a 1-minute limit)
    and, with no timeouts left to requeue it, raises its own error in the job: the job is recorded as
    preempted by its time limit with its evaluations so far (not failed with submitit's message), and the
    launcher collects the other job and writes the sweep's summary."""
    fast = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    proc, sweep_dir, summary = sweep(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1",
        "+hydra.launcher.max_num_timeout=0", "trainer.max_epochs=1,100000",
        "logger=none", fast=fast)
    assert summary["status"] == {"ok": 1, "preempted": 1}, summary
    (stopped,) = [j for j in summary["results"] if j["status"] == "preempted"]
    assert stopped["path"].endswith("trainer.max_epochs=100000") and stopped["error"] == TIME_LIMIT_REASON
    results = json.loads((sweep_dir / stopped["path"] / "results.json").read_text())
    assert 1 < len(results["history"]) < 100000  # the baseline and the epochs evaluated before the warning
    assert "1 not ok" in proc.stdout and f"preempted: {stopped['path']}: time limit" in proc.stdout
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_log.err"))
    assert "preempted (time limit): results so far in" in logs
