"""`make bench-harness`: prompt_style=harness on the 8 classification tasks, ours against
lm-evaluation-harness 0.4's Hugging Face backend: same model object, same examples, same batch size,
measured in one process. Both timings include tokenisation; neither includes reading the data.

    python -m bench.harness_speed [eval overrides]     # default: embedded model, 32 examples per task
"""
import json
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from bench.lm_eval_tasks import write_harness_tasks
from gap.data.tasks import CLASSIFICATION
from gap.modules.loading import load_pretrained
from gap.scoring.evaluator import evaluate
from gap.train import check_config, make_evaldata, read_inputs, scoring_of

ROOT = Path(__file__).resolve().parents[1]


def run_ours(cfg, model, tokenizer, examples) -> tuple[float, dict]:
    start = time.perf_counter()
    data = make_evaldata(cfg, examples, tokenizer)
    predictions = evaluate(model, tokenizer, data.item_batches(), scoring_of(cfg))
    return time.perf_counter() - start, predictions


def run_harness(cfg, model, tokenizer, workdir: Path) -> tuple[float, dict]:
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    names = write_harness_tasks(workdir, Path(cfg.paths.data_dir), cfg.eval.limit)
    task_dict = get_task_dict(names, TaskManager(include_path=str(workdir)))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=cfg.model.max_length,
              batch_size=cfg.eval.batch_size, add_bos_token=False)
    start = time.perf_counter()
    out = evaluate(lm=lm, task_dict=task_dict, limit=cfg.eval.limit, log_samples=True,
                                     bootstrap_iters=0)
    seconds = time.perf_counter() - start
    preds = {}
    for name, samples in out["samples"].items():
        preds[name.removeprefix("gap_")] = {s["doc_id"]: int(np.argmax([float(r[0]) for r in s["filtered_resps"]]))
                                            for s in samples}
    return seconds, preds


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    cfg.eval.prompt_style, cfg.tasks.include = "harness", CLASSIFICATION
    check_config(cfg)
    examples, _, _ = read_inputs(cfg)
    tokenizer, model = load_pretrained(cfg.model)
    model.eval()
    run_ours(cfg, model, tokenizer, {t: e[:2] for t, e in examples.items()})  # warm-up, both sides alike
    ours_s, ours = run_ours(cfg, model, tokenizer, examples)
    with tempfile.TemporaryDirectory() as tmp:
        harness_s, theirs = run_harness(cfg, model, tokenizer, Path(tmp))
    agree = {t: sum(r["pred"] == theirs[t][r["index"]] for r in ours[t]) for t in CLASSIFICATION}
    report = {"model": cfg.model.name, "limit": cfg.eval.limit, "batch_size": cfg.eval.batch_size,
              "ours_s": ours_s, "harness_s": harness_s, "speedup": harness_s / ours_s,
              "agreement": {t: f"{agree[t]}/{len(ours[t])}" for t in CLASSIFICATION}}
    (ROOT / "bench" / "harness_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"harness style, 8 classification tasks x {cfg.eval.limit} examples, batch size {cfg.eval.batch_size}: "
          f"gap {ours_s:.1f} s, lm-evaluation-harness {harness_s:.1f} s, speed-up {harness_s / ours_s:.2f}x")
    print("prediction agreement (acc):", ", ".join(f"{t} {a}" for t, a in report["agreement"].items()))


if __name__ == "__main__":
    main()
