"""Reading text and JSONL files with errors that name the file and line: a file that is not UTF-8, a line
that is not JSON, a last line cut short. What decodes is never refused for its content (any Unicode, NUL and
other control characters, very long lines); a UTF-8 byte-order mark is dropped."""
import json
from pathlib import Path

from gap.errors import DataError

_BOMS = {b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}
_DECODER = json.JSONDecoder(strict=False)  # control characters inside strings are content, not damage


def read_text(path: Path, what: str = "data file") -> str:
    """The text of a UTF-8 file; a file that is missing or not UTF-8 raises `DataError` naming `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        found = next((f"it starts with a {name} byte-order mark" for bom, name in _BOMS.items() if raw.startswith(bom)),
                     f"byte 0x{raw[err.start]:02x} at column {column}")
        raise DataError(f"{path}:{line}: not UTF-8 text ({found}); save the file as UTF-8 "
                        f"(e.g. `iconv -f LATIN1 -t UTF-8`)") from None


def iter_jsonl(path: Path):
    """(line number, row) for each object of a JSONL file; a malformed line raises `DataError` naming
    `file:line`, and so does a last line cut short (no newline and not whole JSON: an interrupted copy or
    download), before any row is given. Blank lines are skipped."""
    path = Path(path)
    lines = read_text(path).split("\n")
    if lines[-1].strip():
        _row(path, len(lines), lines[-1], "the last line is cut short (an interrupted copy or download?)")
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, _row(path, number, line)


def _row(path: Path, number: int, line: str, damage: str = "malformed JSON line") -> dict:
    try:
        row = _DECODER.decode(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{number}: {damage} ({err.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (see `iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path)]
