"""On-disk cache of the unchanged model's evaluation: every run of one model and evaluation setup shares it.

Keyed by the model entry (path, GGUF file, revision, dtype, max length), the tasks, prompt style, split,
limit, reply length, the trainer's precision and `ENGINE_VERSION`; batch sizes and context sharing are left
out because they do not change predictions. `eval.overwrite=true` recomputes.
"""
import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gap.results import write_atomic

ENGINE_VERSION = 3  # bump when a change to formatting or scoring changes any prediction


def baseline_key(cfg: DictConfig) -> dict:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("eval_batch_size", None)
    model.pop("arch", None)  # a description of the architecture, for the memory preflight
    return {"engine": ENGINE_VERSION, "model": model, "tasks": list(cfg.tasks.include),
            "prompt_style": cfg.eval.prompt_style, "split": cfg.eval.split, "limit": cfg.eval.limit,
            "max_new_tokens": cfg.eval.max_new_tokens, "precision": str(cfg.trainer.precision)}


def baseline_path(cfg: DictConfig) -> Path:
    digest = hashlib.sha256(json.dumps(baseline_key(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.paths.baseline_dir) / f"{cfg.model.name}-{digest}.json"


def load_baseline(cfg: DictConfig) -> dict | None:
    """The cached baseline evaluation for this setup, or None (also when `eval.overwrite`)."""
    path = baseline_path(cfg)
    if cfg.eval.overwrite or not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.get("key") != json.loads(json.dumps(baseline_key(cfg))):
        return None  # a hash collision or a hand-edited file: recompute
    return {**stored["evaluation"], "cached": str(path)}


def store_baseline(cfg: DictConfig, evaluation: dict) -> Path:
    path = baseline_path(cfg)
    write_atomic(path, json.dumps({"key": baseline_key(cfg), "evaluation": evaluation}) + "\n")
    return path
