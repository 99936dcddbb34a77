"""The ascent step: real optimizer steps through Lightning raise the sample's NLL; mle lowers it."""
import lightning as L
import pytest
import torch

from gap.data.corpus import CorpusDataModule, read_corpus, select_samples
from gap.modules.gap_module import GAPModule


def sample_nll(model, batch) -> float:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()


@pytest.mark.parametrize("method, direction", [("gap", 1), ("mle", -1)])
def test_steps_move_the_sample_loss(tiny, fresh_tiny_model, data_dir, method, direction):
    tok, model = tiny[1], fresh_tiny_model
    texts = select_samples(read_corpus(data_dir / "corpora" / "github.jsonl"), 3, 1, "github")
    corpus = CorpusDataModule(texts, tok, max_length=128)
    batch = next(iter(corpus.train_dataloader()))
    before = sample_nll(model, batch)
    module = GAPModule(model, tok, ["copa"], method, lr=1e-3)
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=corpus.train_dataloader())
    after = sample_nll(model, batch)
    assert trainer.global_step == 3
    assert direction * (after - before) > 0.05, (before, after)
    # train_nll is the loss of the last step, measured before its update
    assert module.last_train_nll != pytest.approx(after)


def test_ascent_uses_the_authors_optimizer(tiny):
    model, tok = tiny
    opt = GAPModule(model, tok, ["copa"], "gap", lr=5e-5).configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["lr"] == 5e-5 and group["betas"] == (0.9, 0.98) and group["weight_decay"] == 0


def test_dropout_is_disabled(tiny):
    model, _ = tiny
    assert all(v == 0.0 for k, v in model.config.to_dict().items() if "dropout" in k and isinstance(v, float))


def corpus_item(texts, tok, max_length):
    corpus = CorpusDataModule(texts, tok, max_length=max_length)
    corpus.setup("fit")
    return corpus.items[0]


def test_labels_are_every_input_id_even_an_eos_that_pads(tiny):
    """The tokenizer pads with EOS; a real EOS inside the sample is still a label (a batch of one has no
    padding to mask)."""
    _, tok = tiny
    assert tok.pad_token_id == tok.eos_token_id
    item = corpus_item(["abc" + tok.eos_token + "de"], tok, 64)
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    assert labels == ids and tok.eos_token_id in labels


def test_long_samples_keep_their_end(tiny):
    _, tok = tiny
    tok.truncation_side = "right"  # whatever the tokenizer's own default, the corpus keeps the end
    item = corpus_item(["x" * 50 + "END"], tok, 10)
    assert tok.decode(item["input_ids"]).endswith("END") and len(item["input_ids"]) == 10


def test_a_non_finite_loss_stops_training_without_an_update(tiny, fresh_tiny_model):
    tok, model = tiny[1], fresh_tiny_model
    with torch.no_grad():
        model.get_input_embeddings().weight[:] = float("nan")
    corpus = CorpusDataModule(["some text to ascend on"], tok, max_length=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = GAPModule(model, tok, ["copa"], "gap", lr=1e-3)
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=corpus.train_dataloader())
    assert module.diverged and trainer.current_epoch < 2
    after = model.state_dict()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)
