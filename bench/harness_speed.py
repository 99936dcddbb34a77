"""`make bench-harness`: the same lm-evaluation-harness tasks through the harness's own Hugging Face backend
(`HFLM`) and through ours (`GapLM`, gap.harness.backend), one request type after the other, on the same
model object, in one process: the 8 classification tasks as the harness defines them (multiple-choice
log-likelihoods), lambada_openai (single continuations, is_greedy), wikitext (rolling windows) and
arc_challenge_chat (greedy generation until a stop string), over our local data (`bench.lm_eval_tasks`).

Timed: each backend's own method for a request type on all that type's requests (the harness's request
building and metrics, the same for both, are left out), wall and CPU seconds, with per-request agreement.

    python -m bench.harness_speed [eval overrides]     # default: embedded model, 32 documents per task
"""
import json
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bench.lm_eval_tasks import harness_requests
from gap.modules.loading import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def timed(method, requests) -> tuple[list, float, float]:
    """(results, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    results = method(requests)
    return results, time.perf_counter() - wall, time.process_time() - cpu


def agreement(kind: str, theirs: list, ours: list) -> str:
    if kind == "loglikelihood":
        worst = max(abs(t[0] - o[0]) for t, o in zip(theirs, ours))
        same = sum(t[1] == o[1] for t, o in zip(theirs, ours))
        return f"max |d ll| {worst:.1e}, is_greedy {same}/{len(ours)} equal ({sum(o[1] for o in ours)} true)"
    if kind == "loglikelihood_rolling":
        return f"max |d ll| {max(abs(t - o) for t, o in zip(theirs, ours)):.1e}"
    return f"{sum(t == o for t, o in zip(theirs, ours))}/{len(ours)} generations identical"


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from lm_eval.models.huggingface import HFLM

    from gap.harness.backend import GapLM

    requests = harness_requests(Path(cfg.paths.data_dir), cfg.eval.limit)
    tokenizer, model = load_pretrained(cfg.model)
    model.eval()
    hf = HFLM(pretrained=model, tokenizer=tokenizer, max_length=cfg.model.max_length, batch_size=cfg.eval.batch_size)
    ours = GapLM(model, tokenizer, max_length=cfg.model.max_length, batch_size=cfg.eval.batch_size,
                 max_batch_tokens=cfg.eval.max_batch_tokens, share_context=cfg.eval.share_context)
    for lm in (hf, ours):  # warm-up, both sides alike
        for kind in TYPES:
            getattr(lm, kind)(requests[kind][:2])
    rows = {}
    for kind in TYPES:
        theirs, hf_s, hf_cpu = timed(getattr(hf, kind), requests[kind])
        mine, our_s, our_cpu = timed(getattr(ours, kind), requests[kind])
        rows[kind] = {"requests": len(requests[kind]), "hflm_s": round(hf_s, 2), "gap_s": round(our_s, 2),
                      "speedup": round(hf_s / our_s, 2), "hflm_cpu_s": round(hf_cpu, 2), "gap_cpu_s": round(our_cpu, 2),
                      "agreement": agreement(kind, theirs, mine)}
    total = {key: round(sum(r[key] for r in rows.values()), 2)
             for key in ("hflm_s", "gap_s", "hflm_cpu_s", "gap_cpu_s")}
    total["speedup"] = round(total["hflm_s"] / total["gap_s"], 2)
    report = {"model": cfg.model.name, "documents_per_task": cfg.eval.limit, "batch_size": cfg.eval.batch_size,
              "max_length": cfg.model.max_length, "request_types": rows, "all": total}
    (ROOT / "bench" / "harness_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"lm-evaluation-harness tasks, {cfg.model.name}, {cfg.eval.limit} documents per task, batch size "
          f"{cfg.eval.batch_size}: HFLM against GapLM")
    print("| request type | requests | HFLM s | gap s | speed-up | HFLM CPU s | gap CPU s | agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in [*rows.items(), ("**all**", {**total, "requests": "", "agreement": ""})]:
        print(f"| {kind} | {r['requests']} | {r['hflm_s']} | {r['gap_s']} | {r['speedup']}x | {r['hflm_cpu_s']} | "
              f"{r['gap_cpu_s']} | {r['agreement']} |")


if __name__ == "__main__":
    main()
