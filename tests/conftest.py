"""Shared fixtures: the data folder, the tiny in-process model, and Hydra config composition."""
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA_DIR = Path(os.environ.get("GAP_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "tasks").is_dir():
        pytest.fail(f"evaluation data not found at {DATA_DIR}; set GAP_DATA_DIR")
    return DATA_DIR


def compose_cfg(config_name: str = "train", overrides=()):
    """Compose a config as the CLI would (without running Hydra's job machinery)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def embedded_gguf() -> Path:
    """The embedded model's GGUF file, where `make model` puts it (`GAP_CACHE_DIR` honoured)."""
    model = compose_cfg("train").model
    return Path(model.path) / model.gguf_file


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
