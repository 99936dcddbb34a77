"""The text the ascent step trains on: one (or a few) samples of a corpus file, batch size 1."""
import csv
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from gap.data.encoding import cut_left, special_affixes
from gap.data.jsonl import read_jsonl
from gap.data.random_tokens import RandomTokens
from gap.errors import ConfigError, DataError


def read_corpus(path: Path, text_field: str = "text") -> list[str]:
    """Samples of a corpus file: JSONL or CSV (`text_field` of each row) or text (one sample per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix == ".txt":
        rows = [{text_field: line.rstrip("\n")} for line in open(path, encoding="utf-8") if line.strip()]
    else:
        raise DataError(f"corpus file {path} has suffix {path.suffix!r}; valid: .jsonl, .csv, .txt")
    for number, row in enumerate(rows):
        if not isinstance(row.get(text_field), str):
            raise DataError(f"{path}: sample {number} has no text field {text_field!r}")
    if not rows:
        raise DataError(f"corpus file {path} holds no samples")
    return [row[text_field] for row in rows]


def select_samples(texts: list[str], index: int, num_samples: int, name: str) -> list[str]:
    """Samples `index .. index+num_samples-1`, refusing indices the corpus does not have."""
    if not 0 <= index or index + num_samples > len(texts):
        asked = f"corpus.index={index}" + (f" with corpus.num_samples={num_samples}" if num_samples > 1 else "")
        raise ConfigError(f"{asked} is out of range: corpus {name!r} has {len(texts)} samples, "
                          f"valid indices 0..{len(texts) - 1}")
    return texts[index:index + num_samples]


def sample_ids(sample: str | RandomTokens, tokenizer) -> list[int]:
    """A sample's whole token ids, without special tokens: a text through the tokenizer, random ids as drawn."""
    if isinstance(sample, RandomTokens):
        return sample.token_ids(tokenizer)
    return tokenizer(sample, add_special_tokens=False, verbose=False)["input_ids"]  # verbose: no over-length warning


def legacy_labels(plain_ids: list[int], length: int) -> torch.Tensor:
    """The labels of the authors' code before 2023-07-22 (`method=gap_legacy`): the sample tokenised without
    special tokens, at the inputs' positions. Where the tokenizer puts a BOS before the inputs (OPT, Gemma),
    each position is then trained on the token two ahead, except in a sample cut to `max_length`, whose
    dropped first token realigns them; where it adds none (SmolLM2), these are the `gap` labels."""
    labels = torch.full((length,), -100)
    kept = plain_ids[:length]
    labels[:len(kept)] = torch.tensor(kept, dtype=labels.dtype)
    return labels


class CorpusDataModule(L.LightningDataModule):
    """The chosen corpus samples (texts or `RandomTokens`), one per batch: `setup` tokenises them with left
    truncation, and the labels are the input ids, every token of them (a batch of one has no padding, so a
    real EOS that doubles as the pad token is still learned from); with `legacy`, `legacy_labels`."""

    def __init__(self, texts: list, tokenizer, max_length: int, first_index: int = 0, legacy: bool = False):
        super().__init__()
        self.texts, self.tokenizer, self.max_length, self.first_index = texts, tokenizer, max_length, first_index
        self.legacy = legacy
        self.items: list[dict] = []

    def setup(self, stage: str | None = None) -> None:
        if self.items:
            return
        affixes = special_affixes(self.tokenizer)
        for number, text in enumerate(self.texts, start=self.first_index):
            plain = sample_ids(text, self.tokenizer)  # tokenised once: the inputs, and gap_legacy's labels
            ids = cut_left(plain, self.max_length, *affixes)
            if len(ids) < 2:
                raise DataError(f"corpus sample {number} tokenizes to {len(ids)} token(s); "
                                f"the ascent step needs at least 2")
            labels = (legacy_labels(cut_left(plain, self.max_length), len(ids))
                      if self.legacy else torch.tensor(ids))
            self.items.append({"input_ids": torch.tensor(ids), "labels": labels})

    def train_dataloader(self):
        self.setup()
        return DataLoader(self.items, batch_size=1, shuffle=False)
