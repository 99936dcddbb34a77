"""fp32 linear layers through oneDNN during evaluation (`gap.scoring.linear`): the same logits as PyTorch's
default (the gated MLP's activation and product fused into its products), weights packed anew in each
block (the weights may change between evaluations), autograd untouched. `tests/test_families.py` checks
every family's scores and replies through it."""
import json

import pytest
import torch

import gap.scoring.linear as linear
from gap.scoring.generation import generate_from
from gap.scoring.prefill import prefill

pytestmark = pytest.mark.skipif(not linear.onednn_available(), reason="this PyTorch has no oneDNN linear operator")


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_linears_give_the_default_logits_and_each_block_packs_the_weights_anew(fresh_tiny_model, onednn):
    model = fresh_tiny_model.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    want = logits(model, ids)
    with linear.onednn_linears(model), torch.profiler.profile() as profile:
        with linear.onednn_linears(model):  # nested: nothing more
            got = logits(model, ids)
    calls = {e.key: e.count for e in profile.key_averages()}
    assert calls.get("mkldnn::_linear_pointwise") == len(layers) and "aten::linear" not in calls
    assert "aten::silu" not in calls  # the MLP's activation fused into its gate product
    assert all("forward" not in vars(m) for m in layers)  # restored
    assert (got - want).abs().max() < 1e-5
    for p in model.parameters():  # as a merged LoRA adapter does: in place, and unseen by autograd's version
        p.data += 0.05 * torch.randn_like(p)
    changed = logits(model, ids)
    assert (changed - want).abs().max() > 1e-2
    with linear.onednn_linears(model):
        assert (logits(model, ids) - changed).abs().max() < 1e-5


def test_gradients_and_autocast_keep_the_default_linear(fresh_tiny_model, onednn):
    model = fresh_tiny_model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with linear.onednn_linears(model):
        model(input_ids=ids, labels=ids).loss.backward()
        with torch.autocast("cpu", torch.bfloat16):
            assert model(input_ids=ids).logits.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_faster_library_is_measured_once_per_cpu_kind_and_kept(tmp_path, monkeypatch):
    """`onednn_pays` measures once per phase which library computes fp32 products faster here (a scoring
    pass's hundreds of rows, a decoding step's few) and keeps the verdicts per CPU kind, thread count and
    PyTorch version beside other machines', so that every later run on this machine computes alike; a
    damaged record is measured again, an unwritable one leaves the verdicts to the process."""
    monkeypatch.setenv("GAP_CACHE_DIR", str(tmp_path))
    record = tmp_path / linear.CPU_VERDICTS
    other = {"GenuineIntel 6 143 another CPU, 2 threads, torch 2.13.0": {"scoring": True, "decoding": True}}
    record.write_text(json.dumps(other))
    linear.onednn_pays.cache_clear()
    torch.manual_seed(0)
    with torch.autocast("cpu", torch.bfloat16):  # measured in fp32 all the same
        verdict = linear.onednn_pays()
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # the run's random numbers as they were
    verdicts = json.loads(record.read_text())
    (key,) = set(verdicts) - set(other)
    assert verdicts == other | {key: verdict}
    assert f"{torch.get_num_threads()} threads" in key and torch.__version__ in key
    assert verdict.keys() == {"scoring", "decoding"} and all(type(v) is bool for v in verdict.values())
    flipped = {phase: not v for phase, v in verdict.items()}
    record.write_text(json.dumps({key: flipped}))  # kept, not measured again: the next process reads it
    linear.onednn_pays.cache_clear()
    assert linear.onednn_pays() == flipped

    def measured_again():
        linear.onednn_pays.cache_clear()
        got = linear.onednn_pays()
        return got.keys() == verdict.keys() and json.loads(record.read_text())[key] == got

    # damaged, or an earlier version's one verdict for both phases, or a phase missing
    for damage in ("{not json", "[1, 2]", json.dumps({key: "yes"}), json.dumps({key: True}),
                   json.dumps({key: {"scoring": True}}), json.dumps({key: {"scoring": 1, "decoding": 0}})):
        record.write_text(damage)
        assert measured_again()
    monkeypatch.setenv("GAP_CACHE_DIR", str(record))  # a file where the folder should be: nothing written
    linear.onednn_pays.cache_clear()
    kept = record.read_text()
    assert linear.onednn_pays().keys() == verdict.keys() and record.read_text() == kept
    linear.onednn_pays.cache_clear()


def test_a_model_without_fp32_cpu_linears_never_measures_the_cpu(fresh_tiny_model, tmp_path, monkeypatch):
    """A bf16 model (or one on a GPU) computes nothing through oneDNN, so its evaluation spends no time
    measuring which library is faster."""
    monkeypatch.setenv("GAP_CACHE_DIR", str(tmp_path))
    model = fresh_tiny_model.to(torch.bfloat16)
    linear.onednn_pays.cache_clear()
    with linear.onednn_linears(model):
        logits(model, torch.tensor([[1, 2, 3]]))
    assert linear.onednn_pays.cache_info().misses == 0
    with linear.onednn_linears(model.float()):
        pass
    assert linear.onednn_pays.cache_info().misses == 1 and (tmp_path / linear.CPU_VERDICTS).exists()
    linear.onednn_pays.cache_clear()


def test_scoring_passes_and_decoding_steps_compute_each_with_their_phases_library(tiny, monkeypatch):
    """Where MKL computes the scoring passes' products faster and oneDNN the decoding steps' (a Zen 3 EPYC),
    a prefill keeps PyTorch's default, bit for bit, and every decoding step computes in oneDNN, also after
    an earlier generation in the same block, which computes in its own phase again after each; the replies
    are those of the default throughout."""
    model, tokenizer = tiny
    prompts, steps = [[5, 6, 7, 8, 9], [10, 11, 12]], 4

    def run():
        state = prefill(model, prompts, tokenizer.pad_token_id)
        return state.last_logits, generate_from(model, tokenizer, state, steps, [], eos_ids=[])

    monkeypatch.setattr(linear, "onednn_pays", lambda: {"scoring": False, "decoding": False})
    want_logits, want_replies = run()
    monkeypatch.setattr(linear, "onednn_pays", lambda: {"scoring": False, "decoding": True})
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with linear.onednn_linears(model):
        for _ in range(2):
            with torch.profiler.profile() as scoring:
                state = prefill(model, prompts, tokenizer.pad_token_id)
            with torch.profiler.profile() as decoding:
                replies = generate_from(model, tokenizer, state, steps, [], eos_ids=[])
            assert "mkldnn::_linear_pointwise" not in {e.key for e in scoring.key_averages()}
            assert torch.equal(state.last_logits, want_logits)
            calls = {e.key: e.count for e in decoding.key_averages()}
            assert calls.get("mkldnn::_linear_pointwise") == (steps - 1) * len(layers) and "aten::linear" not in calls
            assert replies == want_replies
            with torch.profiler.profile() as after, torch.no_grad():  # the block's own phase again
                model(input_ids=torch.tensor(prompts[:1]))
            assert "mkldnn::_linear_pointwise" not in {e.key for e in after.key_averages()}
