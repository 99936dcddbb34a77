"""Files a run writes and reads back: atomic writes (a reader never sees half a file) and results
documents. No dependencies beyond the standard library, so data fetching and reports stay light."""
import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from a group's other users
    os.replace(tmp, path)


def read_results(path: Path) -> dict | None:
    """A `results.json` document, or None when it cannot be read (a job killed mid-write before atomic
    writes, a hand-edited file)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
