"""The null arm (`method=random_direction`) on the tiny model: each tensor's gradient becomes a random
direction of GAP's norm on the same step, reproducible across processes, uncorrelated with the gradient,
another for another seed (by default the run's seed and sample) or step; refused where gradients are sharded."""
import os
import subprocess
import sys

import lightning as L
import pytest
import torch

from gap.data.corpus import CorpusDataModule, read_corpus, select_samples
from gap.errors import ConfigError
from gap.modules.gap_module import GAPModule
from gap.modules.loading import cpu_state_dict
from gap.modules.objectives import random_direction
from gap.train import check_config, make_module
from tests.helpers import ROOT, compose_cfg


class Gradients(L.Callback):
    """Each step's gradients as the optimizer took them (still in `.grad` after the step)."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({n: p.grad.clone() for n, p in pl_module.model.named_parameters() if p.grad is not None})


@pytest.fixture(scope="module")
def corpus(tiny, data_dir):
    texts = select_samples(read_corpus(data_dir / "corpora" / "github.jsonl"), 3, 1, "github")
    return CorpusDataModule(texts, tiny[1], max_length=128)


@pytest.fixture(scope="module")
def start(tiny):
    return cpu_state_dict(tiny[0])


def gradients(fresh_tiny_model, tok, corpus, start, method, steps=1, seed="42/3") -> list[dict]:
    """The gradients of `steps` real optimizer steps of `method` from the weights `start`."""
    fresh_tiny_model.load_state_dict(start)
    module = GAPModule(fresh_tiny_model, tok, ["copa"], method, lr=1e-3, direction_seed=seed)
    seen = Gradients()
    trainer = L.Trainer(accelerator="cpu", max_epochs=steps, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0, callbacks=[seen])
    trainer.fit(module, train_dataloaders=corpus.train_dataloader())
    assert trainer.global_step == steps
    return seen.steps


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def assert_uncorrelated(a: dict, b: dict) -> None:
    """Per tensor of 1024 elements or more, the cosine times sqrt(elements) (about a standard normal for
    independent directions) is small, and so is its root mean square over the tensors."""
    z = [cosine(a[n], b[n]) * a[n].numel() ** 0.5 for n in a if a[n].numel() >= 1024]
    assert len(z) >= 10 and max(map(abs, z)) < 4.5 and (sum(x * x for x in z) / len(z)) ** 0.5 < 1.5, z


def test_each_tensor_gets_a_random_direction_of_gaps_norm(tiny, fresh_tiny_model, corpus, start):
    gap = gradients(fresh_tiny_model, tiny[1], corpus, start, "gap")[0]
    null = gradients(fresh_tiny_model, tiny[1], corpus, start, "random_direction")[0]
    assert set(null) == set(gap) and len(gap) > 10
    for name, g in gap.items():
        assert null[name].norm().item() == pytest.approx(g.norm().item(), rel=1e-5), name
        assert not torch.equal(null[name], g), name
    assert_uncorrelated(null, gap)


def test_the_direction_is_reproducible_and_another_for_another_seed_or_step(tiny, fresh_tiny_model, corpus, start):
    first = gradients(fresh_tiny_model, tiny[1], corpus, start, "random_direction", steps=2)
    again = gradients(fresh_tiny_model, tiny[1], corpus, start, "random_direction", steps=2)
    other = gradients(fresh_tiny_model, tiny[1], corpus, start, "random_direction", steps=1, seed="43/3")
    for step in (0, 1):
        assert all(torch.equal(first[step][n], again[step][n]) for n in first[step])
    assert_uncorrelated(first[0], other[0])
    assert_uncorrelated(first[0], first[1])


def test_the_direction_is_the_same_in_another_process():
    """sha256, not Python's per-process `hash`: a fresh interpreter (another hash seed) draws the same."""
    args = (torch.linspace(-1, 2, 300).reshape(20, 15), 7, 3, "model.layers.0.mlp.up_proj.weight")
    here = random_direction(*args)
    code = ("import torch; from gap.modules.objectives import random_direction; "
            "print(random_direction(torch.linspace(-1, 2, 300).reshape(20, 15), 7, 3, "
            "'model.layers.0.mlp.up_proj.weight').flatten().tolist())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    assert torch.tensor(eval(proc.stdout)).reshape(20, 15).equal(here)
    assert here.norm().item() == pytest.approx(args[0].norm().item(), rel=1e-6)
    assert not random_direction(*args[:3], "model.layers.1.mlp.up_proj.weight").equal(here)


def test_each_job_of_a_grid_over_seeds_corpora_or_samples_draws_its_own_directions(tiny):
    seeds = [make_module(compose_cfg("train", ["method=random_direction", "model=tiny-random", *overrides]),
                         *tiny, ["copa"]).direction_seed
             for overrides in ([], ["seed=7", "corpus.index=3"], ["corpus=pile_cc"])]
    assert seeds == ["42/github/0", "7/github/3", "42/pile_cc/0"]


@pytest.mark.parametrize("trainer", ["fsdp", "deepspeed"])
def test_sharded_gradients_are_refused(trainer):
    cfg = compose_cfg("train", ["method=random_direction", f"trainer={trainer}", "model=tiny-random"])
    with pytest.raises(ConfigError, match=f"method=random_direction is not supported yet with sharded gradients "
                                          f"\\({trainer}"):
        check_config(cfg)
