"""The text the ascent step trains on: one (or a few) samples of a corpus file, batch size 1."""
import csv
import io
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from gap.data.encoding import cut_left, special_affixes
from gap.data.jsonl import iter_jsonl, read_text
from gap.data.random_tokens import RandomTokens
from gap.errors import ConfigError, DataError


def _jsonl_rows(path: Path, text_field: str):
    return iter_jsonl(path)


def _csv_rows(path: Path, text_field: str):
    """(line, row) of a CSV file with a header; a quote left open (a file cut short) or another malformed row
    raises `DataError` naming the line. A field as long as the file is allowed (the csv module's default
    limit is 128 kB)."""
    text = read_text(path, "corpus file")
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader, start = csv.DictReader(io.StringIO(text, newline=""), strict=True), 1
    try:
        if reader.fieldnames is not None and text_field not in reader.fieldnames:
            raise DataError(f"{path}:1: no column {text_field!r} (columns: {', '.join(reader.fieldnames)}); "
                            f"corpus.text_field names the text's column")
        while (row := next(reader, None)) is not None:
            yield start + 1, row  # the line the row starts on (a quoted field may span lines)
            start = reader.line_num
    except csv.Error as err:
        raise DataError(f"{path}:{start + 1}: malformed CSV ({err})") from None


def _text_rows(path: Path, text_field: str):
    for number, line in enumerate(read_text(path, "corpus file").split("\n"), start=1):
        if line.strip():
            yield number, {text_field: line.rstrip("\r")}


READERS = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".txt": _text_rows}


def read_corpus(path: Path, text_field: str = "text") -> list[str]:
    """Samples of a corpus file: JSONL or CSV (`text_field` of each row) or text (one sample per line). Checked
    as read: a file that is not UTF-8, a malformed or cut line, a row without the text, or a file with no
    sample raise `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    if path.suffix not in READERS:
        raise DataError(f"corpus file {path} has suffix {path.suffix!r}; valid: {', '.join(READERS)}")
    texts = []
    for line, row in READERS[path.suffix](path, text_field):
        if not isinstance(row.get(text_field), str):
            raise DataError(f"{path}:{line}: no text in field {text_field!r} (corpus.text_field names it)")
        texts.append(row[text_field])
    if not any(text.strip() for text in texts):
        raise DataError(f"corpus file {path} holds no samples" + (" (every text is blank)" if texts else ""))
    return texts


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
