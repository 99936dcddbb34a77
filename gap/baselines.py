"""On-disk cache of the unchanged model's evaluation: every run of one model and evaluation setup shares it.

Keyed by the model entry (path, GGUF file, revision, dtype, max length), the tasks, prompt style, split,
limit, reply length, the trainer's precision, the accelerator it runs on, a digest of the examples
evaluated (an edited task file is another setup), the harness tasks' settings and version (`lm_eval`) and
`ENGINE_VERSION`; batch sizes and context sharing are
left out because they do not change predictions. `eval.overwrite=true` recomputes.
"""
import dataclasses
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gap.files import write_atomic
from gap.memory.plan import on_cuda

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


def load_baseline(cfg: DictConfig, examples: dict[str, list]) -> dict | None:
    """The cached baseline evaluation for this setup, or None (also when `eval.overwrite`)."""
    key = baseline_key(cfg, examples)
    path = _path(cfg, key)
    if cfg.eval.overwrite or not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.get("key") != json.loads(json.dumps(key)):
        return None  # a hash collision or a hand-edited file: recompute
    return {**stored["evaluation"], "cached": str(path)}


def store_baseline(cfg: DictConfig, examples: dict[str, list], evaluation: dict) -> Path:
    key = baseline_key(cfg, examples)
    path = _path(cfg, key)
    write_atomic(path, json.dumps({"key": key, "evaluation": evaluation}) + "\n")
    return path
