"""Shared fixtures: the data folder and the tiny in-process model (helpers: `tests/helpers.py`)."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, DATA_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "tasks").is_dir():
        pytest.fail(f"evaluation data not found at {DATA_DIR}; set GAP_DATA_DIR")
    return DATA_DIR


@pytest.fixture
def fresh_tiny_model(tiny):
    """A tiny-random model of its own, for tests that change the weights."""
    from gap.modules.loading import load_model

    return load_model(OmegaConf.load(CONF / "model" / "tiny-random.yaml"), tiny[1])


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny-random entry, loaded by the real loading code."""
    from gap.modules.loading import load_model, load_tokenizer

    cfg = OmegaConf.load(CONF / "model" / "tiny-random.yaml")
    tokenizer = load_tokenizer(cfg)
    return load_model(cfg, tokenizer).eval(), tokenizer


@pytest.fixture
def onednn(monkeypatch):
    """The engine's linear layers through oneDNN in every phase on any CPU whose PyTorch has it (by default
    only where MKL is slower: `gap.scoring.linear.onednn_pays`), so that the tests check that path on every
    machine."""
    import gap.scoring.linear as linear

    monkeypatch.setattr(linear, "onednn_pays", lambda: dict.fromkeys(linear.PHASE_ROWS, linear.onednn_available()))
