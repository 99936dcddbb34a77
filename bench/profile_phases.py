"""Where each phase of the evaluation spends its time: `torch.profiler` (with input shapes) over one
classification task's scoring, one dialogue task's prefill (its prompts and teacher-forced targets) and
the decoding steps that follow it.

    python -m bench.profile_phases [eval overrides] [+classify=hellaswag] [+converse=blended_skill_talk]

Per phase: wall time, the time inside operators (self time, by kind: matrix products, attention,
copies, element-wise, the rest) and outside them (Python, the model's own bookkeeping), and the
operators taking the most time with their input shapes. It calls only the engine's public functions,
so that an older engine can be profiled too (`PYTHONPATH=<its checkout>`).
"""
import contextlib
import inspect
import time

import hydra
import torch
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile

from gap.data.tasks import TASKS
from gap.modules.loading import load_pretrained
from gap.scoring.evaluator import score_batch
from gap.scoring.generation import generate_from
from gap.scoring.loglikelihood import fits
from gap.scoring.prefill import prefill
from gap.train import check_config, make_evaldata, read_inputs, scoring_of

try:  # one evaluation's engine state, as GAPModule holds it over its batches
    from gap.scoring.linear import onednn_linears
except ImportError:  # an engine from before it
    def onednn_linears(model):
        return contextlib.nullcontext()

KINDS = {  # kind -> words in an operator's name
    "matrix products": ("addmm", "aten::mm", "bmm", "linear_pointwise", "mkldnn_linear", "aten::baddbmm"),
    "attention": ("attention",),
    "copies": ("copy_", "cat", "index", "clone", "pad", "contiguous", "fill_", "zero_", "empty", "scatter",
               "gather", "masked_fill", "where"),
    "element-wise": ("mul", "add", "sub", "div", "silu", "rsqrt", "pow", "mean", "neg", "exp", "log", "max",
                     "sum", "argmax", "cos", "sin", "float", "to", "eq", "ne", "lt", "ge", "bitwise", "and"),
}
TOP = 12


def kind_of(name: str) -> str:
    return next((kind for kind, words in KINDS.items() if any(w in name for w in words)), "other")


def profiled(run) -> tuple[float, list]:
    """Wall seconds of `run()` and its operators' averages by name and input shapes."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return seconds, prof.key_averages(group_by_input_shape=True)


def report(phase: str, seconds: float, events) -> None:
    """A phase's time by kind of operator, and its heaviest operators."""
    own = [e for e in events if e.self_cpu_time_total > 0]
    inside = sum(e.self_cpu_time_total for e in own) / 1e6
    kinds = {}
    for e in own:
        kinds[kind_of(e.key)] = kinds.get(kind_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
    print(f"\n### {phase}: {seconds:.2f} s wall, {inside:.2f} s inside operators, "
          f"{max(seconds - inside, 0):.2f} s outside them ({max(seconds - inside, 0) / seconds:.0%})\n")
    print("| kind | s | share of wall |\n|---|---|---|")
    for kind, s in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {s:.2f} | {s / seconds:.0%} |")
    print("\n| operator | input shapes | calls | self s | share of wall |\n|---|---|---|---|---|")
    for e in sorted(own, key=lambda e: -e.self_cpu_time_total)[:TOP]:
        shapes = str([s for s in e.input_shapes if s])[:90]
        print(f"| {e.key} | {shapes} | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | "
              f"{e.self_cpu_time_total / 1e6 / seconds:.0%} |")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    examples, _, _ = read_inputs(cfg)
    tokenizer, model = load_pretrained(cfg.model)
    model.eval()
    batches = make_evaldata(cfg, examples, tokenizer).item_batches()
    scoring = scoring_of(cfg)
    task = cfg.get("classify", "hellaswag")
    assert TASKS[task].scored, f"{task} is not a classification task"
    print(f"model {cfg.model.name}, {cfg.eval.limit} examples per task, {torch.get_num_threads()} threads")
    dialogue = cfg.get("converse", "blended_skill_talk")
    items = [it for b in batches[dialogue] for it in b]
    args = (model, [it.context for it in items], tokenizer.pad_token_id)
    targets = [it.continuations[0] if fits(it.context, it.continuations, scoring.max_length) else [] for it in items]
    kwargs = dict(targets=targets, max_tokens=scoring.max_batch_tokens)
    if "room" in inspect.signature(prefill).parameters:  # as `converse` calls it
        kwargs["room"] = scoring.max_new_tokens
    with torch.no_grad(), onednn_linears(model):
        # first passes and decoding steps (and each phase's packing) unprofiled
        score_batch(model, tokenizer, "copa", batches["copa"][0], scoring)
        generate_from(model, tokenizer, prefill(model, [items[0].context], tokenizer.pad_token_id), 2, [])
        report(f"scoring ({task})", *profiled(lambda: [score_batch(model, tokenizer, task, b, scoring)
                                                       for b in batches[task]]))
        report(f"prefill ({dialogue}, {len(items)} prompts with their targets)",
               *profiled(lambda: prefill(*args, **kwargs)))
        state = prefill(*args, **kwargs)
        report(f"decoding ({dialogue}, {len(items)} rows)", *profiled(
            lambda: generate_from(model, tokenizer, state, scoring.max_new_tokens, list(scoring.stops))))

if __name__ == "__main__":
    main()
