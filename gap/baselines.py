"""On-disk cache of the unchanged model's evaluation: every run of one model and evaluation setup shares it.

Keyed by the model entry (path, GGUF file, revision, dtype, max length), the tasks, prompt style, split,
limit, reply length, the trainer's precision, the accelerator it runs on, a digest of the examples
evaluated (an edited task file is another setup), the harness tasks' settings and version (`lm_eval`) and
`ENGINE_VERSION`; batch sizes and context sharing are
left out because they do not change predictions. `eval.overwrite=true` recomputes.

Every job of a grid reads this cache, so it heals rather than fails: an entry that cannot be read, is not a
whole evaluation of these examples, or was stored under another key, is set aside (`<name>.damaged-<time>`)
with a one-line warning and recomputed; a cache that cannot be written (a full disk) is warned about and the
run goes on.
"""
import dataclasses
import hashlib
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gap.files import set_aside, write_atomic
from gap.memory.plan import on_cuda

log = logging.getLogger("gap")

ENGINE_VERSION = 5  # bump when a change to formatting or scoring changes any prediction


def accelerator(trainer_cfg) -> str:
    """What the evaluation computes on: `cpu`, or the GPU's name (kernels differ between devices)."""
    if not on_cuda(trainer_cfg):
        return "cpu"
    import torch

    return f"cuda:{torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cuda"


def examples_digest(examples: dict[str, list]) -> str:
    """A digest of every example evaluated (task, row index and content)."""
    rows = {task: [dataclasses.asdict(e) for e in exs] for task, exs in examples.items()}
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def baseline_key(cfg: DictConfig, examples: dict[str, list]) -> dict:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("eval_batch_size", None)
    model.pop("arch", None)  # a description of the architecture, for the memory preflight
    key = {"engine": ENGINE_VERSION, "model": model, "tasks": list(cfg.tasks.include),
           "prompt_style": cfg.eval.prompt_style, "split": cfg.eval.split, "limit": cfg.eval.limit,
           "max_new_tokens": cfg.eval.max_new_tokens, "precision": str(cfg.trainer.precision),
           "accelerator": accelerator(cfg.trainer), "examples": examples_digest(examples)}
    if cfg.lm_eval.tasks:  # harness tasks: their settings and the harness's version (their documents are examples)
        harness = OmegaConf.to_container(cfg.lm_eval, resolve=True)
        harness.pop("select")  # what is selected on, not what is evaluated
        key["lm_eval"] = {**harness, "version": version("lm_eval")}
    return key


def baseline_path(cfg: DictConfig, examples: dict[str, list]) -> Path:
    return _path(cfg, baseline_key(cfg, examples))


def _path(cfg: DictConfig, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.paths.baseline_dir) / f"{cfg.model.name}-{digest}.json"


def whole_evaluation(evaluation, examples: dict[str, list]) -> bool:
    """Whether a stored evaluation is the unchanged model's on exactly these examples: numeric metrics, and
    each task's predictions for its examples, in order."""
    if not isinstance(evaluation, dict) or evaluation.get("epoch", 0) is not None:
        return False
    metrics, predictions = evaluation.get("metrics"), evaluation.get("predictions")
    if not (isinstance(metrics, dict) and metrics and all(isinstance(v, (int, float)) for v in metrics.values())):
        return False
    if not (isinstance(predictions, dict) and predictions.keys() == examples.keys()):
        return False
    return all(isinstance(records, list) and all(isinstance(r, dict) for r in records)
               and [r.get("index") for r in records] == [e.index for e in examples[task]]
               for task, records in predictions.items())


def load_baseline(cfg: DictConfig, examples: dict[str, list]) -> dict | None:
    """The cached baseline evaluation for this setup, or None (also when `eval.overwrite`, and when the entry
    is damaged: it is then set aside, see the module's note)."""
    key = baseline_key(cfg, examples)
    path = _path(cfg, key)
    if cfg.eval.overwrite or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        read = os.fstat(f.fileno())  # which copy was read, should another job replace it meanwhile
        try:
            stored = json.load(f)
        except (OSError, ValueError) as err:  # cut short, not UTF-8, not JSON
            return _damaged(path, read, f"cannot be read ({type(err).__name__}: {err})")
    if not isinstance(stored, dict) or stored.get("key") != json.loads(json.dumps(key)):
        return _damaged(path, read, "was stored under another key (a hash collision or a hand-edited file)")
    if not whole_evaluation(stored.get("evaluation"), examples):
        return _damaged(path, read, "is not a whole evaluation of these examples")
    return {**stored["evaluation"], "cached": str(path)}


def _damaged(path: Path, read: os.stat_result, why: str) -> None:
    aside = set_aside(path, read)
    log.warning("baseline cache %s %s: recomputing it%s", path, why,
                f" (the file is kept as {aside.name})" if aside else "")
    return None


def store_baseline(cfg: DictConfig, examples: dict[str, list], evaluation: dict) -> Path | None:
    """Write the evaluation into the cache; None when it cannot be written (warned: the run goes on)."""
    key = baseline_key(cfg, examples)
    path = _path(cfg, key)
    try:
        write_atomic(path, json.dumps({"key": key, "evaluation": evaluation}) + "\n")
    except OSError as err:
        log.warning("baseline cache %s not written (%s); the run goes on without it", path, err)
        return None
    return path
