"""`make bench-sweep`: N GAP jobs as one in-process sweep (Hydra's basic launcher: the model loads once,
its weights are restored before each job) against the same N jobs as separate processes.

    python -m bench.sweep [N] [job overrides]     # default: 10 jobs of tiny-random and of the embedded model

Each job is small (2 tasks, 4 examples, 1 step), so what the sweep saves (process start, model loading)
shows. Both modes start with an empty baseline cache. Writes bench/sweep.json and prints a table.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ["tasks=quick", "eval.limit=4", "trainer.max_epochs=1", "logger=none"]


def run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gap.train", *args], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "WANDB_MODE": "offline"})
    return time.perf_counter() - start


def outcomes(results_files) -> list[list]:
    """Each job's per-evaluation metrics and training loss (not its timings)."""
    return [[(h["train_nll"], h["metrics"]) for h in json.loads(Path(f).read_text())["history"]]
            for f in sorted(results_files)]


def compare(model: str, jobs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = [f"model={model}", *JOB, *extra]
        swept = run(["--multirun", f"paths.log_dir={tmp}/sweep", f"paths.baseline_dir={tmp}/b1",
                     "sweep.name=bench", f"corpus.index=range(0,{jobs})", *common])
        alone = sum(run([f"hydra.run.dir={tmp}/alone/{i}", f"paths.baseline_dir={tmp}/b2", f"corpus.index={i}",
                         *common]) for i in range(jobs))
        same = outcomes((tmp / "sweep").rglob("results.json")) == outcomes((tmp / "alone").rglob("results.json"))
    return {"model": model, "jobs": jobs, "in_process_s": swept, "processes_s": alone, "speedup": alone / swept,
            "same_metrics": same}


def main() -> None:
    args = sys.argv[1:]
    jobs = int(args.pop(0)) if args and args[0].isdigit() else 10
    rows = [compare(model, jobs, args) for model in ("tiny-random", "smollm2-135m")]
    (ROOT / "bench" / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| model | jobs | one sweep process (s) | separate processes (s) | speed-up | same metrics |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['jobs']} | {r['in_process_s']:.1f} | {r['processes_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['same_metrics']} |")


if __name__ == "__main__":
    main()
