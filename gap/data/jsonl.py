"""JSONL reading with errors that name the file and line."""
import json
from pathlib import Path

from gap.errors import DataError


def iter_jsonl(path: Path):
    """(line number, row) for each object of a JSONL file; a malformed line raises `DataError` naming
    `file:line`. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: malformed JSON line ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (see `iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path)]
