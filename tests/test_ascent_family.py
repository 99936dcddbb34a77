"""The ascent family on the tiny model: the sample's left truncation, gap_legacy's shifted labels, NPO
against a hand computation, random-token samples, LoRA-restricted ascent, and `step_taken` under a real
fp16 loss scaler."""
import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins import MixedPrecision
from tokenizers import processors
from transformers import LlamaForCausalLM

from gap.data.corpus import CorpusDataModule
from gap.data.encoding import encode
from gap.data.random_tokens import RandomTokens, random_token_samples
from gap.modules.gap_module import GAPModule
from gap.modules.loading import cpu_state_dict
from gap.modules.lora import lora_adapter
from gap.modules.objectives import objective, sequence_logprob
from gap.random_init import byte_tokenizer
from gap.results import run_results
from gap.scoring.loglikelihood import choice_logprobs
from tests.helpers import compose_cfg

TEXT = "def ascend(model):\n    return -loss  # a sample to climb on"


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The tiny model's byte tokenizer, putting a BOS (its end-of-text token) before every text, as OPT's does."""
    tok = byte_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", tok.eos_token_id)])
    tok.pad_token, tok.truncation_side = tok.eos_token, "right"  # the corpus must cut from the left itself
    return tok


def corpus_of(samples, tok, max_length, legacy=False) -> CorpusDataModule:
    corpus = CorpusDataModule(samples, tok, max_length, legacy=legacy)
    corpus.setup("fit")
    return corpus


def trainer(max_epochs=1, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0, **kwargs)


def batch_of(item: dict) -> dict:
    return {k: v.unsqueeze(0) for k, v in item.items()}


def model_nll(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss


def hand_logprobs(model, input_ids, targets, positions) -> torch.Tensor:
    """log p(targets[i] | input_ids[:positions[i] + 1]), from the model's logits."""
    logits = model(input_ids=input_ids.unsqueeze(0)).logits[0].float()
    return F.log_softmax(logits, -1)[positions, targets]


# ---- left truncation ----------------------------------------------------------------------------
@pytest.mark.parametrize("bos", [True, False], ids=["bos", "no-bos"])
def test_encode_cuts_as_the_tokenizers_own_left_truncation_and_leaves_its_side_alone(tiny, bos_tokenizer, bos):
    tok = bos_tokenizer if bos else copy.deepcopy(tiny[1])
    tok.truncation_side = "right"
    left = copy.deepcopy(tok)
    left.truncation_side = "left"
    for text in (TEXT, TEXT * 4):
        for special in (True, False):
            got = encode(tok, text, 32, special)
            assert got == left(text, truncation=True, max_length=32, add_special_tokens=special)["input_ids"]
            assert len(got) == min(32, len(tok(text, add_special_tokens=special)["input_ids"]))
            assert (got[0] == tok.eos_token_id) == (bos and special)  # a BOS stays in front of a cut text
    assert tok.truncation_side == "right"


# ---- gap_legacy ---------------------------------------------------------------------------------
def test_legacy_labels_train_each_position_on_the_token_two_ahead_with_a_bos_tokenizer(tiny, bos_tokenizer):
    model, tok = tiny[0], bos_tokenizer
    item = corpus_of([TEXT], tok, max_length=128, legacy=True).items[0]
    plain = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert item["input_ids"].tolist() == [tok.eos_token_id, *plain]
    # inputs [BOS, t1 .. tn]: position j (BOS, t1, ..) is trained on t(j+2); the last two positions on nothing
    n = len(plain)
    hand = -hand_logprobs(model, item["input_ids"], torch.tensor(plain[1:]), torch.arange(n - 1)).mean()
    with torch.no_grad():
        legacy = model_nll(model, batch_of(item))
        fixed = model_nll(model, batch_of(corpus_of([TEXT], tok, max_length=128).items[0]))
    assert legacy.item() == pytest.approx(hand.item(), rel=1e-5)
    assert abs(legacy.item() - fixed.item()) > 1e-3  # the shift changes the objective


def test_legacy_labels_realign_in_a_sample_cut_to_max_length(bos_tokenizer):
    """As in the authors' code: labels cut to the last max_length tokens keep one token more at the front than
    the inputs (BOS + max_length - 1), which puts them back in step."""
    tok = bos_tokenizer
    item = corpus_of([TEXT * 4], tok, max_length=32, legacy=True).items[0]
    assert len(item["input_ids"]) == 32 and item["input_ids"][0] == tok.eos_token_id
    assert item["labels"][1:].tolist() == item["input_ids"][1:].tolist()


def test_legacy_equals_gap_without_a_bos(tiny):
    tok = tiny[1]
    legacy = corpus_of([TEXT], tok, max_length=128, legacy=True).items[0]
    fixed = corpus_of([TEXT], tok, max_length=128).items[0]
    assert legacy["input_ids"].tolist() == fixed["input_ids"].tolist()
    assert legacy["labels"].tolist() == fixed["labels"].tolist()


# ---- NPO ----------------------------------------------------------------------------------------
def hand_npo(model, item, reference, beta):
    """(loss, log pi(y)) by hand: every token after the first scored from the logits."""
    ids = item["input_ids"]
    logprob = hand_logprobs(model, ids, ids[1:], torch.arange(len(ids) - 1)).sum()
    return 2 / beta * torch.log1p(torch.exp(beta * (logprob - reference))), logprob


def gradient(loss, tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, tensor)[0]


def test_npo_loss_and_gradient_match_a_hand_computation(tiny, fresh_tiny_model):
    model, tok = fresh_tiny_model, tiny[1]
    item = corpus_of([TEXT], tok, max_length=128).items[0]
    weight = model.model.layers[0].mlp.down_proj.weight
    reference = hand_npo(model, item, 0.0, 0.1)[1].detach() + 3.0  # the sample is 3 nats less likely than under it
    loss = objective("npo", model_nll(model, batch_of(item)), batch_of(item)["labels"], reference, beta=0.1)
    hand, logprob = hand_npo(model, item, reference, 0.1)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert loss.item() == pytest.approx(20 * torch.log1p(torch.exp(torch.tensor(-0.3))).item(), rel=1e-4)
    # d loss = 2 sigmoid(beta (log pi - log pi_ref)) d log pi
    expected = 2 * torch.sigmoid(torch.tensor(-0.3)) * gradient(logprob, weight)
    torch.testing.assert_close(gradient(loss, weight), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_npo_tends_to_the_ascent_direction_as_beta_goes_to_zero(tiny, fresh_tiny_model):
    model, tok = fresh_tiny_model, tiny[1]
    batch = batch_of(corpus_of([TEXT], tok, max_length=128).items[0])
    weight = model.model.layers[1].self_attn.q_proj.weight
    nll = model_nll(model, batch)
    reference = sequence_logprob(nll, batch["labels"]).detach() + 5.0
    npo = gradient(objective("npo", model_nll(model, batch), batch["labels"], reference, beta=1e-6), weight)
    ascent = gradient(objective("gap", model_nll(model, batch), batch["labels"]), weight)
    tokens = len(batch["input_ids"][0]) - 1  # npo's ascent is on the summed NLL, gap's on the mean
    torch.testing.assert_close(npo, tokens * ascent, rtol=1e-3, atol=1e-5 * npo.abs().max().item())


def test_npo_takes_the_unchanged_model_as_reference(tiny, fresh_tiny_model):
    model, tok = fresh_tiny_model, tiny[1]
    corpus = corpus_of([TEXT, TEXT[::-1]], tok, max_length=128)
    with torch.no_grad():
        before = [sequence_logprob(model_nll(model, batch_of(it)), batch_of(it)["labels"]) for it in corpus.items]
    module = GAPModule(model, tok, ["copa"], "npo", lr=1e-3, beta=0.1)
    trainer(max_epochs=3).fit(module, train_dataloaders=corpus.train_dataloader())
    assert [r.item() for r in module.references] == pytest.approx([b.item() for b in before], rel=1e-6)
    with torch.no_grad():
        after = [sequence_logprob(model_nll(model, batch_of(it)), batch_of(it)["labels"]) for it in corpus.items]
    assert all(a < b - 1.0 for a, b in zip(after, before)), (before, after)  # both samples became less likely


# ---- random tokens ------------------------------------------------------------------------------
def test_random_token_samples_are_reproducible_per_index(tiny):
    tok = tiny[1]
    first, again = random_token_samples(3, 2, 50), random_token_samples(3, 2, 50)
    assert [s.index for s in first] == [3, 4]
    ids = [s.token_ids(tok) for s in first]
    assert ids == [s.token_ids(tok) for s in again]
    assert ids[0] != ids[1] and all(len(i) == 50 for i in ids)
    every = RandomTokens(0, 20000).token_ids(tok)
    assert set(every) == set(range(len(tok))) - set(tok.all_special_ids)  # the whole vocabulary, no special token


def test_random_tokens_enter_the_model_as_a_text_would(bos_tokenizer):
    tok, sample = bos_tokenizer, RandomTokens(7, 40)
    ids = sample.token_ids(tok)
    assert corpus_of([sample], tok, 128).items[0]["input_ids"].tolist() == [tok.eos_token_id, *ids]
    cut = corpus_of([sample], tok, 16).items[0]["input_ids"].tolist()
    assert cut == [tok.eos_token_id, *ids[-15:]]  # cut on the left, as text is
    item = corpus_of([sample], tok, 128, legacy=True).items[0]
    assert item["labels"][:40].tolist() == ids


def test_random_tokens_is_a_corpus_entry(data_dir):
    from gap.train import read_inputs

    cfg = compose_cfg("train", ["corpus=random_tokens", "corpus.index=5", "tasks.include=[copa]", "eval.limit=1"])
    assert cfg.corpus.length == 198
    assert read_inputs(cfg)[2] == [RandomTokens(5, 198)]


# ---- LoRA ---------------------------------------------------------------------------------------
def scores(model, tok) -> list[float]:
    requests = [(tok.encode("The cat sat on the"), [tok.encode(" mat"), tok.encode(" moon")]),
                (tok.encode("Water boils at"), [tok.encode(" 100 degrees"), tok.encode(" noon")])]
    with torch.no_grad():
        return [sum(s) for r in choice_logprobs(model, requests, tok.pad_token_id, 512) for s in r]


def test_lora_trains_only_the_adapter_and_the_merged_checkpoint_reloads(tiny, fresh_tiny_model, tmp_path):
    model, tok = fresh_tiny_model, tiny[1]
    original, scores_before = cpu_state_dict(model), scores(model, tok)
    corpus = corpus_of([TEXT], tok, max_length=128)
    cfg = compose_cfg("train", ["method.lora.enabled=true"]).method.lora
    module = GAPModule(model, tok, ["copa"], "gap", lr=1e-2)
    with lora_adapter(model, cfg):
        trainer(max_epochs=3).fit(module, train_dataloaders=corpus.train_dataloader())
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trained and all("lora_" in n for n in trained)
        state = model.state_dict()
        for name, value in original.items():  # the model's own weights, now the adapted layers' base_layer
            key = name if name in state else name.replace(".weight", ".base_layer.weight")
            assert torch.equal(state[key], value), name
        assert any(not torch.equal(v, torch.zeros_like(v)) for n, v in state.items() if "lora_B" in n)
    # merged: a plain model again, every weight trainable, the update low-rank in the targeted layers only
    merged = cpu_state_dict(model)
    assert merged.keys() == original.keys() and all(p.requires_grad for p in model.parameters())
    changed = {n for n in original if not torch.equal(merged[n], original[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)
    delta = merged["model.layers.0.self_attn.q_proj.weight"] - original["model.layers.0.self_attn.q_proj.weight"]
    assert torch.linalg.matrix_rank(delta) <= cfg.r
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path, use_kernels=False).eval()
    model.eval()
    assert scores(reloaded, tok) == pytest.approx(scores(model, tok), abs=1e-5)
    assert scores(model, tok) != pytest.approx(scores_before, abs=1e-4)


# ---- step_taken ---------------------------------------------------------------------------------
@pytest.mark.parametrize("init_scale, taken", [(2.0 ** 60, False), (1.0, True)])
def test_step_taken_records_a_step_the_fp16_loss_scaler_skipped(tiny, fresh_tiny_model, init_scale, taken):
    """A real GradScaler (on the CPU, as Lightning's fp16 plugin uses it on a GPU): a scale so large that the
    fp16 gradients overflow makes it skip the step, as the authors' first fp16 steps were skipped."""
    model, tok = fresh_tiny_model, tiny[1]
    before = cpu_state_dict(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    module = GAPModule(model, tok, ["copa"], "gap", lr=1e-3)
    fit = trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    fit.fit(module, train_dataloaders=corpus_of([TEXT], tok, max_length=64).train_dataloader())
    assert module.last_step_taken is taken
    assert fit.callback_metrics["train/step_taken"].item() == float(taken)
    unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert unchanged is not taken
    assert (scaler.get_scale() < init_scale) is not taken


def test_each_history_entry_records_its_step_taken():
    evaluations = [{"epoch": None, "step": 0, "train_nll": None, "metrics": {}, "seconds": {}},
                   {"epoch": 0, "step": 1, "train_nll": 3.0, "step_taken": False, "metrics": {}, "seconds": {}},
                   {"epoch": 1, "step": 2, "train_nll": 3.5, "step_taken": True, "metrics": {}, "seconds": {}}]
    assert [h["step_taken"] for h in run_results("ok", {}, evaluations)["history"]] == [False, True]
