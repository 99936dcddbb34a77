"""Runs that survive what goes wrong: pre-emption (SIGTERM) and a failing W&B service."""
import json
import signal
import time

from tests.helpers import finish, gap, start


def test_sigterm_keeps_the_evaluations_so_far_and_exits_143(tmp_path, data_dir):
    proc = start("gap.train", "model=tiny-random", "eval.limit=2", "trainer.max_epochs=500", "logger=wandb",
                 "tasks.include=[copa,wizard_of_wikipedia]", tmp_path=tmp_path)
    results, deadline = {}, time.monotonic() + 240
    while len(results.get("history", [])) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            results = json.loads((tmp_path / "results.json").read_text())
        except (OSError, ValueError):
            pass
    proc.send_signal(signal.SIGTERM)
    done = finish(proc, timeout=120)
    assert done.returncode == 143, done.stderr[-3000:]
    assert "preempted: results so far in" in done.stderr and "Traceback" not in done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "preempted" and results["error"].startswith("SIGTERM")
    assert results["baseline"] is not None and len(results["history"]) >= 2  # nothing finished is lost
    assert len(results["history"]) < 500
    assert (tmp_path / "predictions" / "copa.jsonl").is_file()
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("run-*.wandb"))  # the W&B run was written out


def test_a_failing_wandb_service_does_not_end_the_run(tmp_path, data_dir):
    # online W&B pointed at a port where nothing listens: a real service error at wandb.init
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           "WANDB_INIT_TIMEOUT": "3"}
    proc = gap("gap.eval", "model=tiny-random", "eval.limit=2", "logger=wandb", "tasks.include=[copa]",
               tmp_path=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WandbLogger failed, the run goes on without it" in proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and set(results["metrics"]) == {"copa/acc", "avg/classification_acc"}


def test_a_wandb_error_mid_run_drops_the_logger(tmp_path, caplog, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from gap.loggers import Tolerant

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = Tolerant(WandbLogger(project="gap", save_dir=str(tmp_path), offline=True))
    logger.log_metrics({"a": 1.0}, step=0)
    assert not logger.failed
    logger.inner.experiment.finish()  # the run ends underneath the job, as when W&B's service dies
    logger.log_metrics({"a": 2.0}, step=1)  # W&B raises; the job goes on
    assert logger.failed and "WandbLogger failed, the run goes on without it: UsageError" in caplog.text
    logger.log_metrics({"a": 3.0}, step=2)  # ignored from now on
    assert caplog.text.count("the run goes on without it") == 1
