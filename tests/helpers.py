"""What several test files share: paths, config composition, the embedded model's file, running the
command line in a subprocess, and writing task files."""
import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA_DIR = Path(os.environ.get("GAP_DATA_DIR", ROOT.parent / "shared" / "data"))


def compose_cfg(config_name: str = "train", overrides=()):
    """Compose a config as the CLI would (without running Hydra's job machinery)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def embedded_gguf() -> Path:
    """The embedded model's GGUF file, where `make model` puts it (`GAP_CACHE_DIR` honoured)."""
    model = compose_cfg("train").model
    return Path(model.path) / model.gguf_file


def load_entry(*overrides):
    """(model in eval mode, tokenizer) of a model entry, loaded by the real loading code."""
    from gap.modules.loading import load_model, load_tokenizer

    cfg = compose_cfg("train", overrides).model
    tokenizer = load_tokenizer(cfg)
    return load_model(cfg, tokenizer).eval(), tokenizer


def start(module, *overrides, tmp_path, env=None, baseline_dir=None) -> subprocess.Popen:
    """Start `python -m <module>` into `tmp_path`, with a baseline cache of its own unless one is given."""
    env = {**os.environ, "WANDB_MODE": "offline", "GAP_DATA_DIR": str(DATA_DIR), **(env or {})}
    baselines = baseline_dir or tmp_path / "baselines"
    return subprocess.Popen([sys.executable, "-m", module, f"hydra.run.dir={tmp_path}",
                             f"paths.baseline_dir={baselines}", *overrides],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout=600) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def gap(module, *overrides, tmp_path, env=None, timeout=600, baseline_dir=None) -> subprocess.CompletedProcess:
    """Run `python -m <module>` to the end (see `start`)."""
    return finish(start(module, *overrides, tmp_path=tmp_path, env=env, baseline_dir=baseline_dir), timeout)


def write_task(data_dir, task, rows, split="validation"):
    """Write rows (dicts, or raw strings written verbatim as one line) to <data_dir>/tasks/<task>/<split>.jsonl."""
    path = data_dir / "tasks" / task / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def arc_row(question, texts, answer, labels=None):
    labels = labels or list("ABCDE")[:len(texts)]
    return {"id": question, "question": question, "choices": {"text": texts, "label": labels}, "answerKey": answer}


def own_logprobs(model, context, continuation):
    """The model's own forward pass over one unpadded sequence."""
    import torch

    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([context + continuation])).logits[0].float().log_softmax(-1)
    return [logprobs[len(context) + i - 1, token].item() for i, token in enumerate(continuation)]


def own_reply(model, tokenizer, context, max_new_tokens):
    """The model's own greedy `generate` from one unpadded prompt, decoded."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([context]), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, len(context):], skip_special_tokens=True)


def largest_difference(got, want):
    assert [len(g) for g in got] == [len(w) for w in want]
    return max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w))
