"""A hand-written Markdown document whose tables and figures the report writes (`document=PATH`): the text
between its two markers is replaced by the report's Markdown (headings one level down) and its figures, so
the prose around them stays as written and running the report again gives the same document."""
import os
from pathlib import Path

from gap.errors import ConfigError
from gap.files import write_atomic

BEGIN, END = "<!-- gap.report:begin -->", "<!-- gap.report:end -->"


def check_document(path) -> Path:
    """The document, refused (before any work) unless it holds each marker once, in order."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text is None or text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"document={path} is not valid: expected a Markdown file holding the lines {BEGIN} and "
                          f"{END} (in that order), between which the report writes its tables")
    return path


def update_document(path, report_markdown: str, figures: list[Path]) -> None:
    """Put the report's Markdown and links to `figures` (relative to the document) between the markers."""
    path = check_document(path)
    text = path.read_text(encoding="utf-8")
    lines = ["#" + line if line.startswith("#") else line for line in report_markdown.rstrip("\n").split("\n")]
    lines += ["", *(f"![{f.stem}]({Path(os.path.relpath(f, path.parent)).as_posix()})" for f in figures)]
    head, rest = text.split(BEGIN)
    tail = rest.split(END)[1]
    write_atomic(path, head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail)
