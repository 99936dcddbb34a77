"""Sweeps (`--multirun`): what a job does when it was already done or fails, and the sweep's summary.

A job whose `results.json` says ok is skipped when the sweep runs again (`sweep.skip_done=false` forces
it); a failed job records its error and lets the grid go on; at the end `sweep.json` lists every job.
"""
import json
from collections import Counter
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from gap.files import read_results, write_atomic


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finished_results(out_dir: Path) -> dict | None:
    """The results of a job that already finished ok in this directory, else None (also when its
    `results.json` is damaged: cut short, not a results document; the job then runs again)."""
    results = read_results(Path(out_dir) / "results.json")
    whole = results and isinstance(results.get("config"), dict) and isinstance(results.get("metrics"), dict)
    return results if whole and results.get("status") == "ok" else None


def summarize(sweep_dir: Path) -> dict:
    """Every job's status, path, error and selected metrics, from the `results.json` files of a sweep (a file
    that cannot be read: status `unreadable`)."""
    jobs = []
    for path in sorted(Path(sweep_dir).rglob("results.json")):
        results = read_results(path) or {"status": "unreadable", "error": "results.json cannot be read"}
        overrides = path.parent / ".hydra" / "overrides.yaml"
        jobs.append({"path": str(path.parent.relative_to(sweep_dir)), "status": results.get("status"),
                     "error": results.get("error"),
                     "overrides": overrides.read_text().splitlines() if overrides.is_file() else None,
                     "best": results.get("best"), "metrics": results.get("metrics")})
    return {"sweep_dir": str(sweep_dir), "jobs": len(jobs),
            "status": dict(Counter(j["status"] for j in jobs)), "results": jobs}


class SweepSummary(Callback):
    """Hydra callback: write `sweep.json` into the sweep directory and print how many jobs failed, and why."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = summarize(sweep_dir)
        write_atomic(sweep_dir / "sweep.json", json.dumps(summary, indent=2) + "\n")
        bad = [j for j in summary["results"] if j["status"] != "ok"]
        print(f"sweep: {summary['jobs']} jobs, {summary['jobs'] - len(bad)} ok, {len(bad)} not ok "
              f"-> {sweep_dir / 'sweep.json'}")
        for job in bad:
            print(f"  {job['status']}: {job['path']}: {job['error']}")
