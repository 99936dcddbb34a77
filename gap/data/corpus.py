"""The text the ascent step trains on: one (or a few) samples of a corpus file, batch size 1."""
import csv
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from gap.data.jsonl import read_jsonl
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
    if num_samples < 1:
        raise ConfigError(f"corpus.num_samples={num_samples} must be at least 1")
    if not 0 <= index or index + num_samples > len(texts):
        asked = f"corpus.index={index}" + (f" with corpus.num_samples={num_samples}" if num_samples > 1 else "")
        raise ConfigError(f"{asked} is out of range: corpus {name!r} has {len(texts)} samples, "
                          f"valid indices 0..{len(texts) - 1}")
    return texts[index:index + num_samples]


class CorpusDataModule(L.LightningDataModule):
    """The chosen corpus samples, tokenised with left truncation; labels are the input ids."""

    def __init__(self, texts: list[str], tokenizer, max_length: int, first_index: int = 0):
        super().__init__()
        self.items = []
        for number, text in enumerate(texts, start=first_index):
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) < 2:
                raise DataError(f"corpus sample {number} tokenizes to {len(ids)} token(s); "
                                f"the ascent step needs at least 2")
            input_ids = torch.tensor(ids)
            labels = input_ids.masked_fill(input_ids == tokenizer.pad_token_id, -100)
            self.items.append({"input_ids": input_ids, "labels": labels})

    def train_dataloader(self):
        return DataLoader(self.items, batch_size=1, shuffle=False)
